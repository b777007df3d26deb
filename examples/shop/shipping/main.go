// Command shipping runs the shop's shipping service as its own process:
//
//	go run ./examples/shop/shipping --nats nats://127.0.0.1:PORT --db shipping.db
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("shipping") }
