package shop

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ownFlags are the flags only one service has.
var ownFlags = map[string][]string{"shipping": {"dispatch-delay"}, "notifications": {"smtp", "smtp-from"}}

// TestServiceHelp: -h and --help exit 0 (they exited 1 with "flag: help
// requested") and list the service's own flags and no other service's.
func TestServiceHelp(t *testing.T) {
	for _, name := range Services {
		for _, h := range []string{"-h", "--help", "-help"} {
			var out, errb bytes.Buffer
			code := Run(context.Background(), name, []string{h}, &out, &errb)
			help := out.String()
			if code != ExitOK || errb.Len() != 0 || !strings.HasPrefix(help, "Usage: "+name+" [flags]") {
				t.Fatalf("%s %s: exit %d, stderr %q, stdout:\n%s", name, h, code, errb.String(), help)
			}
			for _, want := range []string{"-server URLS", "-db FILE", "-listen ADDRESS", "logs each failed attempt", "Exit status"} {
				if !strings.Contains(help, want) {
					t.Errorf("%s %s lacks %q:\n%s", name, h, want, help)
				}
			}
			for svc, flags := range ownFlags {
				for _, f := range flags {
					if listed := regexp.MustCompile(`(?m)^  -` + f + `\b`).MatchString(help); listed != (svc == name) {
						t.Errorf("%s %s: -%s listed = %v:\n%s", name, h, f, listed, help)
					}
				}
			}
		}
	}
}

// TestServiceFlagPlaceholders: the flag package, like pflag, makes the
// first backquoted text of a usage the value's placeholder ("-nats herald
// dev", "-trace herald trace" came from backquoted commands).
func TestServiceFlagPlaceholders(t *testing.T) {
	caps := regexp.MustCompile(`^([A-Z][A-Z0-9_:]*|value|string|duration)?$`)
	for _, name := range Services {
		fs, _ := newFlags(name)
		fs.VisitAll(func(f *flag.Flag) {
			placeholder, usage := flag.UnquoteUsage(f)
			if !caps.MatchString(placeholder) || strings.Contains(usage, "`") {
				t.Errorf("%s -%s: placeholder %q, usage %q", name, f.Name, placeholder, usage)
			}
		})
	}
}

func TestServiceUsageErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"orders", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"orders", []string{"--dispatch-delay", "1s"}, "flag provided but not defined: -dispatch-delay"}, // shipping's flag
		{"reviews", []string{"--smtp", "127.0.0.1:25"}, "flag provided but not defined: -smtp"},          // notifications'
		{"shipping", []string{"--dispatch-delay", "-1s"}, "--dispatch-delay -1s"},
		{"shipping", []string{"--dispatch-delay", "soon"}, "invalid value"},
		{"orders", []string{"extra"}, `unexpected argument "extra"`},
		{"orders", []string{"--server", ""}, "no NATS server"},
		{"orders", []string{"--partitions", "0"}, "--partitions 0: want 1 to 256"},
		{"shipping", []string{"--partitions", "257"}, "--partitions 257: want 1 to 256"},
		{"reviews", []string{"--partitions", "many"}, `invalid value "many" for flag -partitions`},
		{"notifications", []string{"--replicas", "0"}, "--replicas 0: want 1 to 5"},
		{"orders", []string{"--replicas", "7"}, "--replicas 7: want 1 to 5"},
	} {
		var out, errb bytes.Buffer
		code := Run(context.Background(), c.name, c.args, &out, &errb)
		if code != ExitUsage || !strings.Contains(errb.String(), c.want) || !strings.Contains(errb.String(), "Run '"+c.name+" -h' for the flags.") {
			t.Errorf("%s %v: exit %d, stderr:\n%s", c.name, c.args, code, errb.String())
		}
	}
	var errb bytes.Buffer
	if code := Run(context.Background(), "billing", nil, &bytes.Buffer{}, &errb); code != ExitUsage || !strings.Contains(errb.String(), `unknown service "billing"`) {
		t.Errorf("unknown service: exit %d: %s", code, errb.String())
	}
}

// TestServiceNATSURLSources: --server, -s and --nats set one value, whose
// default is HERALD_NATS_URL, else NATS_URL, else herald dev's URL.
func TestServiceNATSURLSources(t *testing.T) {
	t.Setenv("HERALD_NATS_URL", "")
	t.Setenv("NATS_URL", "")
	url := func(args ...string) string {
		fs, o := newFlags("orders")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o.nats
	}
	if got := url(); got != DevURL {
		t.Errorf("default %q, want %q", got, DevURL)
	}
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	if got := url(); got != "nats://127.0.0.1:1" {
		t.Errorf("with NATS_URL: %q", got)
	}
	t.Setenv("HERALD_NATS_URL", "nats://127.0.0.1:2")
	if got := url(); got != "nats://127.0.0.1:2" {
		t.Errorf("with HERALD_NATS_URL too: %q", got)
	}
	for _, f := range []string{"--server", "-s", "--nats"} {
		if got := url(f, "nats://127.0.0.1:3"); got != "nats://127.0.0.1:3" {
			t.Errorf("%s: %q", f, got)
		}
	}
}

// TestServiceScaleFlagsFromEnv: --partitions and --replicas default to
// HERALD_PARTITIONS and HERALD_REPLICAS (else 1), a flag wins over its
// variable, and a variable that is no number is a usage error naming it.
func TestServiceScaleFlagsFromEnv(t *testing.T) {
	for _, c := range []struct {
		env            [2]string // HERALD_PARTITIONS, HERALD_REPLICAS
		args           []string
		partitions, rf int
		err            string
	}{
		{env: [2]string{"", ""}, partitions: 1, rf: 1},
		{env: [2]string{"4", "3"}, partitions: 4, rf: 3},
		{env: [2]string{"4", "3"}, args: []string{"--partitions", "8", "--replicas", "1"}, partitions: 8, rf: 1},
		{env: [2]string{"four", ""}, err: `HERALD_PARTITIONS="four": want a whole number`},
		{env: [2]string{"", "3x"}, err: `HERALD_REPLICAS="3x": want a whole number`},
		{env: [2]string{"0", ""}, err: "--partitions 0"},
	} {
		t.Setenv("HERALD_PARTITIONS", c.env[0])
		t.Setenv("HERALD_REPLICAS", c.env[1])
		fs, o := newFlags("orders")
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := o.check()
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("env %v, args %v: err %v, want %q", c.env, c.args, err, c.err)
			}
			var out, errb bytes.Buffer
			if code := Run(context.Background(), "orders", c.args, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), c.err) {
				t.Errorf("env %v: Run exit %d, stderr %q; want %d naming %q", c.env, code, errb.String(), ExitUsage, c.err)
			}
		case err != nil:
			t.Errorf("env %v, args %v: %v", c.env, c.args, err)
		case o.partitions != c.partitions || o.replicas != c.rf:
			t.Errorf("env %v, args %v: partitions %d, replicas %d; want %d, %d", c.env, c.args, o.partitions, o.replicas, c.partitions, c.rf)
		}
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServiceBusyHTTPPortFailsBeforeNATS: a service whose HTTP port is
// taken fails at once with the cause — before it connects to NATS (here:
// no server at all, which it would wait for) and so before it joins any
// consumer (here: a real server, left without consumers or manifests).
func TestServiceBusyHTTPPortFailsBeforeNATS(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	b, err := natsjs.Embedded(context.Background(), natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"),
		natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, server := range []string{"nats://" + freeAddr(t), b.URL()} {
		var out, errb testlog.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		code := Run(ctx, "shipping", []string{"--server", server, "--listen", busy.Addr().String(), "--db", filepath.Join(t.TempDir(), "shipping.db")}, &out, &errb)
		elapsed := time.Since(start)
		cancel()
		t.Logf("server %s: exit %d after %v: %s", server, code, elapsed.Round(time.Millisecond), strings.TrimSpace(errb.String()))
		if code != ExitFailure || !strings.Contains(errb.String(), "--listen "+busy.Addr().String()) ||
			!strings.Contains(errb.String(), "address already in use") || strings.Contains(errb.String(), "cannot connect") {
			t.Errorf("server %s: exit %d, stderr:\n%s", server, code, errb.String())
		}
		if elapsed > 5*time.Second {
			t.Errorf("server %s: took %v to fail", server, elapsed)
		}
	}

	nc, err := nats.Connect(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	streams := js.ListStreams(ctx)
	for s := range streams.Info() {
		if s.State.Consumers > 0 {
			t.Errorf("stream %s has %d consumers: the service joined before it failed", s.Config.Name, s.State.Consumers)
		}
	}
	if err := streams.Err(); err != nil {
		t.Fatal(err)
	}
	if ms, err := b.Manifests(ctx); err == nil && len(ms) > 0 {
		t.Errorf("manifests published by a service that failed to start: %v", ms)
	}
}

// TestServiceWaitsForNATS: a service started before its NATS server logs
// each failed attempt with the cause, starts serving once the server is
// up, and stops cleanly.
func TestServiceWaitsForNATS(t *testing.T) {
	addr := freeAddr(t)
	var out, errb testlog.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, "orders", []string{"-s", "nats://" + addr, "--db", filepath.Join(t.TempDir(), "orders.db")}, &out, &errb)
	}()
	attempts := func() int { return strings.Count(errb.String(), `msg="herald/natsjs: cannot connect; retrying"`) }
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
	waitFor("second failed attempt", func() bool { return attempts() >= 2 })
	log := errb.String()
	for _, want := range []string{"service=orders", "servers=nats://" + addr, "attempt=1", "attempt=2", "connection refused"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log of the failed attempts lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(out.String(), "listening") {
		t.Errorf("serving before connecting: %s", out.String())
	}

	b, err := natsjs.Embedded(context.Background(), natsjs.WithEphemeral(), natsjs.WithListen(addr),
		natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitFor("HTTP", func() bool { return strings.Contains(out.String(), "orders listening on http://") })
	httpAddr := strings.TrimSpace(strings.TrimPrefix(out.String(), "orders listening on "))
	resp, err := http.Get(httpAddr + "/orders/no-such-order")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /orders/no-such-order: %d", resp.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Errorf("exit %d after Ctrl-C:\n%s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not stop")
	}
}
