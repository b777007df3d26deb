package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// In-memory fakes of the consumer's seams: a broker that hands the batches
// a test sends and records how each delivery was settled, and a store whose
// transactions keep an inbox, dead letters and the handlers' effects, and
// can fail on demand.

type fakeDelivery struct {
	b        *fakeBroker
	seq, num uint64
	header   map[string]string
	data     []byte
}

func (d *fakeDelivery) Header() map[string]string { return d.header }
func (d *fakeDelivery) Data() []byte              { return d.data }
func (d *fakeDelivery) Subject() string           { return "test" }
func (d *fakeDelivery) NumDelivered() uint64      { return d.num }
func (d *fakeDelivery) Sequence() uint64          { return d.seq }
func (d *fakeDelivery) Ack(context.Context) error { return d.settle("ack") }
func (d *fakeDelivery) AckNoWait() error          { return d.settle("ack") }
func (d *fakeDelivery) Nak(time.Duration) error   { return d.settle("nak") }
func (d *fakeDelivery) InProgress() error         { return d.settle("progress") }
func (d *fakeDelivery) Term() error               { return d.settle("term") }
func (d *fakeDelivery) settle(what string) error {
	if d.b != nil {
		d.b.mu.Lock()
		d.b.settled[d.seq] = append(d.b.settled[d.seq], what)
		d.b.mu.Unlock()
	}
	return nil
}

type fakeBroker struct {
	batches chan []broker.Delivery
	mu      sync.Mutex
	settled map[uint64][]string // per sequence: ack, nak, progress, term
	dls     []broker.DeadLetter
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{batches: make(chan []broker.Delivery), settled: map[uint64][]string{}}
}

func (b *fakeBroker) Consume(ctx context.Context, _ broker.Subscription, _ int, h broker.Handler) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case batch := <-b.batches:
			h(ctx, batch)
		}
	}
}

func (b *fakeBroker) PublishDeadLetter(_ context.Context, d broker.DeadLetter) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dls = append(b.dls, d)
	return nil
}

// count is how often seq was settled as what.
func (b *fakeBroker) count(seq uint64, what string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, w := range b.settled[seq] {
		if w == what {
			n++
		}
	}
	return n
}

// staterBroker tells its pending state (broker.PendingStater) and its
// reconnects (broker.Resumer).
type staterBroker struct {
	*fakeBroker
	epoch atomic.Uint64
	state atomic.Pointer[broker.PendingState]
	asks  atomic.Int64
}

func (b *staterBroker) Epoch() uint64 { return b.epoch.Load() }
func (b *staterBroker) PendingState(context.Context, broker.Subscription) (broker.PendingState, error) {
	b.asks.Add(1)
	return *b.state.Load(), nil
}
func (b *staterBroker) set(pending int, floor, delivered uint64) {
	b.state.Store(&broker.PendingState{Pending: pending, AckFloor: floor, Delivered: delivered})
}

// claimerBroker is a staterBroker that claims in order (broker.Claimer)
// when claims is set: it would have a hold begin, were it not for that.
type claimerBroker struct {
	*staterBroker
	claims bool
	asked  atomic.Int64 // ClaimsInOrder calls
}

func (b *claimerBroker) ClaimsInOrder(broker.Subscription) bool {
	b.asked.Add(1)
	return b.claims
}

// counterBroker tells only a bare count (broker.PendingCounter) and its
// reconnects.
type counterBroker struct {
	*fakeBroker
	epoch   atomic.Uint64
	pending atomic.Int64
}

func (b *counterBroker) Epoch() uint64 { return b.epoch.Load() }
func (b *counterBroker) Pending(context.Context, broker.Subscription) (int, error) {
	return int(b.pending.Load()), nil
}

var errDB = errors.New("fake database down")

type fakeStore struct {
	mu         sync.Mutex
	inbox      map[string]bool
	dead       []store.DeadLetter
	effects    []uint64 // committed handler runs, by event number, in commit order
	runs       map[uint64]int
	failBegin  int // fail the next n Begins
	failCommit int // fail the next n Commits
	failClaims int // fail the next n InboxClaimMany
	handler    func(n uint64) error
}

func (s *fakeStore) Begin(context.Context) (Tx, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failBegin > 0 {
		s.failBegin--
		return nil, errDB
	}
	return &fakeTx{s: s}, nil
}

type fakeTx struct {
	s       *fakeStore
	claims  []string
	dead    []store.DeadLetter
	effects []uint64
	sp      [3]int
	done    bool
}

func (t *fakeTx) InboxClaim(_ context.Context, _, id string) (bool, error) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.s.inbox[id] || slices.Contains(t.claims, id) {
		return false, nil
	}
	t.claims = append(t.claims, id)
	return true, nil
}

func (t *fakeTx) InboxClaimMany(ctx context.Context, inbox string, ids []string) ([]bool, error) {
	t.s.mu.Lock()
	fail := t.s.failClaims > 0
	if fail {
		t.s.failClaims--
	}
	t.s.mu.Unlock()
	if fail {
		return nil, errDB
	}
	fresh := make([]bool, len(ids))
	for i, id := range ids {
		fresh[i], _ = t.InboxClaim(ctx, inbox, id)
	}
	return fresh, nil
}

func (t *fakeTx) TxSavepoint(context.Context) error {
	t.sp = [3]int{len(t.claims), len(t.dead), len(t.effects)}
	return nil
}
func (t *fakeTx) TxSavepointRelease(context.Context) error { return nil }
func (t *fakeTx) TxSavepointRollback(context.Context) error {
	t.claims, t.dead, t.effects = t.claims[:t.sp[0]], t.dead[:t.sp[1]], t.effects[:t.sp[2]]
	return nil
}
func (t *fakeTx) TxHealthy(context.Context) error { return nil }
func (t *fakeTx) DeadLetterInsert(_ context.Context, dl store.DeadLetter) (int64, error) {
	t.dead = append(t.dead, dl)
	return int64(len(t.dead)), nil
}

func (t *fakeTx) Commit(context.Context) error {
	if t.done {
		panic("commit of a finished transaction")
	}
	t.done = true
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failCommit > 0 {
		s.failCommit--
		return errDB
	}
	for _, id := range t.claims {
		s.inbox[id] = true
	}
	s.dead = append(s.dead, t.dead...)
	s.effects = append(s.effects, t.effects...)
	return nil
}

func (t *fakeTx) Rollback() error {
	t.done = true
	return nil
}

// handle is the Config.Handle of the tests: it counts the run and, unless
// the store's handler fails (or panics), records the event's number.
func (s *fakeStore) handle(_ context.Context, tx Tx, _ *envelope.Envelope, v any) error {
	n := v.(uint64)
	s.mu.Lock()
	s.runs[n]++
	h := s.handler
	s.mu.Unlock()
	if h != nil {
		if err := h(n); err != nil {
			return err
		}
	}
	ft := tx.(*fakeTx)
	ft.effects = append(ft.effects, n)
	return nil
}

func (s *fakeStore) committed() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.effects)
}

func (s *fakeStore) deadLetters() []store.DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dead)
}

func (s *fakeStore) runsOf(n uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[n]
}

// observed is one Handled report.
type observed struct {
	n       uint64
	outcome Outcome
	attempt int
}

type fakeObserver struct {
	mu       sync.Mutex
	handled  []observed
	consumed int
	batches  int
	dead     []string // reasons
	numOf    func(e *envelope.Envelope) uint64
}

func (o *fakeObserver) Observing() bool { return true }
func (o *fakeObserver) Batching() bool  { return true }
func (o *fakeObserver) Consumed(*envelope.Envelope, time.Time) {
	o.mu.Lock()
	o.consumed++
	o.mu.Unlock()
}
func (o *fakeObserver) Committed(context.Context, Tx) {}
func (o *fakeObserver) Batch(context.Context, time.Time, time.Duration, []envelope.Envelope) {
	o.mu.Lock()
	o.batches++
	o.mu.Unlock()
}
func (o *fakeObserver) Handled(_ context.Context, e *envelope.Envelope, _ time.Time, _ time.Duration, out Outcome, attempt int, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.handled = append(o.handled, observed{o.numOf(e), out, attempt})
}
func (o *fakeObserver) DeadLettered(_ context.Context, _ *envelope.Envelope, _ time.Time, reason string, _ int, _ string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead = append(o.dead, reason)
}

func (o *fakeObserver) reports() []observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.handled)
}

const testType = "shop.order.placed"

var (
	errVersion   = errors.New("version not taken")
	errPermanent = errors.New("permanent")
	errFlaky     = errors.New("flaky")
)

// testBundle is what setup gives a test besides the consumer.
type testBundle struct {
	broker   *fakeBroker
	store    *fakeStore
	observer *fakeObserver
	cfg      *Config
}

// setup builds a consumer over fresh fakes; wrap, when set, gives the
// broker the optional interfaces a test needs. Call it inside a synctest
// bubble; the consumer is not started.
func setup(t *testing.T, wrap func(*fakeBroker) Broker) (*Consumer, *testBundle) {
	t.Helper()
	fb := newFakeBroker()
	var b Broker = fb
	if wrap != nil {
		b = wrap(fb)
	}
	st := &fakeStore{inbox: map[string]bool{}, runs: map[uint64]int{}}
	obs := &fakeObserver{numOf: func(e *envelope.Envelope) uint64 { return numOf(t, e) }}
	c, err := New(Config{
		Subscription: broker.Subscription{Service: "billing", Name: "orders", Types: []string{testType},
			Kind: envelope.KindIntegration, AckWait: 10 * time.Second},
		Inbox:       "billing/orders",
		BatchSize:   16,
		Retry:       Retry{MaxAttempts: 3, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second},
		Decode:      func(e *envelope.Envelope) (any, error) { return decode(e) },
		IsVersion:   func(err error) bool { return errors.Is(err, errVersion) },
		IsPermanent: func(err error) bool { return errors.Is(err, errPermanent) },
		Handle:      st.handle,
		Broker:      b,
		Store:       st,
		Observer:    obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.testSignals = &testSignals{restarted: make(chan error, 16)}
	return c, &testBundle{broker: fb, store: st, observer: obs, cfg: &c.cfg}
}

type payload struct {
	N uint64 `json:"n"`
}

func decode(e *envelope.Envelope) (uint64, error) {
	if e.Version > 1 {
		return 0, fmt.Errorf("%w: v%d", errVersion, e.Version)
	}
	var p payload
	if err := json.Unmarshal(e.Data, &p); err != nil {
		return 0, err
	}
	return p.N, nil
}

func numOf(t *testing.T, e *envelope.Envelope) uint64 {
	n, err := decode(e)
	if err != nil {
		t.Errorf("observed an undecodable event: %v", err)
	}
	return n
}

// ev is event number n of key, delivered at stream sequence n.
func (tb *testBundle) ev(n uint64, key string) *fakeDelivery {
	return tb.event(n, key, testType, 1)
}

func (tb *testBundle) event(n uint64, key, typ string, version int) *fakeDelivery {
	data, _ := json.Marshal(payload{N: n})
	e := &envelope.Envelope{
		ID: fmt.Sprintf("ev-%d", n), Type: typ, Version: version, Kind: envelope.KindIntegration,
		Source: "shop", Key: key, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		DataContentType: "application/json", Data: data,
	}
	h, body := envelope.ToBinary(e)
	return &fakeDelivery{b: tb.broker, seq: n, num: 1, header: h, data: body}
}

// again is a redelivery of d.
func again(d *fakeDelivery) *fakeDelivery {
	r := *d
	r.num++
	return &r
}

// send hands the consumer one batch and waits until it did what it could.
func (tb *testBundle) send(ds ...*fakeDelivery) {
	batch := make([]broker.Delivery, len(ds))
	for i, d := range ds {
		batch[i] = d
	}
	tb.broker.batches <- batch
	synctest.Wait()
}
