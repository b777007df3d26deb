// Command shipping runs the shop's shipping service as its own process:
//
//	go run ./examples/shop/shipping --db shipping.db   # on herald dev's nats://127.0.0.1:4333
//	go run ./examples/shop/shipping --server nats://127.0.0.1:PORT --db shipping.db
//	go run ./examples/shop/shipping -h   # its flags
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("shipping") }
