// Command reviews runs the shop's reviews service as its own process:
//
//	go run ./examples/shop/reviews --nats nats://127.0.0.1:PORT --db reviews.db
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("reviews") }
