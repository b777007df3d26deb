package natsjs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/natsserver"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func apiErr(code int, errCode jetstream.ErrorCode, desc string) error {
	return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: desc})
}

func TestStartupTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{nats.ErrTimeout, true},
		{nats.ErrDisconnected, true},
		{jetstream.ErrStreamNameAlreadyInUse, true},
		{apiErr(503, 10008, "JetStream system temporarily unavailable"), true},
		{apiErr(400, 10005, "no suitable peers for placement"), true},
		{apiErr(503, 10023, "insufficient resources"), true},
		{apiErr(500, 10074, "replicas > 1 not supported in non-clustered mode"), false},
		{apiErr(500, 10052, "invalid stream config"), false},
		{jetstream.ErrJetStreamNotEnabled, false},
		{jetstream.ErrJetStreamNotEnabledForAccount, false},
		{errors.New("something else"), false},
	} {
		if got := startupTransient(nil, c.err); got != c.want {
			t.Errorf("startupTransient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func testRetryBroker(t *testing.T, budget time.Duration) (*Broker, *syncBuf) {
	t.Helper()
	buf := &syncBuf{}
	cfg := defaultConfig(modeExternal)
	if err := cfg.apply([]Option{WithStartupRetry(budget),
		WithLogger(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})))}); err != nil {
		t.Fatal(err)
	}
	return newBroker(cfg), buf
}

// TestRetryStartup: transient failures are retried, bounded per attempt,
// and logged with the error and the next delay; a permanent one returns
// after one attempt; the budget ends the retries.
func TestRetryStartup(t *testing.T) {
	b, log := testRetryBroker(t, time.Minute)
	n := 0
	err := b.retryStartup(context.Background(), "provision stream X", func(ctx context.Context) error {
		n++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("attempt without a deadline of its own")
		}
		if n < 3 {
			return apiErr(503, 10008, "JetStream system temporarily unavailable")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("err %v after %d attempts, want nil after 3", err, n)
	}
	if s := log.String(); strings.Count(s, "provision stream X failed; retrying") != 2 || !strings.Contains(s, "retry_in=") ||
		!strings.Contains(s, "temporarily unavailable") {
		t.Fatalf("log:\n%s", s)
	}

	n = 0
	start := time.Now()
	err = b.retryStartup(context.Background(), "provision stream X", func(ctx context.Context) error {
		n++
		return apiErr(500, 10074, "replicas > 1 not supported in non-clustered mode")
	})
	if err == nil || n != 1 || time.Since(start) > time.Second {
		t.Fatalf("permanent error: err %v after %d attempts in %v", err, n, time.Since(start))
	}

	b, _ = testRetryBroker(t, 300*time.Millisecond)
	n = 0
	err = b.retryStartup(context.Background(), "provision stream X", func(ctx context.Context) error {
		n++
		return context.DeadlineExceeded
	})
	if err == nil || n < 2 || !strings.Contains(err.Error(), "still failing after") {
		t.Fatalf("budget: err %v after %d attempts", err, n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	b, _ = testRetryBroker(t, time.Minute)
	err = b.retryStartup(ctx, "provision stream X", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() == nil {
		t.Fatalf("caller's deadline: %v", err)
	}
}

// TestProvisionReplicasOnSingleServerFailsAtOnce: a configuration the
// server refuses for good is not retried.
func TestProvisionReplicasOnSingleServerFailsAtOnce(t *testing.T) {
	srv := natsserver.Start(t, t.TempDir(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Connect(ctx, []string{srv.URL()}, WithReplicas(3), WithPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	err = b.Provision(ctx, broker.Topology{Service: "svc"})
	if err == nil || !strings.Contains(err.Error(), "WithReplicas(3): the server is a single node") || time.Since(start) > 5*time.Second {
		t.Fatalf("Provision with 3 replicas on one server: %v after %v, want a prompt refusal", err, time.Since(start))
	}
}
