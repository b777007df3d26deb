package consumer

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// The engine's tests run in synctest bubbles over the fakes of
// fakes_test.go: no NATS, no SQL, and the waits (retry backoff, heartbeats,
// holds, restart pauses) take no wall time.

// start starts c and stops it when the test ends.
func start(t *testing.T, c *Consumer) {
	t.Helper()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	synctest.Wait()
}

// failTimes makes the handler of event n fail with err its first times runs.
func failTimes(st *fakeStore, err error, times map[uint64]int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.handler = func(n uint64) error {
		if st.runs[n] <= times[n] {
			return err
		}
		return nil
	}
}

func wantCommitted(t *testing.T, tb *testBundle, want ...uint64) {
	t.Helper()
	if got := tb.store.committed(); !slices.Equal(got, want) {
		t.Errorf("committed handler runs = %v, want %v", got, want)
	}
}

func wantAcked(t *testing.T, tb *testBundle, times int, seqs ...uint64) {
	t.Helper()
	for _, s := range seqs {
		if n := tb.broker.count(s, "ack"); n != times {
			t.Errorf("event %d acked %d times, want %d", s, n, times)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func() Config {
		return Config{
			Subscription: broker.Subscription{Name: "orders", Types: []string{testType}},
			Inbox:        "billing/orders",
			Decode:       func(e *envelope.Envelope) (any, error) { return nil, nil },
			Handle:       func(context.Context, Tx, *envelope.Envelope, any) error { return nil },
			Broker:       newFakeBroker(),
			Store:        &fakeStore{},
		}
	}
	for _, tc := range []struct {
		name   string
		break_ func(*Config)
	}{
		{"no name", func(c *Config) { c.Subscription.Name = "" }},
		{"no inbox", func(c *Config) { c.Inbox = "" }},
		{"two types", func(c *Config) { c.Subscription.Types = []string{"a", "b"} }},
		{"negative batch", func(c *Config) { c.BatchSize = -1 }},
		{"retry delays inverted", func(c *Config) { c.Retry = Retry{MaxAttempts: 1, BaseDelay: time.Second, MaxDelay: time.Millisecond} }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no handler", func(c *Config) { c.Handle = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok()
			tc.break_(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
	c, err := New(ok())
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.BatchSize != DefaultBatchSize || c.cfg.Subscription.AckWait != DefaultAckWait || c.cfg.Retry.MaxAttempts != 5 {
		t.Errorf("defaults not filled in: %+v", c.cfg)
	}
}

// A retrying event holds back the later events of its key only, and they
// run in stream order once it succeeded.
func TestRetryHoldsBackOnlyItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		failTimes(tb.store, errFlaky, map[uint64]int{1: 2})
		start(t, c)
		tb.send(tb.ev(1, "a"), tb.ev(2, "a"), tb.ev(3, "b"))
		wantCommitted(t, tb, 3)
		wantAcked(t, tb, 0, 1, 2)
		wantAcked(t, tb, 1, 3)
		time.Sleep(2 * time.Second) // two retries: at most 100ms, then 200ms
		synctest.Wait()
		wantCommitted(t, tb, 3, 1, 2)
		wantAcked(t, tb, 1, 1, 2, 3)
		if n := tb.store.runsOf(1); n != 3 {
			t.Errorf("event 1 ran %d times, want 3", n)
		}
	})
}

// A handler failing in the fast pass sends the batch to the isolated pass:
// only its key waits, and the events that ran before it in the rolled-back
// fast pass count one attempt, not two.
func TestFastPassFallsBackToIsolated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		failTimes(tb.store, errFlaky, map[uint64]int{3: 1})
		start(t, c)
		tb.send(tb.ev(1, "a"), tb.ev(2, "b"), tb.ev(3, "c"), tb.ev(4, "c"), tb.ev(5, "a"))
		wantCommitted(t, tb, 1, 2, 5)
		wantAcked(t, tb, 0, 3, 4)
		if r1, r4 := tb.store.runsOf(1), tb.store.runsOf(4); r1 != 2 || r4 != 0 {
			t.Errorf("runs: event 1 %d (want 2: fast, isolated), event 4 %d (want 0: blocked)", r1, r4)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		wantCommitted(t, tb, 1, 2, 5, 3, 4)
		want := []observed{
			{3, OutcomeRetry, 1}, {1, OutcomeOK, 1}, {2, OutcomeOK, 1}, {5, OutcomeOK, 1},
			{3, OutcomeOK, 2}, {4, OutcomeOK, 1},
		}
		if got := tb.observer.reports(); !slices.Equal(got, want) {
			t.Errorf("handled reports =\n%v, want\n%v", got, want)
		}
	})
}

// Dead letters: after MaxAttempts, at once for a permanent error, and at
// once for what cannot be handled (undecodable, another type, a version
// the subscription does not take) — once each, even when redelivered.
func TestDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		tb.store.handler = func(n uint64) error {
			switch n {
			case 1:
				return errFlaky
			case 2:
				return errPermanent
			}
			return nil
		}
		start(t, c)
		garbage := &fakeDelivery{b: tb.broker, seq: 3, num: 1, header: map[string]string{"ce-id": "x"}, data: []byte("{")}
		ds := []*fakeDelivery{tb.ev(1, "a"), tb.ev(2, "b"), garbage,
			tb.event(4, "c", "shop.other", 1), tb.event(5, "d", testType, 2), tb.ev(6, "a")}
		tb.send(ds...)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		reasons := map[string]string{} // by event id ("": undecodable)
		for _, dl := range tb.store.deadLetters() {
			if _, dup := reasons[dl.EventID]; dup {
				t.Errorf("event %q dead-lettered twice", dl.EventID)
			}
			reasons[dl.EventID] = dl.Reason
			if dl.EventID == "ev-1" && dl.Attempts != 3 || dl.EventID == "ev-2" && dl.Attempts != 1 {
				t.Errorf("event %s dead-lettered after %d attempts", dl.EventID, dl.Attempts)
			}
		}
		want := map[string]string{"ev-1": store.ReasonExhausted, "ev-2": store.ReasonPermanent, "": store.ReasonMalformed,
			"ev-4": store.ReasonUnknownType, "ev-5": store.ReasonVersion}
		if !maps.Equal(reasons, want) {
			t.Errorf("dead letters = %v, want %v", reasons, want)
		}
		wantCommitted(t, tb, 6) // after 1 was dead-lettered: the key goes on
		wantAcked(t, tb, 1, 1, 2, 3, 4, 5, 6)

		// Their redeliveries (a lost ack) are acked, not dead-lettered again.
		var redelivered []*fakeDelivery
		for _, d := range ds[:5] {
			redelivered = append(redelivered, again(d))
		}
		tb.send(redelivered...)
		if n := len(tb.store.deadLetters()); n != 5 {
			t.Errorf("%d dead letters after redeliveries, want 5", n)
		}
		wantAcked(t, tb, 2, 1, 2, 3, 4, 5)
		if n := len(tb.broker.dls); n != 5 {
			t.Errorf("%d dead letters published, want 5", n)
		}
		if n := tb.store.runsOf(1); n != 3 {
			t.Errorf("event 1 ran %d times, want 3 (MaxAttempts)", n)
		}
	})
}

// A redelivery of a handled event is acked without running its handler.
func TestDuplicateIsAckedWithoutHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		start(t, c)
		d := tb.ev(1, "a")
		tb.send(d)
		tb.send(again(d), tb.ev(2, "a"))
		wantCommitted(t, tb, 1, 2)
		wantAcked(t, tb, 2, 1)
		want := []observed{{1, OutcomeOK, 1}, {1, OutcomeDuplicate, 0}, {2, OutcomeOK, 1}}
		if got := tb.observer.reports(); !slices.Equal(got, want) {
			t.Errorf("handled reports = %v, want %v", got, want)
		}
	})
}

// A transaction that fails (begin, the inbox statement, commit) settles
// nothing: the whole batch waits and runs again, each effect once.
func TestFailedTransactionRetriesTheBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(*fakeStore)
	}{
		{"begin", func(s *fakeStore) { s.failBegin = 1 }},
		{"commit of both passes", func(s *fakeStore) { s.failCommit = 2 }},
		{"inbox claim and commit", func(s *fakeStore) { s.failClaims, s.failCommit = 1, 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, tb := setup(t, nil)
				tc.fail(tb.store)
				start(t, c)
				tb.send(tb.ev(1, "a"), tb.ev(2, "b"))
				wantCommitted(t, tb)
				wantAcked(t, tb, 0, 1, 2)
				time.Sleep(time.Second)
				synctest.Wait()
				wantCommitted(t, tb, 1, 2)
				wantAcked(t, tb, 1, 1, 2)
			})
		})
	}
}

// Events held back for a retry are kept alive at the broker.
func TestHeartbeatOfHeldEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		tb.cfg.Retry = Retry{MaxAttempts: 3, BaseDelay: 20 * time.Second, MaxDelay: 20 * time.Second}
		failTimes(tb.store, errFlaky, map[uint64]int{1: 1})
		start(t, c)
		tb.send(tb.ev(1, "a"), tb.ev(2, "a"), tb.ev(3, "b"))
		time.Sleep(9 * time.Second) // past the ack wait's third, before the retry
		synctest.Wait()
		for _, s := range []uint64{1, 2} {
			if n := tb.broker.count(s, "progress"); n < 2 {
				t.Errorf("held event %d heartbeat %d times in 9s (ack wait 10s), want at least 2", s, n)
			}
		}
		if n := tb.broker.count(3, "progress"); n != 0 {
			t.Errorf("settled event 3 heartbeat %d times", n)
		}
	})
}

// After a crash the broker has a dead predecessor's events out: new
// deliveries wait until those redeliveries are back, and then every key
// runs in stream order.
func TestHoldAfterCrashUntilRedeliveriesArrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sb *staterBroker
		c, tb := setup(t, func(fb *fakeBroker) Broker { sb = &staterBroker{fakeBroker: fb}; return sb })
		sb.set(2, 0, 2) // 1 and 2 went to the crashed instance
		start(t, c)
		tb.send(tb.ev(3, "a"), tb.ev(4, "b"))
		time.Sleep(time.Second)
		synctest.Wait()
		wantCommitted(t, tb) // held: 1 and 2 are still out
		tb.send(again(tb.ev(1, "a")))
		wantCommitted(t, tb)
		tb.send(again(tb.ev(2, "b")))
		wantCommitted(t, tb, 1, 2, 3, 4)
	})
}

// The same hold ends when the broker counts nothing out any more (the
// predecessor's events were acked by another instance, say).
func TestHoldAfterCrashEndsWhenNothingIsOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sb *staterBroker
		c, tb := setup(t, func(fb *fakeBroker) Broker { sb = &staterBroker{fakeBroker: fb}; return sb })
		sb.set(2, 0, 2)
		start(t, c)
		tb.send(tb.ev(3, "a"))
		wantCommitted(t, tb)
		sb.set(1, 2, 3) // only 3 is out: the consumer's own
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		wantCommitted(t, tb, 3)
	})
}

// After a reconnect a broker that lost the last of its consumer state
// undercounts: the events the consumer holds outside (ack floor,
// delivered] are not its own in the count, so the hold goes on while an
// event is out.
func TestHoldAfterReconnectWithUndercountingBroker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sb *staterBroker
		c, tb := setup(t, func(fb *fakeBroker) Broker { sb = &staterBroker{fakeBroker: fb}; return sb })
		tb.cfg.Retry = Retry{MaxAttempts: 3, BaseDelay: time.Minute, MaxDelay: time.Minute}
		failTimes(tb.store, errFlaky, map[uint64]int{5: 1})
		sb.set(0, 0, 0)
		start(t, c)
		tb.send(tb.ev(5, "a")) // held for its retry
		sb.epoch.Add(1)        // the connection came back; 6 was lost on the wire
		sb.set(1, 3, 4)        // a restarted broker: it counts 6, not 5, and says it delivered up to 4
		tb.send(tb.ev(7, "b"))
		time.Sleep(time.Second)
		synctest.Wait()
		wantCommitted(t, tb) // 7 waits: a bare count (1 pending − 1 held) would release it
		tb.send(again(tb.ev(6, "b")))
		wantCommitted(t, tb) // still held: only the broker's count ends a hold after a reconnect
		sb.set(3, 4, 7)      // 5, 6 and 7, all held: nothing else is out
		time.Sleep(time.Second)
		synctest.Wait()
		wantCommitted(t, tb, 6, 7)
	})
}

// After a reconnect a bare count (no sequences) cannot end the hold before
// the ack wait is over.
func TestHoldAfterReconnectWithBareCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cb *counterBroker
		c, tb := setup(t, func(fb *fakeBroker) Broker { cb = &counterBroker{fakeBroker: fb}; return cb })
		tb.cfg.Retry = Retry{MaxAttempts: 3, BaseDelay: time.Minute, MaxDelay: time.Minute}
		failTimes(tb.store, errFlaky, map[uint64]int{1: 1})
		start(t, c)
		tb.send(tb.ev(1, "a")) // held for its retry
		cb.epoch.Add(1)
		cb.pending.Store(2) // 1 and 2: looks like nothing else is out
		tb.send(tb.ev(2, "b"))
		time.Sleep(10 * time.Second) // the ack wait
		synctest.Wait()
		wantCommitted(t, tb)
		time.Sleep(2 * time.Second) // ack wait + 1s: the count is trusted now
		synctest.Wait()
		wantCommitted(t, tb, 2)
	})
}

// A panic inside the engine hands the held events back to the broker and
// the consumer starts again after a pause.
func TestRestartAfterPanicNaksHeldEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		panicked := false
		tb.store.handler = func(n uint64) error {
			if n == 2 && !panicked {
				panicked = true
				panic("engine bug")
			}
			return nil
		}
		start(t, c)
		tb.send(tb.ev(1, "a"), tb.ev(2, "b"))
		select {
		case err := <-c.testSignals.restarted:
			var pe *PanicError
			if !errors.As(err, &pe) || pe.Value != "engine bug" {
				t.Errorf("restarted after %v, want the panic", err)
			}
		default:
			t.Fatal("no restart after the panic")
		}
		wantCommitted(t, tb)
		for _, s := range []uint64{1, 2} {
			if n := tb.broker.count(s, "nak"); n != 1 {
				t.Errorf("held event %d nak'ed %d times, want 1", s, n)
			}
		}
		time.Sleep(time.Second) // the restart pause
		synctest.Wait()
		tb.send(again(tb.ev(1, "a")), again(tb.ev(2, "b")))
		wantCommitted(t, tb, 1, 2)
		wantAcked(t, tb, 1, 1, 2)
	})
}

// Stop hands the queued events back and stops every goroutine.
func TestStopNaksQueuedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		tb.cfg.Retry = Retry{MaxAttempts: 3, BaseDelay: time.Minute, MaxDelay: time.Minute}
		failTimes(tb.store, errFlaky, map[uint64]int{1: 1})
		start(t, c)
		tb.send(tb.ev(1, "a"), tb.ev(2, "a"))
		c.Stop()
		for _, s := range []uint64{1, 2} {
			if n := tb.broker.count(s, "nak"); n != 1 {
				t.Errorf("queued event %d nak'ed %d times at stop, want 1", s, n)
			}
		}
	})
}

// A long batch heartbeats the events that wait in it: the main loop's
// tick cannot run while the batch does.
func TestHeartbeatDuringLongBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		tb.cfg.Subscription.AckWait = 3 * time.Second
		tb.store.handler = func(uint64) error {
			time.Sleep(time.Second) // a slow handler, in the bubble's time
			return nil
		}
		start(t, c)
		tb.send(tb.ev(1, "a"), tb.ev(2, "a"), tb.ev(3, "a"), tb.ev(4, "a"))
		time.Sleep(5 * time.Second)
		synctest.Wait()
		wantCommitted(t, tb, 1, 2, 3, 4)
		if n := tb.broker.count(4, "progress"); n < 1 {
			t.Errorf("the last event of a 4s batch (ack wait 3s) heartbeat %d times, want at least 1", n)
		}
	})
}
