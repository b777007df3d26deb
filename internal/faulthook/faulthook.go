// Package faulthook lets heraldtest's guarantee checker inject into a
// service's subscription consumers the faults production has — a handler's
// work undone by a failure after it ran, a transaction that never commits
// because its process died — without herald exporting an option for it.
//
// Package herald sets With once, in its init, before any service exists;
// nothing changes it afterwards. It returns a herald.Option, which this
// package cannot name: herald imports it.
package faulthook

import (
	"context"

	"github.com/heraldhq/herald/envelope"
)

// Faults is what a checker injects into one service's subscriptions. Its
// methods are called on the consumers' goroutines, concurrently for
// different subscriptions.
type Faults interface {
	// Handle runs one run of subscription sub's handler for event e
	// (maxAttempts: the subscription's retry policy's); run
	// runs the handler itself and returns its error. What Handle returns is
	// the run's outcome: an error makes the run fail (its work is rolled
	// back to the run's savepoint, and the event retried or dead-lettered
	// as for any handler error).
	Handle(ctx context.Context, sub string, maxAttempts int, e *envelope.Envelope, run func() error) error
	// Commit is called as a transaction of subscription sub is about to
	// commit; an error fails it: the transaction is rolled back, and every
	// event of it waits and runs again.
	Commit(ctx context.Context, sub string) error
}

// With returns the herald.Option that gives a service the faults f.
var With func(f Faults) any
