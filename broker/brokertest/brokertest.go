// Package brokertest is the conformance suite every herald transport must
// pass. A transport's test calls Run with the capabilities it has and a
// constructor of brokers; subtests of capabilities it lacks are skipped.
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Capabilities{Dedup: true, ...},
//			func(t *testing.T) broker.Broker { ... })
//	}
//
// Every subtest uses its own service, subscription and event type names, and
// its own broker from newBroker, so subtests run in parallel and brokers may
// share one server. The suite closes the brokers it gets (t.Cleanup); Close
// must therefore be idempotent.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
)

// Capabilities says what a transport can do; the subtests that need a
// capability it lacks are skipped.
type Capabilities struct {
	// Dedup: publishing an envelope ID already stored (within the
	// transport's window) does not store it again.
	Dedup bool
	// NakDelay: Nak(delay) redelivers after at least delay.
	NakDelay bool
	// AckWait: an unsettled delivery is redelivered after the
	// subscription's AckWait, and InProgress postpones that.
	AckWait bool
	// CompetingConsumers: concurrent Consume calls on one subscription
	// share its events, each event going to one of them.
	CompetingConsumers bool
	// Replay: Replay reaches exactly the named subscription.
	Replay bool
	// Persistent: a broker made by newBroker after another was closed sees
	// the events, and the acks, that the closed one stored.
	Persistent bool
	// ClaimTTL is how long a claimed partition (broker.Claimer) stays
	// with a holder that died; ReleaseHandsOver wants a released one to
	// move in under half of it. 0 skips that case.
	ClaimTTL time.Duration
}

// All is every capability.
var All = Capabilities{Dedup: true, NakDelay: true, AckWait: true, CompetingConsumers: true, Replay: true, Persistent: true}

// wait bounds every wait for an event; generous, as test machines are noisy.
const wait = 20 * time.Second

// Run runs the conformance suite. newBroker returns a ready broker (not
// provisioned); it is called once or more per subtest.
func Run(t *testing.T, caps Capabilities, newBroker func(t *testing.T) broker.Broker) {
	s := &suite{caps: caps, newBroker: func(t *testing.T) broker.Broker {
		t.Helper()
		b := newBroker(t)
		if b == nil {
			t.Fatal("newBroker returned nil")
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}}
	tests := []struct {
		name string
		need func(Capabilities) bool
		run  func(t *testing.T)
	}{
		{"PublishConsumeInOrder", nil, s.publishConsumeInOrder},
		{"RoundTripLossless", nil, s.roundTripLossless},
		{"NotificationEvents", nil, s.notificationEvents},
		{"PublishDomainEventFails", nil, s.publishDomainEventFails},
		{"PublishCancelledContext", nil, s.publishCancelledContext},
		{"DedupByID", func(c Capabilities) bool { return c.Dedup }, s.dedupByID},
		{"NakDelayRedelivers", func(c Capabilities) bool { return c.NakDelay }, s.nakDelayRedelivers},
		{"AckWaitRedelivers", func(c Capabilities) bool { return c.AckWait }, s.ackWaitRedelivers},
		{"InProgressPostponesRedelivery", func(c Capabilities) bool { return c.AckWait }, s.inProgressPostpones},
		{"TermNeverRedelivered", nil, s.termNeverRedelivered},
		{"CompetingConsumers", func(c Capabilities) bool { return c.CompetingConsumers }, s.competingConsumers},
		{"FanOutToSubscriptions", nil, s.fanOut},
		{"ReplayReachesOnlyNamedSubscription", func(c Capabilities) bool { return c.Replay }, s.replayOnlyNamed},
		{"ConsumeNotProvisioned", nil, s.consumeNotProvisioned},
		{"ProvisionIdempotent", nil, s.provisionIdempotent},
		{"PublishDeadLetter", nil, s.publishDeadLetter},
		{"ConsumeReturnsOnCancel", nil, s.consumeReturnsOnCancel},
		{"CloseStopsConsume", nil, s.closeStopsConsume},
		{"CallsAfterCloseFail", nil, s.callsAfterCloseFail},
		{"PersistentAcrossBrokers", func(c Capabilities) bool { return c.Persistent }, s.persistentAcrossBrokers},
		{"PendingState", nil, s.pendingState},
		{"PendingCount", nil, s.pendingCount},
		{"PendingStateFloor", nil, s.pendingStateFloor},
		{"NakRedeliversInPlace", nil, s.nakRedeliversInPlace},
		{"ResumeAfterReconnect", nil, s.resumeAfterReconnect},
		{"PartitionsKeepKeyOrder", nil, s.partitionsKeepKeyOrder},
		{"ClaimMovesOnDeath", nil, s.claimMovesOnDeath},
		{"ClaimRestartsAtAckFloor", nil, s.claimRestartsAtAckFloor},
		{"ReleaseHandsOver", nil, s.releaseHandsOver},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.need != nil && !tc.need(caps) {
				t.Skip("transport lacks the capability")
			}
			t.Parallel()
			tc.run(t)
		})
	}
}

type suite struct {
	caps      Capabilities
	newBroker func(t *testing.T) broker.Broker
}

// ---- helpers ---------------------------------------------------------------

var seq atomic.Int64

// names returns a service name, a subscription name and an event type unique
// to this test and run.
func names(t *testing.T) (service, sub, typ string) {
	u := strconv.FormatInt(time.Now().UnixNano(), 36) + strconv.FormatInt(seq.Add(1), 36)
	base := strings.ToLower(t.Name())
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	base = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, base)
	if len(base) > 30 {
		base = base[:30]
	}
	return "svc-" + base + "-" + u, "sub-" + u, "bt." + base + "." + u + ".happened"
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	t.Cleanup(cancel)
	return ctx
}

func newEvent(typ string, kind envelope.Kind, i int) *envelope.Envelope {
	now := time.Now().UTC()
	return &envelope.Envelope{
		ID:              envelope.NewID(now),
		Type:            typ,
		Version:         1,
		Kind:            kind,
		Source:          "brokertest",
		Time:            now,
		DataContentType: "application/json",
		Data:            []byte(`{"n":` + strconv.Itoa(i) + `}`),
	}
}

func newEvents(typ string, kind envelope.Kind, n int) []*envelope.Envelope {
	es := make([]*envelope.Envelope, n)
	for i := range es {
		es[i] = newEvent(typ, kind, i)
	}
	return es
}

func ids(es []*envelope.Envelope) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func subscription(service, name, typ string, kind envelope.Kind, ackWait time.Duration) broker.Subscription {
	return broker.Subscription{Service: service, Name: name, Types: []string{typ}, Kind: kind, AckWait: ackWait, MaxAckPending: 1000}
}

func provision(t *testing.T, b broker.Broker, subs ...broker.Subscription) {
	t.Helper()
	bySvc := map[string][]broker.Subscription{}
	var order []string
	for _, s := range subs {
		if _, ok := bySvc[s.Service]; !ok {
			order = append(order, s.Service)
		}
		bySvc[s.Service] = append(bySvc[s.Service], s)
	}
	for _, svc := range order {
		top := broker.Topology{Service: svc, Subscriptions: bySvc[svc]}
		for _, s := range bySvc[svc] {
			for _, typ := range s.Types {
				top.Publishes = append(top.Publishes, broker.TypeRef{Type: typ, Kind: s.Kind})
			}
		}
		if err := b.Provision(ctxT(t), top); err != nil {
			t.Fatalf("Provision(%s): %v", svc, err)
		}
	}
}

func publish(t *testing.T, b broker.Broker, es ...*envelope.Envelope) {
	t.Helper()
	errs := b.Publish(ctxT(t), es)
	if len(errs) != len(es) {
		t.Fatalf("Publish returned %d errors for %d events", len(errs), len(es))
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Publish: event %d (%s): %v", i, es[i].ID, err)
		}
	}
}

// received is one delivery seen by a consumer.
type received struct {
	id      string
	num     uint64
	at      time.Time
	subject string
	d       broker.Delivery
}

// consumer runs Consume in a goroutine (one per partition, see
// startConsumeAll) and records every delivery.
type consumer struct {
	t      *testing.T
	mu     sync.Mutex
	got    []received
	sizes  []int
	cancel context.CancelFunc
	done   chan error
	n      int // Consume calls running
	once   sync.Once
	err    error
}

// settle decides what to do with a delivery; nil acks it.
type settle func(ctx context.Context, d broker.Delivery, r received)

func ack(t *testing.T) settle {
	return func(ctx context.Context, d broker.Delivery, _ received) {
		if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("Ack: %v", err)
		}
	}
}

// startConsume consumes sub (its partition sub.Partition).
func startConsume(t *testing.T, b broker.Broker, sub broker.Subscription, batch int, fn settle) *consumer {
	t.Helper()
	return startConsuming(t, b, []broker.Subscription{sub}, batch, fn)
}

// startConsumeAll consumes every partition of sub (one Consume each), for
// events of several partition keys; order holds within a partition only.
func startConsumeAll(t *testing.T, b broker.Broker, sub broker.Subscription, batch int, fn settle) *consumer {
	t.Helper()
	subs := []broker.Subscription{sub}
	if p, ok := b.(broker.Partitioner); ok && sub.Kind == envelope.KindIntegration {
		subs = subs[:0]
		for i := range p.Partitions() {
			ps := sub
			ps.Partition = i
			subs = append(subs, ps)
		}
	}
	return startConsuming(t, b, subs, batch, fn)
}

func startConsuming(t *testing.T, b broker.Broker, subs []broker.Subscription, batch int, fn settle) *consumer {
	t.Helper()
	if fn == nil {
		fn = ack(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{t: t, cancel: cancel, done: make(chan error, len(subs)), n: len(subs)}
	for _, sub := range subs {
		go func() {
			c.done <- b.Consume(ctx, sub, batch, func(ctx context.Context, ds []broker.Delivery) {
				c.mu.Lock()
				c.sizes = append(c.sizes, len(ds))
				c.mu.Unlock()
				for _, d := range ds {
					r := received{id: d.Header()[envelope.HeaderID], num: d.NumDelivered(), at: time.Now(), subject: d.Subject(), d: d}
					c.mu.Lock()
					c.got = append(c.got, r)
					c.mu.Unlock()
					fn(ctx, d, r)
				}
			})
		}()
	}
	t.Cleanup(func() { c.stop() })
	return c
}

// stop cancels the Consume and returns its error; it fails the test if
// Consume does not return.
func (c *consumer) stop() error {
	c.once.Do(func() {
		c.cancel()
		timeout := time.After(wait)
		for range c.n {
			select {
			case err := <-c.done:
				if c.err == nil {
					c.err = err
				}
			case <-timeout:
				c.err = errors.New("Consume did not return after its context was cancelled")
				c.t.Error(c.err)
				return
			}
		}
	})
	return c.err
}

func (c *consumer) snapshot() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.got...)
}

func (c *consumer) ids() []string {
	var out []string
	for _, r := range c.snapshot() {
		out = append(out, r.id)
	}
	return out
}

func (c *consumer) count(id string) int {
	n := 0
	for _, r := range c.snapshot() {
		if r.id == id {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or wait passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, wait, what, cond)
}

func equalIDs(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %s, want %s (order or content differs)", i, got[i], want[i])
		}
	}
}

// sameEnvelope compares every attribute.
func sameEnvelope(got, want *envelope.Envelope) error {
	var diffs []string
	cmp := func(name, g, w string) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s: got %q, want %q", name, g, w))
		}
	}
	cmp("ID", got.ID, want.ID)
	cmp("Type", got.Type, want.Type)
	cmp("Version", strconv.Itoa(got.Version), strconv.Itoa(want.Version))
	cmp("Kind", string(got.Kind), string(want.Kind))
	cmp("Source", got.Source, want.Source)
	cmp("Key", got.Key, want.Key)
	cmp("CorrelationID", got.CorrelationID, want.CorrelationID)
	cmp("CausationID", got.CausationID, want.CausationID)
	cmp("TraceParent", got.TraceParent, want.TraceParent)
	cmp("TraceState", got.TraceState, want.TraceState)
	cmp("DataContentType", got.DataContentType, want.DataContentType)
	if !got.Time.Equal(want.Time) {
		diffs = append(diffs, fmt.Sprintf("Time: got %v, want %v", got.Time, want.Time))
	}
	if !bytes.Equal(got.Data, want.Data) {
		diffs = append(diffs, fmt.Sprintf("Data: got %q, want %q", got.Data, want.Data))
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// ---- subtests --------------------------------------------------------------

func (s *suite) publishConsumeInOrder(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	es := newEvents(typ, envelope.KindIntegration, 200)
	publish(t, b, es[:150]...)
	const batch = 16
	c := startConsume(t, b, sub, batch, nil)
	publish(t, b, es[150:]...) // some while consuming
	waitFor(t, "200 events", func() bool { return len(c.snapshot()) >= len(es) })
	if err := c.stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	equalIDs(t, c.ids(), ids(es))
	c.mu.Lock()
	defer c.mu.Unlock()
	multi := false
	for _, n := range c.sizes {
		if n < 1 || n > batch {
			t.Fatalf("handler got a batch of %d, want 1..%d", n, batch)
		}
		multi = multi || n > 1
	}
	if !multi {
		t.Logf("note: every batch had one event (%d batches)", len(c.sizes))
	}
	var last uint64
	for _, r := range c.got {
		if seq := r.d.Sequence(); seq <= last {
			t.Fatalf("event %s has Sequence %d after %d: want increasing in publish order", r.id, seq, last)
		} else {
			last = seq
		}
		if r.num != 1 {
			t.Fatalf("event %s delivered with NumDelivered %d, want 1", r.id, r.num)
		}
	}
}

func fullEvent(typ string, kind envelope.Kind) *envelope.Envelope {
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i)
	}
	now := time.Now().UTC()
	return &envelope.Envelope{
		ID:              envelope.NewID(now),
		Type:            typ,
		Version:         3,
		Kind:            kind,
		Source:          "brokertest/round-trip",
		Key:             "customer-42/été",
		Time:            time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.UTC),
		CorrelationID:   envelope.NewID(now),
		CausationID:     envelope.NewID(now),
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		DataContentType: "application/octet-stream",
		Data:            data,
	}
}

func (s *suite) roundTripLossless(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	full := fullEvent(typ, envelope.KindIntegration)
	minimal := &envelope.Envelope{ID: envelope.NewID(time.Now()), Type: typ, Version: 1,
		Kind: envelope.KindIntegration, Source: "s", Time: time.Now().UTC()}
	want := []*envelope.Envelope{full, minimal}
	publish(t, b, want...)
	c := startConsumeAll(t, b, sub, 10, nil)
	waitFor(t, "2 events", func() bool { return len(c.snapshot()) >= 2 })
	got := c.snapshot()
	if got[0].id != full.ID { // on different partitions: any order
		got[0], got[1] = got[1], got[0]
	}
	for i, r := range got[:2] {
		h := r.d.Header()
		for k := range h {
			if k != strings.ToLower(k) {
				t.Errorf("header key %q is not lower case", k)
			}
		}
		if r.subject == "" {
			t.Error("Subject() is empty")
		}
		e, err := envelope.FromBinary(h, r.d.Data())
		if err != nil {
			t.Fatalf("FromBinary of delivery %d: %v (headers %v)", i, err, h)
		}
		if err := sameEnvelope(e, want[i]); err != nil {
			t.Errorf("event %d round trip: %v", i, err)
		}
	}
}

func (s *suite) notificationEvents(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindNotification, 10*time.Second)
	provision(t, b, sub)
	e := fullEvent(typ, envelope.KindNotification)
	// An integration event of the same type is another event stream: the
	// notification subscription must not get it.
	other := newEvent(typ, envelope.KindIntegration, 1)
	intSub := subscription(svc, name+"-int", typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, intSub)
	publish(t, b, other, e)
	c := startConsume(t, b, sub, 10, nil)
	waitFor(t, "the notification", func() bool { return len(c.snapshot()) >= 1 })
	r := c.snapshot()[0]
	got, err := envelope.FromBinary(r.d.Header(), r.d.Data())
	if err != nil {
		t.Fatal(err)
	}
	if err := sameEnvelope(got, e); err != nil {
		t.Fatalf("notification round trip: %v", err)
	}
	ci := startConsume(t, b, intSub, 10, nil)
	waitFor(t, "the integration event", func() bool { return len(ci.snapshot()) >= 1 })
	if id := ci.snapshot()[0].id; id != other.ID {
		t.Fatalf("integration subscription got %s, want %s", id, other.ID)
	}
	if n := c.count(other.ID); n != 0 {
		t.Fatalf("notification subscription got the integration event")
	}
}

func (s *suite) publishDomainEventFails(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	good1 := newEvent(typ, envelope.KindIntegration, 1)
	dom := newEvent(typ, envelope.KindDomain, 2)
	good2 := newEvent(typ, envelope.KindIntegration, 3)
	errs := b.Publish(ctxT(t), []*envelope.Envelope{good1, dom, good2})
	if len(errs) != 3 {
		t.Fatalf("got %d errors, want 3", len(errs))
	}
	if errs[1] == nil {
		t.Fatal("publishing a domain event succeeded; domain events must never reach the broker")
	}
	if errs[0] != nil {
		t.Fatalf("the valid event before the failure failed: %v", errs[0])
	}
	if errs[2] == nil {
		t.Fatal("the event after a failure was sent: a batch must stop at its first failure, or later events of a key would be stored before the failed one")
	}
	if errs := b.Publish(ctxT(t), nil); len(errs) != 0 {
		t.Fatalf("Publish(nil) returned %d errors", len(errs))
	}
	if errs := b.Publish(ctxT(t), []*envelope.Envelope{good2}); errs[0] != nil {
		t.Fatalf("re-publishing the stopped event: %v", errs[0])
	}
	c := startConsume(t, b, sub, 10, nil)
	waitFor(t, "the two valid events", func() bool { return len(c.snapshot()) >= 2 })
	equalIDs(t, c.ids()[:2], []string{good1.ID, good2.ID})
}

func (s *suite) publishCancelledContext(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	provision(t, b, subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs := b.Publish(ctx, newEvents(typ, envelope.KindIntegration, 3))
	for i, err := range errs {
		if err == nil {
			t.Fatalf("event %d: Publish with a cancelled context returned nil", i)
		}
	}
}

func (s *suite) dedupByID(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	e := newEvent(typ, envelope.KindIntegration, 1)
	publish(t, b, e)
	publish(t, b, e)    // again, alone
	publish(t, b, e, e) // twice in one batch
	copyOfE := *e
	publish(t, b, &copyOfE) // an equal envelope, another pointer
	marker := newEvent(typ, envelope.KindIntegration, 2)
	publish(t, b, marker)
	c := startConsume(t, b, sub, 10, nil)
	// Delivery is in stream order: once the marker is in, any duplicate
	// would be too.
	waitFor(t, "the marker event", func() bool { return c.count(marker.ID) >= 1 })
	if n := c.count(e.ID); n != 1 {
		t.Fatalf("event published 5 times was delivered %d times, want 1", n)
	}
}

func (s *suite) nakDelayRedelivers(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 30*time.Second) // redelivery must come from the Nak
	provision(t, b, sub)
	e := newEvent(typ, envelope.KindIntegration, 1)
	publish(t, b, e)
	const delay = time.Second
	var nakAt atomic.Int64
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		if r.num == 1 {
			nakAt.Store(time.Now().UnixNano())
			if err := d.Nak(delay); err != nil {
				t.Errorf("Nak: %v", err)
			}
			return
		}
		_ = d.Ack(ctx)
	})
	waitFor(t, "the redelivery", func() bool { return len(c.snapshot()) >= 2 })
	got := c.snapshot()
	if got[1].id != e.ID || got[1].num != 2 {
		t.Fatalf("second delivery: %s NumDelivered %d, want %s and 2", got[1].id, got[1].num, e.ID)
	}
	if el := got[1].at.Sub(time.Unix(0, nakAt.Load())); el < delay*9/10 {
		t.Fatalf("redelivered %v after Nak(%v)", el, delay)
	}
}

func (s *suite) ackWaitRedelivers(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	const ackWait = time.Second
	sub := subscription(svc, name, typ, envelope.KindIntegration, ackWait)
	provision(t, b, sub)
	e := newEvent(typ, envelope.KindIntegration, 1)
	publish(t, b, e)
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		if r.num >= 2 {
			_ = d.Ack(ctx)
		} // the first delivery is left unsettled
	})
	waitFor(t, "the redelivery", func() bool { return len(c.snapshot()) >= 2 })
	got := c.snapshot()
	if got[1].id != e.ID || got[1].num != 2 {
		t.Fatalf("second delivery: %s NumDelivered %d, want %s and 2", got[1].id, got[1].num, e.ID)
	}
	if el := got[1].at.Sub(got[0].at); el < ackWait*8/10 {
		t.Fatalf("redelivered %v after the first delivery, AckWait is %v", el, ackWait)
	}
}

func (s *suite) inProgressPostpones(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	// Long enough that a test process starved of CPU for a while (the
	// race detector on a loaded machine) still reports progress in time.
	const ackWait = 2 * time.Second
	sub := subscription(svc, name, typ, envelope.KindIntegration, ackWait)
	provision(t, b, sub)
	e := newEvent(typ, envelope.KindIntegration, 1)
	publish(t, b, e)
	var settled atomic.Bool
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		// Work for 2 AckWaits, reporting progress, then ack.
		for range 16 {
			if err := d.InProgress(); err != nil {
				t.Errorf("InProgress: %v", err)
			}
			time.Sleep(ackWait / 8)
		}
		if err := d.Ack(ctx); err != nil {
			t.Errorf("Ack after InProgress: %v", err)
		}
		settled.Store(true)
	})
	waitFor(t, "the ack", settled.Load)
	time.Sleep(ackWait + ackWait/4)
	if n := c.count(e.ID); n != 1 {
		t.Fatalf("event delivered %d times despite InProgress, want 1", n)
	}
}

func (s *suite) termNeverRedelivered(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	const ackWait = time.Second
	sub := subscription(svc, name, typ, envelope.KindIntegration, ackWait)
	provision(t, b, sub)
	termed := newEvent(typ, envelope.KindIntegration, 1)
	acked := newEvent(typ, envelope.KindIntegration, 2)
	publish(t, b, termed, acked)
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		if r.id == termed.ID {
			if err := d.Term(); err != nil {
				t.Errorf("Term: %v", err)
			}
			return
		}
		_ = d.Ack(ctx)
	})
	waitFor(t, "both events", func() bool { return len(c.snapshot()) >= 2 })
	time.Sleep(ackWait*2 + ackWait/2)
	if n := c.count(termed.ID); n != 1 {
		t.Fatalf("terminated event delivered %d times, want 1", n)
	}
}

// competingKind is the kind of subscription whose Consume calls compete for
// events: integration, unless the broker claims integration subscriptions
// (broker.Claimer), whose partitions go to one Consume at a time.
func competingKind(b broker.Broker) envelope.Kind {
	if c, ok := b.(broker.Claimer); ok && c.ClaimsInOrder(broker.Subscription{Kind: envelope.KindIntegration}) {
		return envelope.KindNotification
	}
	return envelope.KindIntegration
}

func (s *suite) competingConsumers(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	kind := competingKind(b)
	sub := subscription(svc, name, typ, kind, 20*time.Second)
	provision(t, b, sub)
	var mu sync.Mutex
	handledBy := map[string][]int{}
	mk := func(who int) settle {
		return func(ctx context.Context, d broker.Delivery, r received) {
			mu.Lock()
			handledBy[r.id] = append(handledBy[r.id], who)
			mu.Unlock()
			time.Sleep(time.Millisecond) // let the other consumer have a go
			if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("Ack: %v", err)
			}
		}
	}
	c1 := startConsume(t, b, sub, 8, mk(1))
	c2 := startConsume(t, b, sub, 8, mk(2))
	time.Sleep(300 * time.Millisecond) // both pulling
	es := newEvents(typ, kind, 300)
	publish(t, b, es...)
	waitFor(t, "every event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handledBy) >= len(es)
	})
	time.Sleep(300 * time.Millisecond) // room for a wrong second delivery
	for _, c := range []*consumer{c1, c2} {
		if err := c.stop(); err != nil {
			t.Fatalf("Consume: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	per := map[int]int{}
	for _, e := range es {
		who := handledBy[e.ID]
		if len(who) != 1 {
			t.Fatalf("event %s handled %d times (by %v), want once", e.ID, len(who), who)
		}
		per[who[0]]++
	}
	if per[1] == 0 || per[2] == 0 {
		t.Fatalf("events were not shared: consumer 1 got %d, consumer 2 got %d", per[1], per[2])
	}
	t.Logf("consumer 1 handled %d, consumer 2 handled %d", per[1], per[2])
}

func (s *suite) fanOut(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	subA := subscription(svc+"-a", name, typ, envelope.KindIntegration, 10*time.Second)
	subB := subscription(svc+"-b", name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, subA, subB)
	es := newEvents(typ, envelope.KindIntegration, 50)
	publish(t, b, es...)
	ca := startConsume(t, b, subA, 7, nil)
	cb := startConsume(t, b, subB, 64, nil)
	waitFor(t, "all events on both subscriptions", func() bool {
		return len(ca.snapshot()) >= len(es) && len(cb.snapshot()) >= len(es)
	})
	equalIDs(t, ca.ids(), ids(es))
	equalIDs(t, cb.ids(), ids(es))
}

func (s *suite) replayOnlyNamed(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	subA := subscription(svc+"-a", name, typ, envelope.KindIntegration, 10*time.Second)
	subB := subscription(svc+"-b", name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, subA, subB)
	e := fullEvent(typ, envelope.KindIntegration)
	publish(t, b, e)
	ca := startConsumeAll(t, b, subA, 10, nil)
	cb := startConsumeAll(t, b, subB, 10, nil)
	waitFor(t, "the event on both", func() bool { return ca.count(e.ID) == 1 && cb.count(e.ID) == 1 })

	if err := b.Replay(ctxT(t), subA.Service, subA.Name, e); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if err := b.Replay(ctxT(t), subA.Service, subA.Name, e); err != nil { // not swallowed as a duplicate
		t.Fatalf("second Replay: %v", err)
	}
	marker := newEvent(typ, envelope.KindIntegration, 2)
	publish(t, b, marker)
	waitFor(t, "the replays and the marker on A", func() bool { return ca.count(e.ID) == 3 && ca.count(marker.ID) == 1 })
	waitFor(t, "the marker on B", func() bool { return cb.count(marker.ID) == 1 })
	if n := cb.count(e.ID); n != 1 {
		t.Fatalf("subscription B got the event %d times, want 1: the replay leaked", n)
	}
	for _, r := range ca.snapshot() {
		if r.id != e.ID {
			continue
		}
		got, err := envelope.FromBinary(r.d.Header(), r.d.Data())
		if err != nil {
			t.Fatal(err)
		}
		if err := sameEnvelope(got, e); err != nil {
			t.Fatalf("replayed event differs: %v", err)
		}
	}
}

func (s *suite) consumeNotProvisioned(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	try := func(when string) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := b.Consume(ctx, sub, 10, func(context.Context, []broker.Delivery) {})
		if !errors.Is(err, broker.ErrNotProvisioned) {
			t.Fatalf("Consume %s: got %v, want an error wrapping ErrNotProvisioned", when, err)
		}
	}
	try("before any Provision")
	other := subscription(svc, name+"-other", typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, other)
	try("after Provision of another subscription")
}

func (s *suite) provisionIdempotent(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	provision(t, b, sub)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			errs <- b.Provision(ctxT(t), broker.Topology{Service: svc, Subscriptions: []broker.Subscription{sub}})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Provision: %v", err)
		}
	}
	e := newEvent(typ, envelope.KindIntegration, 1)
	publish(t, b, e)
	c := startConsume(t, b, sub, 10, nil)
	waitFor(t, "the event", func() bool { return c.count(e.ID) == 1 })
}

func (s *suite) publishDeadLetter(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	e := fullEvent(typ, envelope.KindIntegration)
	h, body := envelope.ToBinary(e)
	if err := b.PublishDeadLetter(ctxT(t), broker.DeadLetter{
		Event: e, RawHeader: h, RawData: body, Service: svc, Subscription: name,
		Reason: "exhausted", LastError: "boom", Attempts: 5, Time: time.Now(),
	}); err != nil {
		t.Fatalf("PublishDeadLetter: %v", err)
	}
	if err := b.PublishDeadLetter(ctxT(t), broker.DeadLetter{
		RawHeader: map[string]string{"ce-id": "??", "x-odd": "v"}, RawData: []byte{0xff, 0x00},
		Service: svc, Subscription: name, Reason: "malformed", LastError: "bad header", Attempts: 1,
	}); err != nil {
		t.Fatalf("PublishDeadLetter of an undecodable message: %v", err)
	}
}

func (s *suite) consumeReturnsOnCancel(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	c := startConsume(t, b, sub, 10, nil)
	e := newEvent(typ, envelope.KindIntegration, 1)
	publish(t, b, e)
	waitFor(t, "the event", func() bool { return c.count(e.ID) == 1 })
	if err := c.stop(); err != nil {
		t.Fatalf("Consume returned %v after its context was cancelled, want nil", err)
	}
}

func (s *suite) closeStopsConsume(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	held := make(chan broker.Delivery, 1)
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		select {
		case held <- d: // left unsettled
		default:
		}
	})
	publish(t, b, newEvent(typ, envelope.KindIntegration, 1))
	var d broker.Delivery
	select {
	case d = <-held:
	case <-time.After(wait):
		t.Fatal("no delivery")
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-c.done:
		if !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("Consume returned %v when the broker closed, want ErrClosed", err)
		}
		c.once.Do(func() {}) // already returned
	case <-time.After(wait):
		t.Fatal("Consume did not return when the broker closed")
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	if err := d.Ack(context.Background()); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Ack after Close: got %v, want ErrClosed", err)
	}
	if err := d.Nak(0); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Nak after Close: got %v, want ErrClosed", err)
	}
}

func (s *suite) callsAfterCloseFail(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := ctxT(t)
	e := newEvent(typ, envelope.KindIntegration, 1)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", what, err)
		}
	}
	errs := b.Publish(ctx, []*envelope.Envelope{e})
	if len(errs) != 1 {
		t.Fatalf("Publish returned %d errors for 1 event", len(errs))
	}
	check("Publish", errs[0])
	check("Consume", b.Consume(ctx, sub, 10, func(context.Context, []broker.Delivery) {}))
	check("Provision", b.Provision(ctx, broker.Topology{Service: svc, Subscriptions: []broker.Subscription{sub}}))
	check("PublishDeadLetter", b.PublishDeadLetter(ctx, broker.DeadLetter{Event: e, Service: svc, Subscription: name, Reason: "x"}))
	check("Replay", b.Replay(ctx, svc, name, e))
}

func (s *suite) persistentAcrossBrokers(t *testing.T) {
	b1 := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 2*time.Second)
	provision(t, b1, sub)
	es := newEvents(typ, envelope.KindIntegration, 40)
	publish(t, b1, es...)
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b2 := s.newBroker(t)
	provision(t, b2, sub)
	c2 := startConsume(t, b2, sub, 5, func(ctx context.Context, d broker.Delivery, r received) {
		if r.num == 1 && len(r.id) > 0 {
			for _, e := range es[:20] {
				if e.ID == r.id {
					if err := d.Ack(ctx); err != nil {
						t.Errorf("Ack: %v", err)
					}
					return
				}
			}
		}
		// the last 20 are left unacked
	})
	waitFor(t, "40 events on the second broker", func() bool { return len(c2.snapshot()) >= len(es) })
	if err := c2.stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	equalIDs(t, c2.ids()[:len(es)], ids(es))
	if err := b2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b3 := s.newBroker(t)
	c3 := startConsume(t, b3, sub, 5, nil)
	// The 20 unacked events come back (after AckWait); the 20 acked ones
	// never do.
	want := map[string]bool{}
	for _, e := range es[20:] {
		want[e.ID] = true
	}
	waitFor(t, "the 20 unacked events on the third broker", func() bool {
		seen := map[string]bool{}
		for _, id := range c3.ids() {
			if want[id] {
				seen[id] = true
			}
		}
		return len(seen) == len(want)
	})
	for _, e := range es[:20] {
		if n := c3.count(e.ID); n != 0 {
			t.Fatalf("acked event %s delivered again by the third broker", e.ID)
		}
	}
}

// pendingState checks broker.PendingStater, for transports that implement
// it: the count of unacknowledged events, and that they lie above the ack
// floor and at or below the delivered sequence.
func (s *suite) pendingState(t *testing.T) {
	b := s.newBroker(t)
	ps, ok := b.(broker.PendingStater)
	if !ok {
		t.Skip("transport does not implement broker.PendingStater")
	}
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 30*time.Second) // no redelivery during the test
	provision(t, b, sub)
	es := newEvents(typ, envelope.KindIntegration, 6)
	publish(t, b, es...)
	// Acknowledge the 1st, 2nd and 4th; keep the 3rd, 5th and 6th.
	keep := map[string]bool{es[2].ID: true, es[4].ID: true, es[5].ID: true}
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		if !keep[r.id] {
			if err := d.Ack(ctx); err != nil {
				t.Errorf("Ack: %v", err)
			}
		}
	})
	waitFor(t, "6 deliveries", func() bool { return len(c.snapshot()) >= len(es) })
	got := c.snapshot()
	equalIDs(t, c.ids(), ids(es))
	seqs := make([]uint64, len(got))
	for i, r := range got {
		seqs[i] = r.d.Sequence()
		if seqs[i] == 0 || i > 0 && seqs[i] <= seqs[i-1] {
			t.Fatalf("stream sequences %v: want increasing and non-zero", seqs[:i+1])
		}
	}
	st, err := ps.PendingState(ctxT(t), sub)
	if err != nil {
		t.Fatalf("PendingState: %v", err)
	}
	if st.Pending != 3 {
		t.Errorf("Pending %d, want 3 (the 3rd, 5th and 6th events are not acknowledged)", st.Pending)
	}
	if st.Delivered < seqs[5] {
		t.Errorf("Delivered %d, below the last delivery's sequence %d", st.Delivered, seqs[5])
	}
	if st.AckFloor >= seqs[2] {
		t.Errorf("AckFloor %d, at or above the unacknowledged 3rd event's sequence %d", st.AckFloor, seqs[2])
	}
	if pc, ok := b.(broker.PendingCounter); ok {
		if n, err := pc.Pending(ctxT(t), sub); err != nil || n != st.Pending {
			t.Errorf("Pending() = %d, %v; PendingState says %d", n, err, st.Pending)
		}
	}
	for _, r := range got {
		if keep[r.id] {
			if err := r.d.Ack(ctxT(t)); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
	}
	st, err = ps.PendingState(ctxT(t), sub)
	if err != nil {
		t.Fatalf("PendingState: %v", err)
	}
	if st.Pending != 0 || st.Delivered < seqs[5] {
		t.Errorf("after acking every event: Pending %d, Delivered %d; want 0 and at least %d", st.Pending, st.Delivered, seqs[5])
	}
}
