package consumer

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// A broker that claims in order (broker.Claimer) restarts delivery at the
// ack floor itself: the consumer never holds — not at start while the
// broker counts a predecessor's events out, not after a reconnect — and
// the deliveries from before a restart that still sit in its queue are
// harmless.
func TestClaimerNeverHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cb *claimerBroker
		c, tb := setup(t, func(fb *fakeBroker) Broker {
			cb = &claimerBroker{staterBroker: &staterBroker{fakeBroker: fb}, claims: true}
			return cb
		})
		tb.cfg.Retry = Retry{MaxAttempts: 5, BaseDelay: time.Second, MaxDelay: time.Second}
		cb.set(2, 0, 2) // a hold would wait for 1 and 2
		start(t, c)
		tb.send(tb.ev(3, "a"), tb.ev(4, "b"))
		wantCommitted(t, tb, 3, 4) // at once: no hold at start

		// A reconnect with events out: no hold either.
		cb.epoch.Add(1)
		cb.set(3, 4, 7)
		tb.send(tb.ev(5, "c"))
		wantCommitted(t, tb, 3, 4, 5)

		// 6 fails and waits for its retry, 7 waits behind it; 8 waits for
		// its retry too, and another holder handles it meanwhile. Then
		// the broker restarts the partition at the ack floor (5): 6, 7
		// and 9 come again or anew; 8 does not (acknowledged).
		failTimes(tb.store, errFlaky, map[uint64]int{6: 1, 8: 1})
		tb.send(tb.ev(6, "a"), tb.ev(7, "a"), tb.ev(8, "b"))
		wantCommitted(t, tb, 3, 4, 5)
		tb.store.mu.Lock()
		tb.store.inbox["ev-8"] = true // the other holder's commit
		tb.store.mu.Unlock()
		cb.epoch.Add(1)
		tb.send(again(tb.ev(6, "a")), again(tb.ev(7, "a")), tb.ev(9, "b"))
		// 9 must wait behind the stale 8 of its key, whose retry is due later.
		wantCommitted(t, tb, 3, 4, 5)
		time.Sleep(time.Second)
		synctest.Wait()
		got := tb.store.committed()
		if sorted := slices.Sorted(slices.Values(got)); !slices.Equal(sorted, []uint64{3, 4, 5, 6, 7, 9}) ||
			slices.Index(got, 6) > slices.Index(got, 7) {
			t.Errorf("committed handler runs = %v, want 3, 4, 5, 6, 7 and 9 once each, 6 before 7", got)
		}
		wantAcked(t, tb, 1, 3, 4, 5, 6, 7, 8, 9) // 8: its inbox row was found
		if n := tb.store.runsOf(6); n != 2 {
			t.Errorf("event 6 ran %d times, want 2", n)
		}
		if n := tb.store.runsOf(8); n != 1 {
			t.Errorf("event 8 ran %d times, want 1 (then the inbox absorbed it)", n)
		}
		// The redelivery kept 6's attempts: its second run is attempt 2.
		for _, o := range tb.observer.reports() {
			if o.n == 6 && o.outcome == OutcomeOK && o.attempt != 2 {
				t.Errorf("event 6 succeeded at attempt %d, want 2", o.attempt)
			}
		}
		if n := cb.asks.Load(); n != 0 {
			t.Errorf("the consumer asked the broker's pending state %d times, want 0", n)
		}
		if cb.asked.Load() == 0 {
			t.Error("the consumer never asked ClaimsInOrder")
		}
	})
}

// A Claimer that does not claim the subscription in order leaves the hold
// as it is: after a crash new deliveries wait for the predecessor's.
func TestClaimerNotInOrderHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cb *claimerBroker
		c, tb := setup(t, func(fb *fakeBroker) Broker {
			cb = &claimerBroker{staterBroker: &staterBroker{fakeBroker: fb}}
			return cb
		})
		cb.set(2, 0, 2) // 1 and 2 went to the crashed instance
		start(t, c)
		tb.send(tb.ev(3, "a"), tb.ev(4, "b"))
		time.Sleep(time.Second)
		synctest.Wait()
		wantCommitted(t, tb) // held
		tb.send(again(tb.ev(1, "a")), again(tb.ev(2, "b")))
		wantCommitted(t, tb, 1, 2, 3, 4)
		if cb.asks.Load() == 0 {
			t.Error("the consumer never asked the broker's pending state")
		}
	})
}
