package startstop

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// engine is the smallest engine: one goroutine that ticks until stopped.
type engine struct {
	Base
	ticks atomic.Int64
}

func (e *engine) Start(ctx context.Context) error {
	ctx, ok := e.StartInit(ctx)
	if !ok {
		return nil
	}
	e.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.ticks.Add(1)
			}
		}
	})
	return nil
}

var _ Service = (*engine)(nil)

func TestStartStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := &engine{}
		e.Stop() // never started: nothing to do
		if e.Stopped() != nil || e.Running() {
			t.Fatal("an engine never started reports a run")
		}
		ctx, cancel := context.WithCancel(t.Context())
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctx); err != nil { // started twice: one goroutine
			t.Fatal(err)
		}
		cancel() // Start's context does not stop the engine
		time.Sleep(3500 * time.Millisecond)
		if n := e.ticks.Load(); n != 3 {
			t.Fatalf("ticks = %d after 3.5s, want 3 (one goroutine, not stopped by Start's context)", n)
		}
		stopped := e.Stopped()
		e.Stop()
		select {
		case <-stopped:
		default:
			t.Fatal("Stopped not closed after Stop")
		}
		if e.Running() {
			t.Fatal("running after Stop")
		}
		e.Stop() // twice: nothing to do
		// It starts again after a stop.
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		e.Stop()
		if n := e.ticks.Load(); n != 4 {
			t.Fatalf("ticks = %d after a restart, want 4", n)
		}
	})
}
