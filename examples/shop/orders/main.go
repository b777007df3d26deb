// Command orders runs the shop's orders service as its own process:
//
//	go run ./examples/shop/orders --nats nats://127.0.0.1:PORT --db orders.db
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("orders") }
