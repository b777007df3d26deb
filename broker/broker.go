// Package broker is the seam between herald and a message transport. A
// transport moves envelopes in CloudEvents binary mode; everything above it
// (outbox relay, inbox, retries, dead letters, ordering) lives in herald and
// is the same on every transport. brokertest holds the conformance suite that
// every transport must pass.
package broker

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// Sentinel errors a transport wraps so callers can test with errors.Is.
var (
	// ErrClosed is returned by every call on a closed broker.
	ErrClosed = errors.New("herald/broker: closed")
	// ErrNotProvisioned is returned when publishing to or consuming from a
	// stream or subscription that Provision did not create.
	ErrNotProvisioned = errors.New("herald/broker: not provisioned")
	// ErrTransient marks a publish failure worth retrying (timeouts, a
	// stalled async-publish window, a broker that is restarting).
	ErrTransient = errors.New("herald/broker: transient failure")
	// ErrRejected marks a publish the broker refused for good: sending the
	// same event again cannot succeed (it is larger than the server accepts,
	// it has a header or subject the server refuses). herald's relay parks
	// such an event as a producer-side dead letter instead of retrying it.
	// A failure that every event would meet (a full account, a sealed
	// stream) is not one: transports report those as ErrTransient.
	ErrRejected = errors.New("herald/broker: event rejected")
)

// Subscription names one durable, shared consumer: every instance of Service
// that consumes Name competes for the same events.
type Subscription struct {
	Service string   // consuming service
	Name    string   // subscription name, unique within the service
	Types   []string // integration or notification event types it receives
	Kind    envelope.Kind
	// AckWait is how long the broker waits for an ack before redelivering.
	AckWait time.Duration
	// MaxAckPending bounds the events in flight to this subscription.
	MaxAckPending int
	// Partition is the partition this Subscription value stands for, from 0
	// to Partitioner.Partitions()-1 (always 0 on a transport that does not
	// partition). herald consumes each partition of a subscription on its
	// own: Consume, PendingState and Pending take the partition from here;
	// Provision ignores it and provisions every partition.
	Partition int
}

// Topology is what a service publishes and consumes; Provision creates the
// streams and durable consumers for it once, at start.
type Topology struct {
	Service       string
	Publishes     []TypeRef // event types this service publishes
	Subscriptions []Subscription
}

// TypeRef names an event type and its kind.
type TypeRef struct {
	Type string
	Kind envelope.Kind
}

// Publisher sends envelopes to the broker.
type Publisher interface {
	// Publish sends the envelopes asynchronously, in order, with a bounded
	// number in flight, and waits until the broker has acknowledged (stored)
	// each one or ctx ends. errs[i] is the outcome of events[i]: nil once
	// stored. At the first failure it sends nothing more of the batch (those
	// events get an error too), so that no event is stored before an earlier
	// one that failed; the caller retries them in order. The transport
	// deduplicates by envelope ID, so re-publishing a stored event is harmless.
	Publish(ctx context.Context, events []*envelope.Envelope) (errs []error)
}

// Delivery is one event handed to a consumer. It must be settled exactly once
// with Ack, Nak or Term.
type Delivery interface {
	// Header is the CloudEvents binary-mode header set, keys in lower case.
	Header() map[string]string
	// Data is the message body.
	Data() []byte
	// Subject is the transport subject the message arrived on.
	Subject() string
	// NumDelivered counts deliveries of this message, starting at 1.
	NumDelivered() uint64
	// Sequence is the message's position in its stream: publish order.
	Sequence() uint64
	// Ack settles the message as processed; it returns once the broker
	// confirmed the ack.
	Ack(ctx context.Context) error
	// AckNoWait settles the message as processed without waiting for the
	// broker's confirmation. A lost ack costs one redelivery; use it where
	// redeliveries are harmless (herald's inbox makes them so).
	AckNoWait() error
	// Nak asks for redelivery after at least delay.
	Nak(delay time.Duration) error
	// InProgress extends the ack deadline while work goes on.
	InProgress() error
	// Term settles the message as never to be redelivered.
	Term() error
}

// Handler receives a batch of deliveries (at most the requested batch size,
// in stream order) and settles each one.
type Handler func(ctx context.Context, batch []Delivery)

// Subscriber consumes durable subscriptions.
type Subscriber interface {
	// Consume delivers the subscription's events to h in batches of at most
	// batch until ctx ends or the broker closes. It blocks; the caller owns
	// the goroutine. Several Consume calls on the same subscription, in one
	// process or many, compete for its events.
	Consume(ctx context.Context, sub Subscription, batch int, h Handler) error
}

// DeadLetter is an event a subscription gave up on, with why.
type DeadLetter struct {
	Event        *envelope.Envelope // nil when the message could not be decoded
	RawHeader    map[string]string  // the original headers, always kept
	RawData      []byte             // the original body, always kept
	Service      string
	Subscription string
	Reason       string // malformed, unknown-type, version, exhausted, permanent
	LastError    string
	Attempts     int
	Time         time.Time
}

// Broker is a transport: provisioning, publishing, consuming, dead letters
// and replay.
//
// What herald's consumer relies on, and where brokertest checks it:
//
//   - Part of this contract, for every transport: a subscription's events
//     arrive in publish order, in batches in that order, with Sequence
//     strictly increasing (PublishConsumeInOrder); headers and data arrive
//     intact, also on a redelivery (RoundTripLossless, NakRedeliversInPlace);
//     Ack, Nak, InProgress and Term do what they say and a redelivery keeps
//     its Sequence and counts up NumDelivered (NakDelayRedelivers,
//     NakRedeliversInPlace, AckWaitRedelivers, InProgressPostponesRedelivery,
//     TermNeverRedelivered). The Capabilities a transport declares (Dedup by
//     envelope ID, AckWait, …) are checked as declared.
//   - Optional, checked when the broker implements the interface:
//     PendingCounter counts what is out as deliveries are held, acked,
//     in progress and terminated (PendingCount); PendingStater's AckFloor
//     and Delivered follow the acks (PendingState, PendingStateFloor);
//     Resumer's Epoch changes when the connection comes back, consumption
//     goes on on the same Consume call, and what was out comes back after
//     its ack wait (ResumeAfterReconnect, for brokers a test can disconnect,
//     brokertest.Disconnecter). herald keeps order per key after a crash or
//     a reconnect only on transports that implement them, or Claimer:
//     only one instance receives a claimed partition at a time, a dead
//     holder's unacknowledged events go to the next one first, in order
//     (ClaimMovesOnDeath), a holder's reconnect restarts the partition at
//     its ack floor (ClaimRestartsAtAckFloor), and a holder that stops
//     hands over at once (ReleaseHandsOver); Partitioner's partitions keep
//     each key on one partition in order (PartitionsKeepKeyOrder).
type Broker interface {
	Publisher
	Subscriber
	// Provision creates (or updates) streams and durable consumers for t. It
	// is called once per service at start, never per message.
	Provision(ctx context.Context, t Topology) error
	// PublishDeadLetter records d on the transport's dead-letter subject so
	// operators can follow dead letters live.
	PublishDeadLetter(ctx context.Context, d DeadLetter) error
	// Replay re-delivers e to the one subscription named, and to no other.
	Replay(ctx context.Context, service, subscription string, e *envelope.Envelope) error
	// Close releases the transport; an embedded server is shut down cleanly.
	Close() error
}

// Partitioner is implemented by transports that spread integration events
// over partitions by their partition key (envelope.Envelope.Key), each
// partition delivered in order on its own. herald runs one consumer per
// partition of each subscription. A transport that does not implement it has
// one partition.
type Partitioner interface {
	// Partitions is the number of partitions, at least 1, fixed when the
	// streams were provisioned.
	Partitions() int
	// Partition returns the partition an event of partition key key goes
	// to: a stable function of key and Partitions. Keyless events go to
	// partition 0.
	Partition(key string) int
}

// Claimer is implemented by transports that hand each partition of a
// subscription to one consumer at a time, among all the Consume calls on it
// in every process, and that restart the partition's delivery at its first
// unacknowledged event, in stream order, whenever a consumer gains it (a
// takeover after another consumer died or released it) or its connection
// comes back. Order per key then needs no hold in herald: an event handled
// but not acknowledged by the previous holder comes again before any newer
// one, and the inbox absorbs it. ClaimsInOrder reports whether sub is
// consumed that way (a transport may do it for some subscriptions only).
type Claimer interface {
	ClaimsInOrder(sub Subscription) bool
}

// LossWindower is implemented by transports that may lose the events they
// acknowledged in the last LossWindow if the machine (not just the process)
// dies — an embedded server that fsyncs periodically. herald keeps published
// outbox rows longer than that and, when a service starts, re-publishes the
// rows published within LossWindow of its last publish; the transport drops
// the events it still has by their ids and consumers' inboxes drop the rest.
type LossWindower interface {
	LossWindow() time.Duration
}

// PendingCounter is implemented by transports that can tell how many events
// of a subscription are delivered but not yet acknowledged — after a crash,
// the events the dead instance held, which the broker redelivers only when
// their ack wait runs out. herald holds new events back until those arrive, so
// that order per key survives a consumer crash.
type PendingCounter interface {
	Pending(ctx context.Context, sub Subscription) (int, error)
}

// PendingState is a broker's view of one subscription's deliveries, by
// stream sequence (Delivery.Sequence).
type PendingState struct {
	// Pending counts the events delivered and not yet acknowledged, as
	// PendingCounter does.
	Pending int
	// Delivered is the highest stream sequence the broker has delivered (or
	// passed over). It delivers every later event as a first delivery, in
	// stream order. A broker that restarted and lost the last of its
	// consumer state reports a lower Delivered than it had, and delivers
	// the events above it again as first deliveries.
	Delivered uint64
	// AckFloor: every event at or below this stream sequence is
	// acknowledged.
	AckFloor uint64
}

// PendingStater is implemented by transports that can tell, besides how many
// events of a subscription are unacknowledged, up to which stream sequence
// those events lie. herald uses it after a reconnect: the events it holds
// itself count as out only when they lie at or below Delivered (a broker that
// lost the last of its consumer state does not count the later ones), so
// what else is out — the events that will come back only after their ack
// wait — is Pending less those. A transport that can lose acknowledgements
// across a reconnect (sent while the connection was down, or not yet stored
// by a broker that then restarted) sends the ones it still knows again
// before it counts, so that Pending holds what is really out.
type PendingStater interface {
	PendingState(ctx context.Context, sub Subscription) (PendingState, error)
}

// Resumer is implemented by transports whose connection can drop and come
// back. Epoch changes each time it comes back: deliveries that were on the
// wire when it dropped return only after their ack wait, so herald holds new
// events back (as after a crash, see PendingCounter) to keep order per key.
type Resumer interface {
	Epoch() uint64
}

// Limiter is implemented by transports that refuse events above a size.
// herald refuses such an event when it is recorded, inside the business
// transaction (herald.ErrEventTooLarge), so that it never reaches the outbox.
type Limiter interface {
	// MaxEventSize is the largest EventSize the transport accepts, as the
	// server announced it (0: no limit known). It may change when the
	// transport connects to another server.
	MaxEventSize() int
	// EventSize is the number of bytes e counts against MaxEventSize: its
	// data and its headers as the transport encodes them, for the largest
	// message the transport ever sends for e (a publish or a replay).
	EventSize(e *envelope.Envelope) int
}
