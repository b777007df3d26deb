package natsjs

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/flawtest"
)

// reconnectable is a Broker connected (with Connect) to an embedded server
// that listens, so that its connection can be dropped on purpose: it
// implements brokertest.Disconnecter, and its optional interfaces are the
// Broker's.
type reconnectable struct {
	*Broker
	server *Broker  // nil when the connection is to an external server
	url    string   // the server's
	opts   []Option // of the connection, for NewInstance
}

// Disconnect drops the client connection; it reconnects by itself.
func (r *reconnectable) Disconnect(context.Context) error { return r.nc.ForceReconnect() }

// NewInstance connects another broker to the same server with the same
// options: another instance (brokertest.Instancer). The caller closes it.
func (r *reconnectable) NewInstance(t *testing.T) broker.Broker {
	t.Helper()
	b, err := Connect(testCtx(t, 30*time.Second), []string{r.url}, r.opts...)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return &reconnectable{Broker: b, url: r.url, opts: r.opts}
}

// Kill closes the connection at once, as a killed process's goes: nothing
// settled, released or drained (brokertest.Killer).
func (r *reconnectable) Kill() { r.nc.Close() }

func (r *reconnectable) Close() error {
	err := r.Broker.Close()
	if r.server != nil {
		if serr := r.server.Close(); err == nil {
			err = serr
		}
	}
	return err
}

// listening returns a broker connected over TCP to an embedded server of
// its own, with opts.
func listening(t *testing.T, opts ...Option) *reconnectable {
	t.Helper()
	srv, err := Embedded(testCtx(t, 30*time.Second), WithEphemeral(), WithListen("127.0.0.1:0"), WithLogger(testLogger()))
	if err != nil {
		t.Fatalf("Embedded: %v", err)
	}
	opts = append([]Option{WithLogger(testLogger()), WithReconnectWait(50 * time.Millisecond)}, opts...)
	b, err := Connect(testCtx(t, 30*time.Second), []string{srv.URL()}, opts...)
	if err != nil {
		_ = srv.Close()
		t.Fatalf("Connect: %v", err)
	}
	return &reconnectable{Broker: b, server: srv, url: srv.URL(), opts: opts}
}

// withFlaw breaks the broker deliberately (claim.go's flaws).
func withFlaw(f string) Option {
	return func(c *config) error { c.flaw = f; return nil }
}

// flawed breaks the broker it wraps in one way, named by flaw.
type flawed struct {
	*reconnectable
	flaw string

	mu   sync.Mutex
	seen map[string]bool                  // envelope ids published
	subs map[string][]broker.Subscription // event type -> subscriptions
}

// NewInstance returns another instance with the same flaw.
func (f *flawed) NewInstance(t *testing.T) broker.Broker {
	return &flawed{reconnectable: f.reconnectable.NewInstance(t).(*reconnectable), flaw: f.flaw,
		seen: map[string]bool{}, subs: map[string][]broker.Subscription{}}
}

func (f *flawed) Provision(ctx context.Context, t broker.Topology) error {
	f.mu.Lock()
	for _, s := range t.Subscriptions {
		for _, typ := range s.Types {
			f.subs[typ] = append(f.subs[typ], s)
		}
	}
	f.mu.Unlock()
	return f.reconnectable.Provision(ctx, t)
}

func (f *flawed) Publish(ctx context.Context, es []*envelope.Envelope) []error {
	errs := f.reconnectable.Publish(ctx, es)
	if f.flaw != "publishes-twice" {
		return errs
	}
	// No dedup: an id published before is stored again, for every
	// subscription of its type.
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range es {
		if errs[i] != nil {
			continue
		}
		if f.seen[e.ID] {
			for _, s := range f.subs[e.Type] {
				errs[i] = f.Replay(ctx, s.Service, s.Name, e)
			}
		}
		f.seen[e.ID] = true
	}
	return errs
}

func (f *flawed) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	return f.reconnectable.Consume(ctx, sub, batch, func(ctx context.Context, ds []broker.Delivery) {
		ds = slices.Clone(ds)
		if f.flaw == "reorders-batch" {
			slices.Reverse(ds)
		}
		for i, d := range ds {
			ds[i] = &flawedDelivery{Delivery: d, flaw: f.flaw}
		}
		h(ctx, ds)
	})
}

func (f *flawed) Pending(ctx context.Context, sub broker.Subscription) (int, error) {
	n, err := f.reconnectable.Pending(ctx, sub)
	return f.count(n), err
}

func (f *flawed) count(n int) int {
	switch {
	case f.flaw == "undercounts-pending" && n > 0:
		return n - 1
	case f.flaw == "overcounts-pending":
		return n + 1
	}
	return n
}

func (f *flawed) PendingState(ctx context.Context, sub broker.Subscription) (broker.PendingState, error) {
	st, err := f.reconnectable.PendingState(ctx, sub)
	st.Pending = f.count(st.Pending)
	switch f.flaw {
	case "ack-floor-at-delivered":
		st.AckFloor = st.Delivered
	case "ack-floor-stuck":
		st.AckFloor = 0
	case "delivered-at-ack-floor":
		st.Delivered = st.AckFloor
	}
	return st, err
}

func (f *flawed) Epoch() uint64 {
	if f.flaw == "static-epoch" {
		return 0
	}
	return f.reconnectable.Epoch()
}

type flawedDelivery struct {
	broker.Delivery
	flaw string
}

func (d *flawedDelivery) Header() map[string]string {
	h := d.Delivery.Header()
	if d.flaw == "loses-header" {
		h = maps.Clone(h)
		delete(h, envelope.HeaderTraceParent)
	}
	return h
}

func (d *flawedDelivery) NumDelivered() uint64 {
	if d.flaw == "num-delivered-one" {
		return 1
	}
	return d.Delivery.NumDelivered()
}

func (d *flawedDelivery) Sequence() uint64 {
	if d.flaw == "constant-sequence" {
		return 7
	}
	return d.Delivery.Sequence()
}

func (d *flawedDelivery) Nak(delay time.Duration) error {
	switch d.flaw {
	case "ignores-nak":
		return nil
	case "acks-on-nak":
		return d.AckNoWait()
	}
	return d.Delivery.Nak(delay)
}

func (d *flawedDelivery) InProgress() error {
	if d.flaw == "ignores-in-progress" {
		return nil
	}
	return d.Delivery.InProgress()
}

func (d *flawedDelivery) Term() error {
	if d.flaw == "term-is-nak" {
		return d.Delivery.Nak(0)
	}
	return d.Delivery.Term()
}

// brokerFlaws maps each flaw to the suite cases expected to catch it; the
// first one named must fail.
var brokerFlaws = map[string][]string{
	"reorders-batch":         {"PublishConsumeInOrder"},
	"publishes-twice":        {"DedupByID"},
	"undercounts-pending":    {"PendingCount", "PendingState"},
	"overcounts-pending":     {"PendingCount", "PendingState"},
	"ack-floor-at-delivered": {"PendingStateFloor", "PendingState"},
	"ack-floor-stuck":        {"PendingStateFloor"},
	"delivered-at-ack-floor": {"PendingStateFloor", "PendingState"},
	"ignores-nak":            {"NakRedeliversInPlace", "NakDelayRedelivers"},
	"acks-on-nak":            {"NakRedeliversInPlace", "NakDelayRedelivers"},
	"loses-header":           {"RoundTripLossless", "NakRedeliversInPlace"},
	"static-epoch":           {"ResumeAfterReconnect"},
	"num-delivered-one":      {"AckWaitRedelivers", "NakRedeliversInPlace"},
	"constant-sequence":      {"PublishConsumeInOrder", "NakRedeliversInPlace"},
	"ignores-in-progress":    {"InProgressPostponesRedelivery"},
	"term-is-nak":            {"TermNeverRedelivered"},
	flawNoReset:              {"ClaimMovesOnDeath"},
	flawNoResetOnReconnect:   {"ClaimRestartsAtAckFloor"},
	flawNoUnpin:              {"ReleaseHandsOver"},
}

// claimTTL is the pinned TTL of the conformance tests' claim cases: long
// enough that ReleaseHandsOver's bound (half of it) holds on a busy
// machine.
const claimTTL = 4 * time.Second

// TestSuiteCatchesFlaws runs the conformance suite against deliberately
// broken wrappers of a real broker, each in a child process (a failing
// subtest cannot be contained in this test) with only the cases expected to
// catch the flaw, and expects the run to fail naming the first case. The
// same cases must pass on the unbroken wrapper.
func TestSuiteCatchesFlaws(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: child processes")
	}
	flawtest.Run(t, flawtest.Config{Child: "TestFlawedBroker", Env: "BROKERTEST_FLAW", Flaws: brokerFlaws})
}

// TestFlawedBroker is the child process of TestSuiteCatchesFlaws.
func TestFlawedBroker(t *testing.T) {
	flaw := flawtest.Flaw(t, "BROKERTEST_FLAW", "TestSuiteCatchesFlaws")
	caps := brokertest.All
	caps.Persistent = false
	caps.ClaimTTL = claimTTL
	brokertest.Run(t, caps, func(t *testing.T) broker.Broker {
		return &flawed{reconnectable: listening(t, WithPinnedTTL(claimTTL), withFlaw(flaw)), flaw: flaw,
			seen: map[string]bool{}, subs: map[string][]broker.Subscription{}}
	})
}
