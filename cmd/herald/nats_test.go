package main

import (
	"context"
	"errors"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/trace"
)

// downURL returns the URL of a loopback port nothing listens on.
func downURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

// TestNATSDownFailsFast points every command that connects to NATS at a port
// nothing listens on: each must fail within seconds (it waited 10 s and said
// "context deadline exceeded"), exit 1, and name the URL and the cause.
func TestNATSDownFailsFast(t *testing.T) {
	clearNATSEnv(t)
	url := downURL(t)
	lock := filepath.Join(t.TempDir(), "herald.lock.json")
	for _, args := range [][]string{
		{"catalog"},
		{"catalog", "why", "order.confirmed"},
		{"catalog", "forget", "orders"},
		{"schema", "check", "--lock", lock},
		{"trace", "some-flow"},
		{"tail"},
	} {
		for _, flag := range []string{"--server", "-s", "--nats"} {
			args := append(append([]string{}, args...), flag, url)
			start := time.Now()
			code, _, stderr := runExit(t, args...)
			elapsed := time.Since(start)
			t.Logf("herald %s: %v: %s", strings.Join(args, " "), elapsed.Round(time.Millisecond), strings.TrimSpace(stderr))
			if code != exitFailure {
				t.Errorf("herald %s: exit %d, want %d", strings.Join(args, " "), code, exitFailure)
			}
			if want := "cannot connect to " + url + ": connection refused"; !strings.Contains(stderr, want) {
				t.Errorf("herald %s: stderr %q lacks %q", strings.Join(args, " "), stderr, want)
			}
			if elapsed > 5*time.Second {
				t.Errorf("herald %s took %v to fail", strings.Join(args, " "), elapsed)
			}
		}
	}
}

// TestNATSUnknownHostAndSilentServer: a host name that does not resolve
// fails at once with the lookup error; a port that accepts but never speaks
// NATS fails after the dial timeout (2 s), not 10 s.
func TestNATSUnknownHostAndSilentServer(t *testing.T) {
	clearNATSEnv(t)
	start := time.Now()
	code, _, stderr := runExit(t, "catalog", "-s", "nats://no-such-host.invalid:4222")
	if code != exitFailure || !strings.Contains(stderr, "cannot connect to nats://no-such-host.invalid:4222") ||
		!strings.Contains(stderr, "no-such-host.invalid") || time.Since(start) > 5*time.Second {
		t.Errorf("unknown host: exit %d after %v: %s", code, time.Since(start), stderr)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the test ends
		}
	}()
	start = time.Now()
	code, _, stderr = runExit(t, "catalog", "-s", "nats://"+l.Addr().String())
	elapsed := time.Since(start)
	t.Logf("silent server: %v: %s", elapsed.Round(time.Millisecond), strings.TrimSpace(stderr))
	if code != exitFailure || !strings.Contains(stderr, "cannot connect to nats://"+l.Addr().String()) || elapsed > 5*time.Second {
		t.Errorf("silent server: exit %d after %v: %s", code, elapsed, stderr)
	}
}

// TestNATSURLSources: --server beats HERALD_NATS_URL, which beats NATS_URL
// (what herald dev prints), which beats herald dev's default URL.
func TestNATSURLSources(t *testing.T) {
	clearNATSEnv(t)
	b, err := natsjs.Embedded(context.Background(), natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"),
		natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	down := downURL(t)

	// Connected: the server is asked for its trace stream, which it does
	// not have.
	connected := func(what string) {
		t.Helper()
		if _, err := runCLI(t, "trace", "no-such-flow"); !errors.Is(err, broker.ErrNotProvisioned) {
			t.Errorf("%s: err %v, want broker.ErrNotProvisioned (connected)", what, err)
		}
	}
	refused := func(what, url string, args ...string) {
		t.Helper()
		_, err := runCLI(t, append([]string{"trace", "no-such-flow"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "cannot connect to "+url) {
			t.Errorf("%s: err %v, want one naming %s", what, err, url)
		}
	}

	// Nothing set: herald dev's default URL, unless a herald dev of someone
	// else's runs there.
	if c, err := net.DialTimeout("tcp", devListen, time.Second); err == nil {
		c.Close()
		t.Logf("%s is in use: not checking the error for herald dev's default URL", devListen)
	} else if _, err := runCLI(t, "trace", "x"); err == nil || !strings.Contains(err.Error(), "cannot connect to "+devURL) ||
		!strings.Contains(err.Error(), "is herald dev running?") {
		t.Errorf("nothing set: err %v, want herald dev's URL and a hint", err)
	}
	t.Setenv("NATS_URL", b.URL())
	connected("NATS_URL")
	t.Setenv("HERALD_NATS_URL", down)
	refused("HERALD_NATS_URL over NATS_URL", down)
	if _, err := runCLI(t, "trace", "no-such-flow", "--server", b.URL()); !errors.Is(err, broker.ErrNotProvisioned) {
		t.Errorf("--server over the environment: err %v, want broker.ErrNotProvisioned (connected)", err)
	}
	t.Setenv("HERALD_NATS_URL", "")
	refused("--nats over NATS_URL", down, "--nats", down)
}

// TestDevReportsBusyPort: herald dev on a port in use fails at once with
// the cause (it waited 10 s and said "embedded server not ready").
func TestDevReportsBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	code, stdout, stderr := runExit(t, "dev", "--listen", l.Addr().String(), "--data-dir", t.TempDir())
	elapsed := time.Since(start)
	t.Logf("herald dev on a busy port: %v", elapsed.Round(time.Millisecond))
	if code != exitFailure || !strings.Contains(stderr, "address already in use") || !strings.Contains(stderr, l.Addr().String()) {
		t.Errorf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if elapsed > 5*time.Second {
		t.Errorf("took %v to fail", elapsed)
	}
}

// TestDevPrintsTheNATSURL runs herald dev on a free port until it prints
// its export line, and checks that line's URL works for another command.
func TestDevPrintsTheNATSURL(t *testing.T) {
	clearNATSEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testlog.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(new(testlog.Buffer))
	cmd.SetArgs([]string{"dev", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var url string
	testwait.UntilReport(t, 30*time.Second, func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			if u, ok := strings.CutPrefix(line, "export NATS_URL="); ok {
				url = u
			}
		}
		if url != "" {
			return true
		}
		select {
		case err := <-done:
			t.Fatalf("herald dev ended: %v\n%s", err, out.String())
		default:
		}
		return false
	}, func() string { return "no export line:\n" + out.String() })
	t.Setenv("NATS_URL", url)
	if _, err := runCLI(t, "trace", "no-such-flow"); !errors.Is(err, trace.ErrNotFound) {
		t.Errorf("herald trace with NATS_URL=%s: %v, want trace.ErrNotFound (connected, and dev created the trace stream)", url, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("herald dev: %v", err)
	}
}

// TestDLQReplayNATSDown: replay goes through the broker, and fails fast
// when it is down.
func TestDLQReplayNATSDown(t *testing.T) {
	clearNATSEnv(t)
	db := filepath.Join(t.TempDir(), "shipping.db")
	st, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.EngineOf(st).DeadLetterInsert(context.Background(), nil, store.DeadLetter{Service: "shipping", Subscription: "schedule",
		Reason: store.ReasonExhausted, Header: map[string]string{}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	url := downURL(t)
	t.Setenv("NATS_URL", url)
	start := time.Now()
	code, _, stderr := runExit(t, "dlq", "replay", "--all", "--service", "shipping", "--db", db)
	if code != exitFailure || !strings.Contains(stderr, "cannot connect to "+url+": connection refused") || time.Since(start) > 5*time.Second {
		t.Errorf("replay with NATS down: exit %d after %v: %s", code, time.Since(start), stderr)
	}
}
