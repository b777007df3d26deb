package notify

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// sendEnd is how a test send held by leases ended: when, and why.
type sendEnd struct {
	at    time.Duration // since the test's start; -1: not begun
	cause error
}

// startSend begins w's send as process does and returns when its context
// ends (the send itself never returns by itself).
func startSend(l *leases, w *row, t0 time.Time) <-chan sendEnd {
	ch := make(chan sendEnd, 1)
	ctx, cancel := context.WithCancelCause(context.Background())
	if !l.begin(w, cancel) {
		cancel(nil)
		ch <- sendEnd{at: -1}
		return ch
	}
	go func() {
		<-ctx.Done()
		ch <- sendEnd{time.Since(t0), context.Cause(ctx)}
	}()
	return ch
}

func heldRow(id, token string, until time.Time) *row {
	return &row{Delivery: Delivery{ID: id, ClaimedBy: token, ClaimUntil: until}}
}

// TestLeasesRenewAndRunOut runs the renewal loop on fake time against a
// fake database that renews every claim it is asked for, except b's after
// 5s (another instance claimed it), and fails every renewal from 10s on (the
// database is down). Renewals come every third of the lease; a send goes on
// while its lease is renewed, however long, and a row waiting for a worker
// (c) is renewed too and may begin long after its first lease; a send is
// interrupted with errLeaseLost exactly when the lease last written runs out
// (b at 5+3s, a and c at 9+3s); a row whose lease ran out is not begun;
// nothing is renewed once every lease ran out.
func TestLeasesRenewAndRunOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 3 * time.Second
		t0 := time.Now()
		l := newLeases(lease, time.Now, quiet())
		a, b, c := heldRow("a", "me/1", t0.Add(lease)), heldRow("b", "me/1", t0.Add(lease)), heldRow("c", "me/2", t0.Add(lease))
		for _, w := range []*row{a, b, c} {
			l.hold(w)
		}
		var mu sync.Mutex
		var calls []time.Duration
		renew := func(_ context.Context, keys []holdKey, until time.Time) ([]holdKey, error) {
			at := time.Since(t0)
			mu.Lock()
			calls = append(calls, at)
			mu.Unlock()
			if !until.Equal(time.Now().Add(lease)) {
				t.Errorf("renewal at %v until %v, want now + the lease", at, until.Sub(t0))
			}
			if at >= 10*time.Second {
				return nil, errors.New("database down")
			}
			var got []holdKey
			for _, k := range keys {
				if k.id != "b" || at <= 5*time.Second {
					got = append(got, k)
				}
			}
			return got, nil
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.run(ctx, renew); close(done) }()

		sa, sb := startSend(l, a, t0), startSend(l, b, t0)
		time.Sleep(7 * time.Second) // c waits for a worker, long past its first lease
		sc := startSend(l, c, t0)
		time.Sleep(13 * time.Second)
		synctest.Wait()
		for _, s := range []struct {
			name string
			ch   <-chan sendEnd
			want time.Duration
		}{{"a", sa, 12 * time.Second}, {"b", sb, 8 * time.Second}, {"c", sc, 12 * time.Second}} {
			select {
			case e := <-s.ch:
				if e.at != s.want || !errors.Is(e.cause, errLeaseLost) {
					t.Errorf("%s: send ended at %v (%v), want at %v with errLeaseLost", s.name, e.at, e.cause, s.want)
				}
			default:
				t.Errorf("%s: send still running at 20s", s.name)
			}
		}
		mu.Lock()
		got := slices.Clone(calls)
		mu.Unlock()
		var want []time.Duration
		for s := 1; s <= 11; s++ {
			want = append(want, time.Duration(s)*time.Second)
		}
		// At 12s the timer and the ticker fire at once: a 12th renewal may
		// still ask for a's lease.
		if !slices.Equal(got, want) && !slices.Equal(got, append(want, 12*time.Second)) {
			t.Errorf("renewals at %v, want every second from 1s to 11s", got)
		}
		if k := l.renewable(); len(k) != 0 {
			t.Errorf("still renewable after every lease ran out: %v", k)
		}
		if e := <-startSend(l, a, t0); e.at != -1 {
			t.Errorf("a lost row began a send again: %+v", e)
		}
		stop()
		<-done
		for _, w := range []*row{a, b, c} {
			l.forget(w)
		}
	})
}

// TestLeasesNotBegun: a row whose renewal was refused (another instance
// claimed it) is not begun once its lease ran out, nor one whose lease the
// clock passed before its timer fired; a send goes on while renewed and is
// interrupted once the renewals stop for a lease.
func TestLeasesNotBegun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = time.Second
		t0 := time.Now()
		var skew time.Duration // the clock's lead on real (fake) time
		var mu sync.Mutex
		now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }
		l := newLeases(lease, now, quiet())
		kept, taken, jumped := heldRow("kept", "me/1", t0.Add(lease)), heldRow("taken", "me/1", t0.Add(lease)), heldRow("jumped", "me/1", t0.Add(lease))
		for _, w := range []*row{kept, taken, jumped} {
			l.hold(w)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			l.run(ctx, func(_ context.Context, keys []holdKey, _ time.Time) ([]holdKey, error) {
				return slices.DeleteFunc(keys, func(k holdKey) bool { return k.id == "taken" }), nil
			})
			close(done)
		}()
		time.Sleep(10*time.Second + lease/2) // between two renewals
		if e := <-startSend(l, taken, t0); e.at != -1 {
			t.Errorf("a row whose lease ran out 9s ago began: %+v", e)
		}
		sk := startSend(l, kept, t0)
		stop()
		<-done
		// The renewals stopped; the clock jumps past every lease before the
		// timers fire.
		mu.Lock()
		skew = 2 * lease
		mu.Unlock()
		if e := <-startSend(l, jumped, t0); e.at != -1 {
			t.Errorf("a row whose lease the clock passed began: %+v", e)
		}
		time.Sleep(2 * lease)
		synctest.Wait()
		select {
		case e := <-sk:
			if !errors.Is(e.cause, errLeaseLost) {
				t.Errorf("kept: ended %+v, want errLeaseLost once the renewals stopped", e)
			}
		default:
			t.Error("kept: still sending a lease after the renewals stopped")
		}
		for _, w := range []*row{kept, taken, jumped} {
			l.forget(w)
		}
	})
}
