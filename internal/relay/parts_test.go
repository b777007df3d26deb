package relay

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// partBroker is a fakeBroker with partitions: key "p<d>/…" goes to
// partition d, any other key (and no key) to 0. A partition can be down
// until a time: a call to it then takes hang (a stream electing a leader)
// and fails every event as transient, storing none.
type partBroker struct {
	*fakeBroker
	n int

	mu     sync.Mutex
	down   map[int]time.Time
	hang   time.Duration
	out    map[int]int // calls out per partition
	resent []string    // events sent again after the broker had stored them
	mixed  []string    // what went wrong: a call over two partitions, two calls out on one
}

var (
	_ broker.Partitioner = (*partBroker)(nil)
	_ Broker             = (*partBroker)(nil)
)

func (b *partBroker) Partitions() int { return b.n }

func (b *partBroker) Partition(key string) int {
	if len(key) >= 2 && key[0] == 'p' {
		if d, err := strconv.Atoi(key[1:2]); err == nil && d < b.n {
			return d
		}
	}
	return 0
}

func (b *partBroker) setDown(p int, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down == nil {
		b.down = map[int]time.Time{}
	}
	b.down[p] = until
}

func (b *partBroker) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	p := b.Partition(events[0].Key)
	b.mu.Lock()
	for _, e := range events {
		if b.Partition(e.Key) != p {
			b.mixed = append(b.mixed, fmt.Sprintf("one call for partitions %d and %d", p, b.Partition(e.Key)))
		}
	}
	if b.out == nil {
		b.out = map[int]int{}
	}
	if b.out[p]++; b.out[p] > 1 {
		b.mixed = append(b.mixed, fmt.Sprintf("%d calls out on partition %d", b.out[p], p))
	}
	until, hang := b.down[p], b.hang
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.out[p]--
		b.mu.Unlock()
	}()
	if !time.Now().Before(until) {
		stored := b.fakeBroker.storedIDs()
		for _, e := range events {
			if slices.Contains(stored, e.ID) {
				b.mu.Lock()
				b.resent = append(b.resent, e.ID)
				b.mu.Unlock()
			}
		}
		return b.fakeBroker.Publish(ctx, events)
	}
	t := time.NewTimer(min(hang, time.Until(until)))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	b.fakeBroker.mu.Lock()
	defer b.fakeBroker.mu.Unlock()
	b.fakeBroker.calls++
	errs := make([]error, len(events))
	for i, e := range events {
		b.fakeBroker.attempts = append(b.fakeBroker.attempts, e.ID)
		errs[i] = fmt.Errorf("partition %d has no leader: %w", p, broker.ErrTransient)
	}
	return errs
}

func (b *partBroker) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.mixed)
}

// setupParts is setup over a partBroker of n partitions.
func setupParts(t *testing.T, serial bool, n int, tune func(*Config)) (*Relay, *testBundle, *partBroker) {
	t.Helper()
	r, tb := setup(t, serial, tune)
	pb := &partBroker{fakeBroker: tb.broker, n: n, hang: 2 * time.Second}
	cfg := r.cfg
	cfg.Broker = pb
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, tb, pb
}

// addRound appends n events over partitions 0..3, two keys each, and adds
// their seqs to want, by partition.
func addRound(s *fakeStore, n int, want map[int][]int64) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("p%d/%c", i%4, 'a'+i/4%2)
	}
	for i, seq := range s.add(keys...) {
		want[i%4] = append(want[i%4], seq)
	}
}

// keyOf maps each event id to its key.
func (s *fakeStore) keyOf() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]string{}
	for _, r := range s.rows {
		m[r.e.ID] = r.e.Key
	}
	return m
}

// marked lists the seqs the table counts as published (a mark of their
// own, or a range mark over them).
func (s *fakeStore) markedSeqs() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, r := range s.rows {
		if r.published || r.seq <= s.maxMark() {
			out = append(out, r.seq)
		}
	}
	return out
}

// checkMarks fails if a row is marked that the broker never stored.
func checkMarks(t *testing.T, tb *testBundle) {
	t.Helper()
	stored := tb.broker.storedIDs()
	for _, seq := range tb.store.markedSeqs() {
		if !slices.Contains(stored, fmt.Sprintf("e%d", seq)) {
			t.Errorf("row %d marked published, never acknowledged", seq)
		}
	}
}

// checkOrder fails unless, per partition, the broker stored the events in
// seq order.
func checkOrder(t *testing.T, tb *testBundle, pb *partBroker) {
	t.Helper()
	keys := tb.store.keyOf()
	last := map[int]int{}
	for _, id := range tb.broker.storedIDs() {
		seq, _ := strconv.Atoi(strings.TrimPrefix(id, "e"))
		p := pb.Partition(keys[id])
		if seq < last[p] {
			t.Errorf("partition %d: e%d stored after e%d", p, seq, last[p])
		}
		last[p] = max(last[p], seq)
	}
	if ps := pb.problems(); len(ps) > 0 {
		t.Errorf("broker saw %v", ps)
	}
}

// checkDone fails unless the partitions were stored in order, every row is
// marked, and only acknowledged rows are.
func checkDone(t *testing.T, tb *testBundle, pb *partBroker) {
	t.Helper()
	checkOrder(t, tb, pb)
	checkMarks(t, tb)
	if n := tb.store.pending(); n != 0 {
		t.Errorf("%d rows unmarked", n)
	}
}

// wantPartition fails unless the broker stored want of partition p.
func wantPartition(t *testing.T, tb *testBundle, pb *partBroker, p int, want []string) {
	t.Helper()
	if got := storedOf(tb, pb, p); !slices.Equal(got, want) {
		t.Errorf("partition %d stored %v, want %v", p, got, want)
	}
}

// storedOf is what the broker stored of partition p, in order.
func storedOf(tb *testBundle, pb *partBroker, p int) []string {
	return inPartition(tb, pb, p, tb.broker.storedIDs())
}

// attemptsOf is what was handed to the broker of partition p, in order.
func attemptsOf(tb *testBundle, pb *partBroker, p int) []string {
	return inPartition(tb, pb, p, tb.broker.attemptIDs())
}

// inPartition keeps the event ids of partition p.
func inPartition(tb *testBundle, pb *partBroker, p int, ids []string) []string {
	keys := tb.store.keyOf()
	var out []string
	for _, id := range ids {
		if pb.Partition(keys[id]) == p {
			out = append(out, id)
		}
	}
	return out
}

func idsOf(seqs []int64) []string {
	out := make([]string, len(seqs))
	for i, s := range seqs {
		out[i] = fmt.Sprintf("e%d", s)
	}
	return out
}

// A partition whose publishes fail for 8 s (its stream electing a leader)
// holds back only its own rows: the other partitions are published and
// marked meanwhile, each in order; the failed partition is retried from
// its first unacknowledged row and catches up in order; no row is marked
// before the broker acknowledged it.
func TestPartitionOutageHoldsOnlyItsPartition(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, tb, pb := setupParts(t, serial, 4, nil)
				want := map[int][]int64{}
				addRound(tb.store, 20, want)
				start(t, r)
				for p := range 4 {
					wantPartition(t, tb, pb, p, idsOf(want[p]))
				}
				pb.setDown(2, time.Now().Add(8*time.Second))
				begin := time.Now()
				for time.Since(begin) < 8*time.Second {
					addRound(tb.store, 12, want)
					r.Wake()
					time.Sleep(time.Second)
					synctest.Wait()
					if time.Since(begin) >= 8*time.Second {
						break
					}
					for _, p := range []int{0, 1, 3} {
						if got := storedOf(tb, pb, p); !slices.Equal(got, idsOf(want[p])) {
							t.Fatalf("%v into the outage, partition %d stored %v, want %v", time.Since(begin), p, got, idsOf(want[p]))
						}
					}
					if n, w := tb.store.pending(), len(want[2])-20/4; n != w {
						t.Errorf("%v into the outage, %d rows unmarked, want %d (partition 2's since the outage)", time.Since(begin), n, w)
					}
					checkMarks(t, tb)
				}
				time.Sleep(10 * time.Second) // the outage ends; partition 2's backoff
				synctest.Wait()
				for p := range 4 {
					wantPartition(t, tb, pb, p, idsOf(want[p]))
				}
				if got := get(&pb.mu, func() []string { return slices.Clone(pb.resent) }); len(got) > 0 {
					t.Errorf("sent %v again once stored", got)
				}
				checkDone(t, tb, pb)
				if !strings.Contains(tb.logs.String(), "partition=2") {
					t.Errorf("partition 2's failure was not logged:\n%s", tb.logs)
				}
			})
		})
	}
}

// A relay that stops while a partition is behind leaves its rows
// unpublished in the table: the next relay on the same store sends them
// again, in order, and skips none; what was marked was acknowledged.
func TestPartitionOutageRestartRepublishes(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, tb, pb := setupParts(t, serial, 4, nil)
				want := map[int][]int64{}
				addRound(tb.store, 8, want)
				start(t, r)
				pb.setDown(2, time.Now().Add(8*time.Second))
				for range 3 {
					addRound(tb.store, 12, want)
					r.Wake()
					time.Sleep(time.Second)
					synctest.Wait()
				}
				r.Stop()
				checkMarks(t, tb)
				behind := want[2][2:] // the two before the outage went out
				if got := storedOf(tb, pb, 2); !slices.Equal(got, idsOf(want[2][:2])) {
					t.Fatalf("partition 2 stored %v before the restart, want %v", got, idsOf(want[2][:2]))
				}
				if n := tb.store.pending(); n != len(behind) {
					t.Errorf("%d rows unmarked at the restart, want %d (partition 2's)", n, len(behind))
				}
				attempts := len(tb.broker.attemptIDs())
				r2, err := New(r.cfg)
				if err != nil {
					t.Fatal(err)
				}
				start(t, r2)
				addRound(tb.store, 4, want)
				r2.Wake()
				time.Sleep(15 * time.Second)
				synctest.Wait()
				for p := range 4 {
					wantPartition(t, tb, pb, p, idsOf(want[p]))
				}
				again := tb.broker.attemptIDs()[attempts:]
				for _, id := range idsOf(behind) {
					if !slices.Contains(again, id) {
						t.Errorf("%s not sent again after the restart", id)
					}
				}
				checkDone(t, tb, pb)
			})
		})
	}
}

// failTimes fails the event id n times as transient, then lets it through.
func failTimes(id string, n int) func(*envelope.Envelope) error {
	left := n
	return func(e *envelope.Envelope) error {
		if e.ID == id && left > 0 {
			left--
			return fmt.Errorf("flaky: %w", broker.ErrTransient)
		}
		return nil
	}
}

// A transient failure in the middle of a partition's call: the rows before
// it are acknowledged and not sent again; the partition is retried from the
// failed row, after its backoff, while the other partitions were published
// at once.
func TestPartitionRetriesFromFirstFailedRow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb, pb := setupParts(t, false, 4, nil)
		// e1 p2/a, e2 p0/a, e3 p2/a, e4 p1/a, e5 p2/b, e6 p0/a, e7 p2/a
		tb.store.add("p2/a", "p0/a", "p2/a", "p1/a", "p2/b", "p0/a", "p2/a")
		tb.broker.setFail(failTimes("e3", 3))
		start(t, r)
		wantPartition(t, tb, pb, 0, []string{"e2", "e6"})
		wantPartition(t, tb, pb, 1, []string{"e4"})
		time.Sleep(time.Minute)
		synctest.Wait()
		wantPartition(t, tb, pb, 2, []string{"e1", "e3", "e5", "e7"})
		again := []string{"e3", "e5", "e7"}
		want := slices.Concat([]string{"e1"}, again, again, again, again)
		if got := attemptsOf(tb, pb, 2); !slices.Equal(got, want) {
			t.Errorf("partition 2 sent %v, want %v", got, want)
		}
		checkDone(t, tb, pb)
	})
}

// A row refused for good is parked in its partition: the later rows of its
// key are held behind it, the other keys of the partition and the other
// partitions go on.
func TestPartitionRejectedRowParked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb, pb := setupParts(t, false, 4, nil)
		// e1 p2/a, e2 p2/a, e3 p2/b, e4 p1/a, e5 p2/a
		tb.store.add("p2/a", "p2/a", "p2/b", "p1/a", "p2/a")
		tb.broker.setFail(func(e *envelope.Envelope) error {
			if e.ID == "e1" {
				return fmt.Errorf("too large: %w", broker.ErrRejected)
			}
			return nil
		})
		start(t, r)
		wantPartition(t, tb, pb, 2, []string{"e3"})
		wantPartition(t, tb, pb, 1, []string{"e4"})
		var got []string
		for _, p := range tb.store.parked() {
			got = append(got, p.Reason+":"+p.Row.Event.ID)
		}
		if want := []string{"refused:e1", "held:e2", "held:e5"}; !slices.Equal(got, want) {
			t.Errorf("parked %v, want %v", got, want)
		}
		time.Sleep(time.Second) // the mark interval
		synctest.Wait()
		checkDone(t, tb, pb)
	})
}

// With one partition the relay works as without partitions: a failure holds
// the whole batch behind it, every key.
func TestOnePartitionHoldsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb, pb := setupParts(t, false, 1, nil)
		tb.store.add("p2/a", "p0/a", "p2/a", "p1/a")
		tb.broker.setFail(failTimes("e2", 1))
		start(t, r)
		wantStored(t, tb, []string{"e1"})
		time.Sleep(time.Second)
		synctest.Wait()
		wantStored(t, tb, ids(1, 4))
		if got, want := tb.broker.attemptIDs(), []string{"e1", "e2", "e3", "e4", "e2", "e3", "e4"}; !slices.Equal(got, want) {
			t.Errorf("sent %v, want %v", got, want)
		}
		if ps := pb.problems(); len(ps) > 0 {
			t.Errorf("broker saw %v", ps)
		}
	})
}

// Drain waits for a partition that is behind: it publishes it once it
// recovers within the drain timeout, and gives up at the timeout if it does
// not, leaving its rows for the next start.
func TestPartitionDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		down time.Duration
		left int // rows left unpublished
	}{
		{"recovers", 2 * time.Second, 0},
		{"stays down", time.Minute, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, tb, pb := setupParts(t, false, 4, func(c *Config) { c.DrainTimeout = 5 * time.Second })
				start(t, r)
				pb.setDown(2, time.Now().Add(tc.down))
				want := map[int][]int64{}
				addRound(tb.store, 12, want)
				begin := time.Now()
				r.Drain()
				if took := time.Since(begin); took > 5*time.Second {
					t.Errorf("Drain took %v, want at most the timeout", took)
				}
				for _, p := range []int{0, 1, 3} {
					wantPartition(t, tb, pb, p, idsOf(want[p]))
				}
				checkMarks(t, tb)
				if n := tb.store.pending(); n != tc.left {
					t.Errorf("%d rows left unpublished, want %d", n, tc.left)
				}
				if tc.left > 0 && !strings.Contains(tb.logs.String(), fmt.Sprintf("unpublished=%d", tc.left)) {
					t.Errorf("what the drain left was not logged:\n%s", tb.logs)
				}
				if r.Running() {
					t.Error("still running after Drain")
				}
			})
		})
	}
}

// A relay that loses its lease while a partition is behind forgets its
// queues (waiting for the call out first); with the lease back it reads
// the partition's rows from the table again and publishes them in order.
func TestPartitionLeaseLostForgetsQueues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb, pb := setupParts(t, false, 4, nil)
		pb.hang = time.Minute // its call is out when the lease goes
		start(t, r)
		pb.setDown(2, time.Now().Add(20*time.Second))
		want := map[int][]int64{}
		addRound(tb.store, 12, want)
		r.Wake()
		time.Sleep(time.Second)
		synctest.Wait()
		tb.store.setOther("them")
		time.Sleep(4 * time.Second) // past a renewal (TTL/3)
		addRound(tb.store, 4, want)
		r.Wake() // the relay finds the lease gone
		time.Sleep(6 * time.Second)
		synctest.Wait()
		for _, p := range []int{0, 1, 3} {
			if got := storedOf(tb, pb, p); len(got) != 3 {
				t.Errorf("partition %d stored %v without the lease, want the 3 from before", p, got)
			}
		}
		tb.store.setOther("")
		time.Sleep(30 * time.Second) // the lease back, the outage over
		synctest.Wait()
		for p := range 4 {
			wantPartition(t, tb, pb, p, idsOf(want[p]))
		}
		checkDone(t, tb, pb)
	})
}
