// Package heraldtest is what a herald user imports in tests: a throw-away
// system of services in one test, and settled flows — run an action, wait
// until everything it caused has finished, assert on what happened. No
// sleeps, no polling loops.
//
// # A system in a test
//
// New starts an ephemeral embedded NATS JetStream server for the test.
// System.Service adds a herald service to it on a store of its own: a new
// SQLite file, or, when HERALD_TEST_POSTGRES_URL (EnvPostgres) is set, a
// new schema on that PostgreSQL server. Register contracts, handlers,
// translations and subscriptions on it as in production, create its tables,
// then System.Start. Everything is closed, and every schema dropped, when
// the test ends.
//
//	sys := heraldtest.New(t)
//	orders, shipping := sys.Service("orders"), sys.Service("shipping")
//	herald.Translate(orders, orderPlaced, orderConfirmed, confirm)
//	herald.Subscribe(shipping, orderConfirmed, "schedule", schedule)
//	sys.Start()
//
// # Settled flows
//
// System.Run runs an action (a Do, an HTTP request into a service) and
// returns once the flow it started has settled: every integration and
// notification event written to an outbox is published, and handled or
// dead-lettered by every subscription of the system's services that
// receives it, and so on for what those handlers record. The Flow it
// returns holds every hop (trace.Record), the causal tree (trace.Tree),
// the dead letters, and helpers to find events and handled hops.
//
//	flow := sys.Run(t, func(ctx context.Context) error {
//		return orders.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, orderPlaced, e) })
//	})
//	if len(flow.Handled("shipping", "schedule")) != 1 { … }
//
// A flow that has not settled within the settle timeout (SettleTimeout,
// default DefaultSettleTimeout) fails the test, one line per unfinished
// hop — "shop.order.confirmed 01K…: not handled by shipping/schedule
// (service shipping is not started)" — followed by the tree so far.
//
// # How Run knows a flow settled
//
// The system adds one observer (herald.WithObserver, an InlineObserver) to
// each of its services and keeps, per flow, the hops still owed. A
// translated or notified event owes a publish by its service's relay; a
// published event owes one hop to each subscription of the system's
// services to its type (from their manifests, read when Run begins); a
// handled (ok or duplicate) or dead-lettered event pays its hop, and a
// retry does not. A notifier (package notify) reports each delivery it
// decided for a notification event (herald.HopDecide); one decided queued
// owes its send, which its deliver hop (sent, delivered, failed — not a
// retry) pays; one decided in any other state is finished: ended by the
// decision (suppressed, throttled, failed) or put off (deferred for quiet
// hours or a fallback, digested). herald reports the events a transaction
// recorded, and the deliveries a decision made, before Do returns and
// before the consumer reports the event that caused them handled, so the
// count of owed hops never drops to zero while work that is already
// caused is unreported. Hops may be reported paid before owed (a consumer
// in another service can report before the producer's relay does, a
// notifier's worker can send a delivery before its decision is reported),
// and count once either way. The flow settles when nothing is owed.
//
// Flow.Deliveries lists the notification deliveries — recipient, channel,
// outcome — and Flow.Sent those sent on a channel:
//
//	flow := sys.Run(t, placeOrder)
//	if got := flow.Sent("email"); len(got) != 1 || got[0].Recipient != "alice" { … }
//
// # Guarantee checks
//
// herald makes a handler's effect exactly-once only if the handler keeps
// it inside the transaction herald hands it. CheckHandler checks that for
// one subscription, under the faults production has: Check names the
// event, the subscription, a constructor of the service (called with the
// check's store and options — the way a test builds a service of its own
// for System.Add), the events, and the effect to compare (a query of the
// handler's tables, or what an external system it calls received).
//
//	heraldtest.CheckHandler(t, heraldtest.Check[OrderConfirmed]{
//		Event: orderConfirmed, Subscription: "schedule", Events: orders,
//		Service: func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
//			return shipping.New(ctx, st, opts...)
//		},
//		Effect: func(ctx context.Context, st *store.Store) (any, error) { return shipments(ctx, st) },
//	})
//
// Each run has a new embedded broker and store, and delivers the events
// through the real path: a producer records each event in a transaction of
// its own, its relay publishes it, the subscription's consumer handles it
// in a transaction with its inbox row. The first run delivers them once,
// in order; the others inject one fault each (Fault): every event
// delivered twice, a crash between one event's commit and its ack (a new
// instance takes over on the same store, and gets the later events), a
// crash inside the handler once it ran, two transient errors once it ran,
// and the orders of the events that the per-key guarantee allows. A run
// whose effect differs is shrunk to the smallest sequence of events that
// still breaks, and reported in words (Violation). A handler that runs
// longer than its ack wait is reported too. Examine returns the Report
// instead of failing the test; CheckDomain does the same for domain
// handlers, whose transaction may roll back after they ran.
//
// On SQLite, a handler that writes through the store's pool (st.DB())
// instead of tx waits for the write lock its own transaction holds, and
// fails with "database is locked": the clean run does not settle, and the
// check fails with that error as the hop's last one.
//
// # What is not waited for
//
// Deliveries put off — deferred to the end of quiet hours, a fallback
// waiting on its primary, an item of a digest — are in Flow.Deliveries
// with that outcome, and their later send is not waited for; nor is the
// digest message a digest sends when it fills. Subscriptions of services
// outside the system are not known and not waited for.
package heraldtest
