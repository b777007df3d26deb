package shop

import (
	"context"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestServiceLogLinesNameTheServiceOnce: every line a service process logs
// — herald's own (the outbox relay failing while the server is down) and its
// broker's (the disconnection) — carries service=<name> exactly once. It was
// twice on herald's lines: the process labelled the logger it gave herald,
// which labels its lines itself.
func TestServiceLogLinesNameTheServiceOnce(t *testing.T) {
	srv, err := natsjs.Embedded(context.Background(), natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"),
		natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var out, errb testlog.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, "orders", []string{"-s", srv.URL(), "--trace=false", "--db", filepath.Join(t.TempDir(), "orders.db")}, &out, &errb)
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testwait.UntilReport(t, 30*time.Second, func() bool {
			select {
			case code := <-done:
				t.Fatalf("the service exited (%d) while waiting for %s:\n%s", code, what, errb.String())
			default:
			}
			return cond()
		}, func() string { return fmt.Sprintf("no %s:\nstdout: %s\nstderr: %s", what, out.String(), errb.String()) })
	}
	waitFor("HTTP", func() bool { return strings.Contains(out.String(), "orders listening on http://") })
	api := strings.TrimSpace(strings.TrimPrefix(out.String(), "orders listening on "))
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor("the disconnection", func() bool { return strings.Contains(errb.String(), "disconnected; reconnecting") })
	resp, err := http.Post(api+"/orders", "application/json",
		strings.NewReader(`{"customer_id":"c1","email":"c1@example.com","items":[{"product_id":"p-lamp","quantity":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders: %d", resp.StatusCode)
	}
	waitFor("herald's relay to log a failed publish", func() bool { return strings.Contains(errb.String(), `msg="outbox relay"`) })
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the service did not stop")
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	for _, l := range lines {
		if n := strings.Count(l, "service=orders"); n != 1 {
			t.Errorf("service=orders %d times in: %s", n, l)
		}
	}
	t.Logf("%d lines:\n%s", len(lines), errb.String())
}
