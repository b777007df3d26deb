// Command orders runs the shop's orders service as its own process:
//
//	go run ./examples/shop/orders --db orders.db   # on herald dev's nats://127.0.0.1:4333
//	go run ./examples/shop/orders --server nats://127.0.0.1:PORT --db orders.db
//	go run ./examples/shop/orders -h   # its flags
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("orders") }
