// Package observehook lets the packages of this module that are built on
// herald (the notifier) report their hops through a service's observers,
// without herald exporting a method for it.
//
// Package herald sets Observe once, in its init, before any service exists;
// nothing changes it afterwards. Its arguments are a *herald.Service and a
// herald.Observation, which this package cannot name: herald imports it.
package observehook

import "context"

// Observe reports observation o through the observers of service svc.
var Observe func(ctx context.Context, svc, o any)

// Observing reports whether service svc has observers, so that a caller
// skips building observations nobody reads.
var Observing func(svc any) bool

// OnCommit reports observation o through the observers of the service of
// transaction tx (a herald.Tx) once tx commits: after the events it
// recorded, and, in a subscription's transaction, before the handle hop of
// the event it handled. Nothing is reported if tx rolls back (or rolls back
// to a savepoint taken before the call).
var OnCommit func(tx, o any)
