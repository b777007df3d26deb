package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/store"
)

func acquire(t *testing.T, s *store.Store, name, holder string, ttl time.Duration, want bool) {
	eng := store.EngineOf(s)
	t.Helper()
	got, err := eng.LeaseAcquire(context.Background(), store.LeaseAcquireParams{Name: name, Holder: holder, TTL: ttl})
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", name, holder, err)
	}
	if got != want {
		t.Fatalf("AcquireLease(%s, %s) = %v, want %v", name, holder, got, want)
	}
}

func (h *harness) leaseExclusive(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	acquire(t, s, "relay.orders", "i1", time.Minute, true)
	acquire(t, s, "relay.orders", "i1", time.Minute, true) // renew
	acquire(t, s, "relay.orders", "i2", time.Minute, false)
	acquire(t, s, "relay.billing", "i2", time.Minute, true) // another lease
	acquire(t, s, "relay.billing", "i1", time.Minute, false)
	acquire(t, s, "relay.orders", "i1", time.Minute, true)

	// Concurrent candidates for a free lease: exactly one wins.
	var wins sync.Map
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			holder := fmt.Sprintf("c%d", i)
			ok, err := eng.LeaseAcquire(context.Background(), store.LeaseAcquireParams{Name: "relay.race", Holder: holder, TTL: time.Minute})
			if err != nil {
				errc <- err
			} else if ok {
				wins.Store(holder, true)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("AcquireLease: %v", err)
	}
	n := 0
	wins.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d concurrent candidates got the free lease, want 1", n)
	}
}

func (h *harness) leaseExpiry(t *testing.T) {
	s := h.open(t)
	// Only expiry is timed, with a wide margin: 50ms ttl, 300ms sleep.
	acquire(t, s, "relay.orders", "i1", 50*time.Millisecond, true)
	acquire(t, s, "relay.billing", "i1", 50*time.Millisecond, true)
	time.Sleep(300 * time.Millisecond)
	acquire(t, s, "relay.orders", "i2", time.Minute, true) // expired: taken over
	acquire(t, s, "relay.orders", "i1", time.Minute, false)
	acquire(t, s, "relay.billing", "i1", time.Minute, true) // expired but still its own: renewed
	acquire(t, s, "relay.billing", "i2", time.Minute, false)
}

func (h *harness) leaseRelease(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	acquire(t, s, "relay.orders", "i1", time.Hour, true)
	// Only the holder can release.
	if err := eng.LeaseRelease(ctx, "relay.orders", "i2"); err != nil {
		t.Fatalf("ReleaseLease by a non-holder: %v", err)
	}
	acquire(t, s, "relay.orders", "i2", time.Hour, false)
	if err := eng.LeaseRelease(ctx, "relay.orders", "i1"); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	acquire(t, s, "relay.orders", "i2", time.Hour, true) // at once, long before expiry
	acquire(t, s, "relay.orders", "i1", time.Hour, false)
	if err := eng.LeaseRelease(ctx, "no.such.lease", "i1"); err != nil {
		t.Fatalf("ReleaseLease of an unknown lease: %v", err)
	}
}
