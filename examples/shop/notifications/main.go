// Command notifications runs the shop's notification service as its own
// process; --smtp sends real e-mail, otherwise a development mailbox keeps
// the messages at http://LISTEN/mailbox/:
//
//	go run ./examples/shop/notifications --db notifications.db --smtp 127.0.0.1:2525
package main

import "github.com/heraldhq/herald/examples/shop/shop"

func main() { shop.Main("notifications") }
