// Package startstop is the one start and stop shape of herald's engines
// (the outbox relay, the subscription consumers, the janitor): an engine
// embeds a Base, starts its goroutines with Go after StartInit, and Stop
// cancels them and waits until every one has returned. It follows River's
// rivershared/startstop, smaller: herald's engines need no started signal.
package startstop

import (
	"context"
	"sync"
)

// Service is what every engine is: started once, stopped once, and able to
// start again after it stopped.
type Service interface {
	// Start launches the engine's goroutines and returns at once. Their
	// context keeps ctx's values but not its cancellation: only Stop ends
	// them. Starting a started engine does nothing.
	Start(ctx context.Context) error
	// Stop cancels the engine's goroutines and waits until they returned.
	// Stopping a stopped (or never started) engine does nothing.
	Stop()
}

// Base does an engine's start and stop bookkeeping. The zero value is ready;
// it must not be copied after first use.
type Base struct {
	mu      sync.Mutex
	running bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped chan struct{} // closed when the last run's goroutines returned
}

// StartInit begins a start. It returns the context the engine's goroutines
// run under, and false if the engine is already running (then the engine
// must start nothing).
func (b *Base) StartInit(ctx context.Context) (context.Context, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running {
		return nil, false
	}
	b.running = true
	ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	b.stopped = make(chan struct{})
	return ctx, true
}

// Go runs fn in a goroutine the engine owns: Stop waits for it. Call it
// only between StartInit and Stop, with StartInit's context or one derived
// from it.
func (b *Base) Go(fn func()) {
	b.wg.Go(fn)
}

// Stop cancels the context StartInit returned and waits until every
// goroutine started with Go has returned.
func (b *Base) Stop() {
	b.mu.Lock()
	if !b.running {
		b.mu.Unlock()
		return
	}
	b.running = false
	cancel, stopped := b.cancel, b.stopped
	b.mu.Unlock()
	cancel()
	b.wg.Wait()
	close(stopped)
}

// Stopped returns a channel closed once the current (or last) run stopped;
// nil before the first start.
func (b *Base) Stopped() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopped
}

// Running reports whether the engine is started and not stopped.
func (b *Base) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}
