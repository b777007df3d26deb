package natsjs

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
)

// sized returns an event of typ, with every optional header set, whose
// EventSize on b is size.
func sized(t *testing.T, b *Broker, typ string, size int) *envelope.Envelope {
	t.Helper()
	now := time.Now().UTC()
	e := &envelope.Envelope{ID: envelope.NewID(now), Type: typ, Version: 12, Kind: envelope.KindIntegration,
		Source: "natsjs-test", Key: "order-7", Time: now, CorrelationID: "corr-1", CausationID: "cause-1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "congo=t61rcWkgMzE",
		DataContentType: "application/octet-stream"}
	n := size - b.EventSize(e)
	if n < 0 {
		t.Fatalf("headers alone take %d bytes, more than %d", b.EventSize(e), size)
	}
	e.Data = bytes.Repeat([]byte{'x'}, n)
	if got := b.EventSize(e); got != size {
		t.Fatalf("EventSize = %d, want %d", got, size)
	}
	return e
}

// TestEventSizeAtTheLimit: an event of MaxEventSize is published and
// replayed; one byte more makes the replay's message (the larger of the two
// without atomic batches) one byte over the server's max payload, which
// shows EventSize counts the bytes nats.go counts, headers included.
func TestEventSizeAtTheLimit(t *testing.T) {
	const limit = 4096
	for _, atomic := range []bool{false, true} {
		name := map[bool]string{false: "each", true: "atomic"}[atomic]
		t.Run(name, func(t *testing.T) {
			b := embedded(t, WithEphemeral(), WithMaxPayload(limit), WithAtomicBatches(atomic))
			if got := b.MaxEventSize(); got != limit {
				t.Fatalf("MaxEventSize = %d, want %d", got, limit)
			}
			ctx := testCtx(t, 30*time.Second)
			sub := broker.Subscription{Service: "limit", Name: "all", Types: []string{"test.limit"}, Kind: envelope.KindIntegration}
			if err := b.Provision(ctx, broker.Topology{Service: "limit", Subscriptions: []broker.Subscription{sub}}); err != nil {
				t.Fatal(err)
			}
			at := sized(t, b, "test.limit", limit)
			mustPublish(t, b, []*envelope.Envelope{at})
			if err := b.Replay(ctx, "limit", "all", at); err != nil {
				t.Fatalf("Replay of an event of MaxEventSize: %v", err)
			}
			if atomic {
				return // the batch headers, not the replay's id, set the size
			}
			over := sized(t, b, "test.limit", limit+1)
			if err := b.Replay(ctx, "limit", "all", over); !errors.Is(err, nats.ErrMaxPayload) {
				t.Fatalf("Replay of an event of MaxEventSize+1: %v, want nats.ErrMaxPayload", err)
			}
		})
	}
}

// TestPublishRejectsTooLarge: an event over the server's max payload fails
// with broker.ErrRejected and no other sentinel, alone or in an atomic
// batch, where it is the event that fails: the ones before it are stored.
func TestPublishRejectsTooLarge(t *testing.T) {
	for _, atomic := range []bool{false, true} {
		name := map[bool]string{false: "each", true: "atomic"}[atomic]
		t.Run(name, func(t *testing.T) {
			b := embedded(t, WithEphemeral(), WithMaxPayload(4096), WithAtomicBatches(atomic))
			ctx := testCtx(t, 30*time.Second)
			if err := b.Provision(ctx, broker.Topology{Service: "limit",
				Publishes: []broker.TypeRef{{Type: "test.limit", Kind: envelope.KindIntegration}}}); err != nil {
				t.Fatal(err)
			}
			es := bulk("test.limit", 3)
			es[1].Data = bytes.Repeat([]byte{'<'}, 5000)
			errs := b.Publish(ctx, es)
			if errs[0] != nil {
				t.Errorf("event before the large one: %v", errs[0])
			}
			if err := errs[1]; !errors.Is(err, broker.ErrRejected) || !errors.Is(err, nats.ErrMaxPayload) ||
				errors.Is(err, broker.ErrTransient) || errors.Is(err, broker.ErrClosed) {
				t.Errorf("large event: %v, want ErrRejected (wrapping nats.ErrMaxPayload) and nothing else", err)
			}
			if errs[2] == nil {
				t.Error("the event after the large one was sent")
			}
		})
	}
}

// TestPublishOnDeadConnectionIsClosed: when the embedded server is gone, the
// broker's connection is closed for good and publishes fail with
// broker.ErrClosed, not as a refusal of the event.
func TestPublishOnDeadConnectionIsClosed(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 30*time.Second)
	if err := b.Provision(ctx, broker.Topology{Service: "dead",
		Publishes: []broker.TypeRef{{Type: "test.dead", Kind: envelope.KindIntegration}}}); err != nil {
		t.Fatal(err)
	}
	b.srv.Shutdown()
	testwait.Until(t, 10*time.Second, "the connection to close after the server shut down", b.nc.IsClosed)
	err := b.Publish(ctx, bulk("test.dead", 1))[0]
	if !errors.Is(err, broker.ErrClosed) || errors.Is(err, broker.ErrRejected) {
		t.Fatalf("Publish on a dead connection: %v, want ErrClosed", err)
	}
}

// TestMaxEventSizeWithinTheFileStore: a server whose max_payload is above
// what its file store keeps as one message (32 MiB) would take a publish
// and refuse to store it; MaxEventSize stays below the store's limit.
func TestMaxEventSizeWithinTheFileStore(t *testing.T) {
	b := embedded(t, WithEphemeral(), WithMaxPayload(40<<20))
	if got := b.MaxEventSize(); got != maxStoredMessage || got >= 32<<20 {
		t.Fatalf("MaxEventSize = %d with max_payload 40 MiB, want %d", got, maxStoredMessage)
	}
}

// TestPublishErrorClasses: the server's API errors that one event meets
// (too large for the stream or its store) park it; the ones every event
// would meet (a sealed stream, a store that failed otherwise) are retried.
func TestPublishErrorClasses(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 10*time.Second)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"message over the stream's max_msg_size", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}, broker.ErrRejected},
		{"message over the file store's record limit", &jetstream.APIError{Code: 503, ErrorCode: jsErrCodeStreamStoreFailed, Description: "message too large"}, broker.ErrRejected},
		{"store failed otherwise", &jetstream.APIError{Code: 503, ErrorCode: jsErrCodeStreamStoreFailed, Description: "no space left on device"}, broker.ErrTransient},
		{"sealed stream", &jetstream.APIError{Code: 400, ErrorCode: jsErrCodeStreamSealed, Description: "invalid operation on sealed stream"}, broker.ErrTransient},
		{"no quorum", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, broker.ErrTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := b.publishErrIn(ctx, "e-1", "", tc.err, nil)
			if !errors.Is(got, tc.want) {
				t.Fatalf("%v: want %v", got, tc.want)
			}
			for _, other := range []error{broker.ErrRejected, broker.ErrTransient} {
				if other != tc.want && errors.Is(got, other) {
					t.Fatalf("%v wraps %v too", got, other)
				}
			}
		})
	}
}
