// Package interop holds tests that run herald against the official
// CloudEvents Go SDK (github.com/cloudevents/sdk-go/v2) and its NATS
// JetStream binding: events a CloudEvents producer sends reach herald's
// handlers, or a dead letter that names what was wrong, and herald's
// events read back in the SDK with every attribute. It is a module of its
// own so that the herald library does not depend on the SDK; the wire
// format it checks is described in docs/other-languages.md.
package interop
