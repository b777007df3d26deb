// Package e2e holds the shop's end-to-end test: the four services as
// separate processes on an external nats-server, each with its own database,
// mailing through a real SMTP server, under load and a SIGKILL of shipping.
package e2e
