// Command reviews runs the shop's reviews service as its own process:
//
//	go run ./examples/shop/reviews --db reviews.db   # on herald dev's nats://127.0.0.1:4333
//	go run ./examples/shop/reviews --server nats://127.0.0.1:PORT --db reviews.db
//	go run ./examples/shop/reviews -h   # its flags
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("reviews") }
