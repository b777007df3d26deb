package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStartupRetry is how long start-up calls keep retrying while a
// cluster elects its leaders (WithStartupRetry).
const DefaultStartupRetry = time.Minute

// apiAttempt bounds one JetStream API request of a start-up call. A server
// of a cluster without a meta leader does not answer at all for its first
// seconds, so a request without a bound of its own would wait for the
// caller's whole deadline, though the cluster answers a new one a moment
// later.
const apiAttempt = 5 * time.Second

// startupQuiet is how long start-up retries log at Info rather than Warn: a
// cluster that has just started takes seconds to elect its leaders.
const startupQuiet = 10 * time.Second

// JetStream API error codes that a cluster forming or electing leaders
// returns, and that go away by themselves.
const (
	errCodeIncomplete     = 10004 // incomplete results
	errCodeNoPeers        = 10005 // no suitable peers for placement (peers not all known yet)
	errCodeNotAvailable   = 10008 // JetStream system temporarily unavailable
	errCodeNotLeader      = 10009 // JetStream cluster can not handle request
	errCodeNoResources    = 10023 // insufficient resources (peers' resources not known yet)
	errCodeStreamNameUsed = 10058 // two processes creating one stream at once
)

// startupTransient reports whether a failed start-up API call (creating a
// stream, a consumer or a bucket, asking for the account's JetStream
// limits) is worth repeating: a request that got no answer in time, a
// connection reconnecting, or an error a cluster returns while it elects
// its leaders. A bad configuration (an invalid stream config, replicas
// that a single server cannot have, JetStream not enabled) is not.
func startupTransient(nc *nats.Conn, err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
		return true
	case errors.Is(err, nats.ErrConnectionClosed):
		return nc != nil && !nc.IsClosed()
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeIncomplete, errCodeNoPeers, errCodeNotAvailable, errCodeNotLeader, errCodeNoResources, errCodeStreamNameUsed:
			return true
		}
	}
	return false
}

// retryStartup runs fn, each attempt bounded (1s, 2s, 4s, then apiAttempt), until it
// succeeds, fails with an error startupTransient does not accept, ctx ends,
// the broker closes or WithStartupRetry's time is up; it returns fn's last
// error. It waits between attempts with exponential backoff and jitter
// (from 50ms to 2s) and logs every retry: at Info during the first
// startupQuiet, when a cluster that is starting is expected to refuse, at
// Warn after.
func (b *Broker) retryStartup(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	start := time.Now()
	deadline := start.Add(b.cfg.startupRetry)
	for attempt := 1; ; attempt++ {
		// 1s, 2s, 4s, then apiAttempt: a dropped request is repeated soon,
		// a slow one gets time.
		actx, cancel := context.WithTimeout(ctx, min(apiAttempt, time.Second<<min(attempt-1, 8)))
		err := fn(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				b.log.Info("herald/natsjs: "+op+": done after retrying", "attempts", attempt, "after", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ended(ctx, err)
		}
		if b.isClosed.Load() {
			return fmt.Errorf("%w: %w", errClosed, err)
		}
		if !startupTransient(b.nc, err) {
			return err
		}
		d := startupBackoff(attempt)
		if time.Now().Add(d).After(deadline) {
			return fmt.Errorf("%w (still failing after %d attempts in %v; is a JetStream cluster of at least %d servers up?)",
				err, attempt, time.Since(start).Round(time.Millisecond), b.cfg.replicas)
		}
		level := slog.LevelInfo
		if time.Since(start) > startupQuiet {
			level = slog.LevelWarn
		}
		why, logErr := "a cluster may still be electing its leaders", err
		if reconnecting(err) {
			why, logErr = "waiting for the connection to come back", unreachable(err)
		}
		b.log.Log(ctx, level, "herald/natsjs: "+op+" failed; retrying ("+why+")",
			"err", logErr, "attempt", attempt, "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ended(ctx, err)
		case <-b.closed:
			t.Stop()
			return fmt.Errorf("%w: %w", errClosed, err)
		}
	}
}

// startupBackoff is the wait after failed attempt n (1-based): 50ms
// doubling up to 2s, with jitter over its upper half.
func startupBackoff(n int) time.Duration {
	d := 50 * time.Millisecond << min(n-1, 10)
	d = min(d, 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

// ended is the error of a retry that ctx ended after an attempt failed with
// err.
func ended(ctx context.Context, err error) error {
	if errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
}
