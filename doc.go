// Package herald is a framework and runtime for event-driven microservices
// in which the three kinds of events are first-class, each with the
// guarantees it needs: domain events stay inside a service, in its
// database transaction; integration events cross services through a
// transactional outbox, NATS JetStream and an idempotent inbox; notification
// events reach people and external systems without blocking the business
// flow.
//
// # Contracts
//
// An event type is a contract, declared once and shared by the code that
// records, publishes and handles it:
//
//	orderPlaced    = herald.Domain[OrderPlaced]("orders.placed")
//	orderConfirmed = herald.Integration[OrderConfirmed]("shop.order.confirmed",
//		herald.Version(1), herald.KeyBy(func(e OrderConfirmed) string { return e.OrderID }))
//	orderMail      = herald.Notification[OrderMail]("shop.order.mail")
//
// Integration and notification contracts are public: versioned, and keyed
// (KeyBy) so that events of one key are handled in order. A Registry
// refuses contracts that would make types ambiguous.
//
// # Services and transactions
//
// A Service is one microservice's runtime, built by New from a store
// (store/sqlite or store/postgres) and a broker (broker/natsjs). Do runs
// one database transaction; inside it, Record appends a domain event to the
// service's event log and runs its domain handlers (Handle) in the same
// transaction, and its translations (Translate) write integration events to
// the outbox. Notify writes a notification event to the outbox. Everything
// commits with the caller's own rows, or nothing does: a handler's error or
// panic rolls the transaction back even if the caller swallowed it.
//
// # Event-sourced aggregates
//
// An aggregate declared with Aggregate keeps its state as its stream of
// domain events: Apply names each event's function on the state, and
// Service.RegisterAggregate registers it. Inside Do, Load rebuilds an
// aggregate from its stream (from its newest snapshot on, with Snapshot),
// and Append records the next event exactly as Record does, at the stream's
// next version:
//
//	inv := herald.Aggregate[Stock]("inventory.stock", herald.Snapshot(100))
//	herald.Apply(inv, stockReserved, func(s *Stock, e StockReserved) { s.Reserved += e.Qty })
//	svc.RegisterAggregate(inv)
//	err := svc.Do(ctx, func(tx herald.Tx) error {
//		a, err := herald.Load(tx, inv, productID)
//		...
//		return herald.Append(tx, a, stockReserved, StockReserved{Qty: 1})
//	}, herald.RetryConflicts(5))
//
// The database refuses a second event at one version of a stream, so of two
// transactions that loaded the same version only the first commits; the
// other fails with ErrConcurrencyConflict, and RetryConflicts runs the
// decision again on the new state. Snapshots (JSON, written in the
// appending transaction every n events) of another SnapshotSchema version
// are ignored; one that does not decode is ErrCorruptSnapshot. An event of a
// stream without an Apply is ErrNoApply. Event-log retention keeps the
// events of streams.
//
// # Integration events
//
// After commit the outbox relay publishes the outbox in commit order to the
// broker, which deduplicates by event id. Subscribe registers a handler of
// another service's integration events: it runs in a transaction with an
// inbox row, so a redelivered event takes effect once. A failing handler is
// retried with exponential backoff and jitter (RetryPolicy), holding back
// only later events of its key; after the last attempt, or at once for
// Permanent errors, undecodable data, unknown types and unsupported
// versions, the event becomes a dead letter with its reason
// (Service.DeadLetters, ReplayDeadLetters, PurgeDeadLetters). Upcast turns
// older versions of a contract into the one a handler takes.
//
// On a broker that partitions integration events by key (broker.Partitioner,
// natsjs.WithPartitions) each subscription runs one consumer per partition,
// each with its own per-key queues; Lags and metrics sum the partitions and
// the consumers' logs name theirs. Notification subscriptions run one. A
// broker that hands each partition to one instance at a time and restarts it
// at its first unacknowledged event on a takeover (broker.Claimer) keeps
// order per key across instances without holding events back. A handler's
// attempts are counted by the instance that runs it: after a takeover by
// another instance (a crash, a rebalance) an event's retries start again at
// attempt 1, so it can run up to RetryPolicy.MaxAttempts more times.
//
// # Notifications
//
// Receive is Subscribe for notification events: the notifier's side. The
// notify package builds the notification tier on it: preferences, quiet
// hours, throttling, digests, channels (e-mail, webhooks, web push, chat,
// SMS) with retries, failover and a delivery log.
//
// # Observers
//
// Every hop of an event — record, translate, notify, publish, consume,
// handle, dead-letter, deliver — is an Observation reported to the
// service's observers (WithObserver): the causal trace (package trace),
// OpenTelemetry spans (package tracing) and Prometheus metrics (package
// metrics) ship with herald. Observers can never stop the flow: a panic is
// contained and counted (Service.ObserverStats), and an observer that is
// not an InlineObserver receives its observations from a bounded queue of
// its own.
//
// # Options
//
// Every call that takes options takes them of its own type: New an Option,
// Domain, Integration and Notification a ContractOption, Subscribe and
// Receive a SubscribeOption, Handle a HandleOption, Service.Do a DoOption,
// Aggregate an AggregateOption. An option that makes sense in several calls
// is one name that each of them takes: Retry sets the service's default
// retry policy when passed to New and one subscription's when passed to
// Subscribe; Emits declares a subscription's or a domain handler's effects.
// An option passed to a call it does not fit does not compile, and an
// option's arguments are checked when the call applies it (errors.Is(err,
// ErrInvalidOption), ErrInvalidContract for a contract, ErrInvalidAggregate
// for an aggregate).
//
// # Lifecycle
//
// Register contracts, handlers, translations and subscriptions, then Start:
// it provisions the broker's streams and consumers, and runs the relay, the
// subscriptions and the retention janitor until Close. Close lets running
// Do calls finish, hands events a subscription held back to the broker,
// publishes what was committed (for at most RelayConfig.DrainTimeout, saying
// at Warn what it left in the outbox) and withdraws the instance from the
// catalog; the store and the broker stay the caller's to close, after it.
//
// # Errors
//
// Errors wrap sentinels to test with errors.Is: ErrInvalidOption,
// ErrInvalidContract, ErrClosed, ErrNotReplayable, ErrPanic and the others
// declared in this package.
package herald
