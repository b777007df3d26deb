package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testlog"
	"github.com/heraldhq/herald/store"
)

// In-memory fakes of the relay's seams: an outbox table with range marks,
// a lease, producer-side dead letters and rows a test can hide (rows that
// become readable late, as on PostgreSQL), and a broker that stores what it
// acknowledges and fails events on demand. Both can be closed.

type fakeRow struct {
	seq       int64
	e         *envelope.Envelope
	published bool // OutboxMarkPublished
	hidden    bool // not readable yet
}

type fakeDL struct {
	id   int64
	park store.Park
}

type fakeStore struct {
	mu       sync.Mutex
	serial   bool
	rows     []*fakeRow // in seq order; parked rows leave
	seq      int64
	marks    []int64 // OutboxMarkUpTo's UpTo values, in order
	marked   [][]int64
	cursors  int      // OutboxCursor calls
	afters   []int64  // OutboxPendingList's After values, in order
	dls      []fakeDL // producer-side dead letters
	dlID     int64
	other    string    // another holder of the lease, "" if none
	holder   string    // the lease's holder
	until    time.Time // its expiry
	releases int
	closed   bool
	failMark int // OutboxMarkUpTo calls still to fail
}

func (s *fakeStore) live() error {
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// add appends keyed events (key "" for keyless) and returns their seqs.
func (s *fakeStore) add(keys ...string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var seqs []int64
	for _, k := range keys {
		s.seq++
		e := &envelope.Envelope{ID: fmt.Sprintf("e%d", s.seq), Type: "test.happened", Key: k}
		s.rows = append(s.rows, &fakeRow{seq: s.seq, e: e})
		seqs = append(seqs, s.seq)
	}
	return seqs
}

// addN appends n keyless events.
func (s *fakeStore) addN(n int) { s.add(make([]string, n)...) }

func (s *fakeStore) setHidden(seq int64, hidden bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rows {
		if r.seq == seq {
			r.hidden = hidden
		}
	}
}

func (s *fakeStore) maxMark() int64 {
	if len(s.marks) == 0 {
		return 0
	}
	return slices.Max(s.marks)
}

// pending is how many rows are not published yet.
func (s *fakeStore) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.rows {
		if !r.published && r.seq > s.maxMark() {
			n++
		}
	}
	return n
}

// republish makes every row unpublished again and drops the marks, as
// OutboxRepublishSince does.
func (s *fakeStore) republish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = nil
	for _, r := range s.rows {
		r.published = false
	}
}

func (s *fakeStore) setOther(holder string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.other = holder
}

func (s *fakeStore) LeaseAcquire(_ context.Context, p store.LeaseAcquireParams) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.live(); err != nil {
		return false, err
	}
	if s.other != "" {
		return false, nil
	}
	if s.holder != "" && s.holder != p.Holder && time.Now().Before(s.until) {
		return false, nil
	}
	s.holder, s.until = p.Holder, time.Now().Add(p.TTL)
	return true, nil
}

func (s *fakeStore) LeaseRelease(_ context.Context, _, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holder == holder {
		s.holder = ""
		s.releases++
	}
	return nil
}

func (s *fakeStore) OutboxCursor(context.Context, string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cursors++
	return s.maxMark(), s.live()
}

func (s *fakeStore) OutboxPendingList(_ context.Context, p store.OutboxPendingListParams) ([]store.OutboxRow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.live(); err != nil {
		return nil, err
	}
	s.afters = append(s.afters, p.After)
	var out []store.OutboxRow
	for _, r := range s.rows {
		if len(out) < p.Limit && !r.published && !r.hidden && r.seq > p.After && r.seq > s.maxMark() {
			out = append(out, store.OutboxRow{Seq: r.seq, Event: r.e})
		}
	}
	return out, nil
}

func (s *fakeStore) OutboxParkedKeys(context.Context, string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.live(); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, d := range s.dls {
		if k := d.park.Row.Event.Key; k != "" {
			if _, ok := m[k]; !ok {
				m[k] = d.park.Row.Event.ID
			}
		}
	}
	return m, nil
}

func (s *fakeStore) OutboxPark(_ context.Context, _ string, ps []store.Park) ([]store.ParkResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.live(); err != nil {
		return nil, err
	}
	res := make([]store.ParkResult, len(ps))
	for i, p := range ps {
		at := slices.IndexFunc(s.rows, func(r *fakeRow) bool { return r.seq == p.Row.Seq })
		if at < 0 {
			res[i].Gone = true
			continue
		}
		if p.Reason == store.ReasonHeld && !slices.ContainsFunc(s.dls, func(d fakeDL) bool { return d.park.Row.Event.Key == p.Row.Event.Key }) {
			continue // the key is free again
		}
		s.rows = slices.Delete(s.rows, at, at+1)
		s.dlID++
		s.dls = append(s.dls, fakeDL{id: s.dlID, park: p})
		res[i].DeadLetter = s.dlID
	}
	return res, nil
}

func (s *fakeStore) OutboxMarkPublished(_ context.Context, seqs []int64, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.live(); err != nil {
		return err
	}
	s.marked = append(s.marked, slices.Clone(seqs))
	for _, r := range s.rows {
		if slices.Contains(seqs, r.seq) {
			r.published = true
		}
	}
	return nil
}

func (s *fakeStore) OutboxMarkUpTo(_ context.Context, p store.OutboxMarkUpToParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.live(); err != nil {
		return err
	}
	if s.failMark > 0 {
		s.failMark--
		return errors.New("disk I/O error")
	}
	if s.maxMark() < p.From {
		return store.ErrMarkMoved
	}
	s.marks = append(s.marks, p.UpTo)
	return nil
}

func (s *fakeStore) OutboxStats(context.Context, string) (int64, time.Time, error) {
	n := s.pending()
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(n), time.Now(), s.live()
}

func (s *fakeStore) DelaysVisibility() bool { return s.serial }

func (s *fakeStore) markCalls() (upTo []int64, published [][]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.marks), slices.Clone(s.marked)
}

func (s *fakeStore) parked() []store.Park {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []store.Park
	for _, d := range s.dls {
		ps = append(ps, d.park)
	}
	return ps
}

// fakeBroker acknowledges the events its fail function lets through; it
// stops a call at the first failure (the events after it fail as not sent).
type fakeBroker struct {
	mu       sync.Mutex
	calls    int
	attempts []string                         // every event id handed to Publish, in order
	stored   []string                         // the ids it acknowledged, deduplicated, in order
	fail     func(e *envelope.Envelope) error // nil: acknowledge all
}

var errNotSent = fmt.Errorf("not sent after an earlier failure: %w", broker.ErrTransient)

func (b *fakeBroker) Publish(_ context.Context, events []*envelope.Envelope) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	errs := make([]error, len(events))
	var failed bool
	for i, e := range events {
		b.attempts = append(b.attempts, e.ID)
		switch {
		case failed:
			errs[i] = errNotSent
		case b.fail != nil:
			errs[i] = b.fail(e)
		}
		if errs[i] != nil {
			failed = true
			continue
		}
		if !slices.Contains(b.stored, e.ID) {
			b.stored = append(b.stored, e.ID)
		}
	}
	return errs
}

func (b *fakeBroker) setFail(f func(e *envelope.Envelope) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = f
}

func (b *fakeBroker) storedIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.stored)
}

func (b *fakeBroker) attemptIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.attempts)
}

// fakeObserver counts what it hears.
type fakeObserver struct {
	mu        sync.Mutex
	published int
	parked    []string // reason:event id
	attempts  []int
}

func (o *fakeObserver) Observing() bool { return true }
func (o *fakeObserver) Published(_ context.Context, events []*envelope.Envelope, _ time.Time, _ time.Duration, _ []error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.published += len(events)
}
func (o *fakeObserver) Parked(_ context.Context, e *envelope.Envelope, _ time.Time, reason string, attempts int, _ string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.parked = append(o.parked, reason+":"+e.ID)
	o.attempts = append(o.attempts, attempts)
}

type testBundle struct {
	store    *fakeStore
	broker   *fakeBroker
	observer *fakeObserver
	logs     *testlog.Buffer
	failed   *atomic.Int64 // PublishFailed calls
}

// setup returns a relay over fresh fakes, not started; tune adjusts its
// config (batch 7, poll 1h, lease 9s, mark 100ms, drain 5s) before New.
func setup(t *testing.T, serial bool, tune func(*Config)) (*Relay, *testBundle) {
	t.Helper()
	tb := &testBundle{store: &fakeStore{serial: serial}, broker: &fakeBroker{}, observer: &fakeObserver{},
		logs: &testlog.Buffer{}, failed: new(atomic.Int64)}
	cfg := Config{
		Service: "shop", Holder: "me",
		BatchSize: 7, PollInterval: time.Hour, LeaseTTL: 9 * time.Second,
		Store: tb.store, Broker: tb.broker, Observer: tb.observer,
		PublishFailed: func() { tb.failed.Add(1) },
		Logger:        slog.New(slog.NewTextHandler(tb.logs, nil)),
	}
	if tune != nil {
		tune(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, tb
}

// ids are the event ids of seqs from to upto.
func ids(from, upto int) []string {
	var out []string
	for i := from; i <= upto; i++ {
		out = append(out, fmt.Sprintf("e%d", i))
	}
	return out
}

var errWeird = errors.New("something no sentinel classifies")

// get reads a field of the fake under its lock.
func get[T any](mu *sync.Mutex, f func() T) T {
	mu.Lock()
	defer mu.Unlock()
	return f()
}
