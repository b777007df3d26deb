package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
)

// ---- test scaffolding --------------------------------------------------------

var testTmp string // removed by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natsjs-test-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTmp = dir
	code := m.Run()
	_ = os.RemoveAll(testTmp)
	os.Exit(code)
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func embedded(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger())}, opts...)
	b, err := Embedded(testCtx(t, 30*time.Second), opts...)
	if err != nil {
		t.Fatalf("Embedded: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

var (
	buildOnce sync.Once
	serverBin string
	buildErr  error
)

// natsServerBinary builds github.com/nats-io/nats-server/v2 from the module
// cache, once per test binary.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no external nats-server")
	}
	buildOnce.Do(func() {
		bin := filepath.Join(testTmp, "nats-server")
		if runtime.GOOS == "windows" {
			bin += ".exe"
		}
		cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
			return
		}
		serverBin = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return serverBin
}

// externalServer is a nats-server process.
type externalServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	conf string
	cmd  *exec.Cmd
	exit chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startExternal starts a nats-server with JetStream in a new store
// directory, fsyncing every write (sync_interval: always).
func startExternal(t *testing.T) *externalServer {
	t.Helper()
	bin := natsServerBinary(t)
	s := &externalServer{t: t, bin: bin, dir: t.TempDir()}
	s.conf = filepath.Join(s.dir, "nats.conf")
	if err := os.WriteFile(s.conf, []byte("jetstream {\n  sync_interval: always\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		s.port = freePort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	return s
}

func (s *externalServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// start runs the server on s.port and s.dir and waits until it accepts
// connections.
func (s *externalServer) start() error {
	cmd := exec.Command(s.bin, "-c", s.conf, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-js", "-sd", filepath.Join(s.dir, "store"), "-n", "herald-test-"+strconv.Itoa(s.port))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	exited := false
	err := testwait.For(20*time.Second, "nats-server to accept connections", func() bool {
		select {
		case <-exit:
			exited = true
			return true
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	switch {
	case exited:
		return fmt.Errorf("nats-server exited at start:\n%s", out.String())
	case err != nil:
		_ = cmd.Process.Kill()
		<-exit
		return fmt.Errorf("nats-server does not accept connections on %d:\n%s", s.port, out.String())
	}
	s.cmd, s.exit = cmd, exit
	return nil
}

// kill sends SIGKILL to the server process (by PID) and waits for it.
func (s *externalServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

func connect(t testing.TB, url string, opts ...Option) *Broker {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger()), WithReconnectWait(100 * time.Millisecond)}, opts...)
	b, err := Connect(testCtx(t, 30*time.Second), []string{url}, opts...)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// ---- conformance -----------------------------------------------------------------

func TestConformanceEmbedded(t *testing.T) {
	var mu sync.Mutex
	dirs := map[string]string{} // subtest -> data dir, so a subtest's brokers share their data
	brokertest.Run(t, brokertest.All, func(t *testing.T) broker.Broker {
		mu.Lock()
		dir, ok := dirs[t.Name()]
		if !ok {
			dir = t.TempDir()
			dirs[t.Name()] = dir
		}
		mu.Unlock()
		b, err := Embedded(testCtx(t, 30*time.Second), WithDataDir(dir), WithLogger(testLogger()))
		if err != nil {
			t.Fatalf("Embedded: %v", err)
		}
		return b
	})
}

func TestConformanceEmbeddedEphemeral(t *testing.T) {
	caps := brokertest.All
	caps.Persistent = false // every broker has its own temporary directory
	brokertest.Run(t, caps, func(t *testing.T) broker.Broker {
		b, err := Embedded(testCtx(t, 30*time.Second), WithEphemeral(), WithLogger(testLogger()))
		if err != nil {
			t.Fatalf("Embedded: %v", err)
		}
		return b
	})
}

// TestConformanceEmbeddedPartitioned runs the suite with four partitions,
// over TCP so that the claim cases have a second instance: the keyless
// events of most cases are on partition 0, the case of Partitioner spreads
// keys over all four.
func TestConformanceEmbeddedPartitioned(t *testing.T) {
	caps := brokertest.All
	caps.Persistent = false
	caps.ClaimTTL = claimTTL
	brokertest.Run(t, caps, func(t *testing.T) broker.Broker {
		return listening(t, WithPartitions(4), WithPinnedTTL(claimTTL))
	})
}

// TestConformanceEmbeddedSyncAlways runs the suite on a server that fsyncs
// every write, where Publish sends atomic batches (and falls back to single
// events for a batch the server refuses, e.g. one holding a duplicate).
func TestConformanceEmbeddedSyncAlways(t *testing.T) {
	caps := brokertest.All
	caps.Persistent = false
	brokertest.Run(t, caps, func(t *testing.T) broker.Broker {
		b, err := Embedded(testCtx(t, 30*time.Second), WithEphemeral(), WithSyncAlways(true), WithLogger(testLogger()))
		if err != nil {
			t.Fatalf("Embedded: %v", err)
		}
		if !b.cfg.atomicBatches {
			t.Fatal("sync always did not turn atomic batches on")
		}
		return b
	})
}

func TestConformanceExternal(t *testing.T) {
	srv := startExternal(t)
	caps := brokertest.All
	caps.ClaimTTL = claimTTL
	opts := []Option{WithLogger(testLogger()), WithName("herald-conformance"), WithPinnedTTL(claimTTL)}
	brokertest.Run(t, caps, func(t *testing.T) broker.Broker {
		b, err := Connect(testCtx(t, 30*time.Second), []string{srv.url()}, opts...)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		// For ResumeAfterReconnect and the claim cases.
		return &reconnectable{Broker: b, url: srv.url(), opts: opts}
	})
}

// ---- durability ----------------------------------------------------------------

func bulk(typ string, n int) []*envelope.Envelope {
	es := make([]*envelope.Envelope, n)
	for i := range es {
		now := time.Now().UTC()
		es[i] = &envelope.Envelope{ID: envelope.NewID(now), Type: typ, Version: 1, Kind: envelope.KindIntegration,
			Source: "natsjs-test", Time: now, DataContentType: "application/json", Data: []byte(`{"i":` + strconv.Itoa(i) + `}`)}
	}
	return es
}

func mustPublish(t testing.TB, b *Broker, es []*envelope.Envelope) {
	t.Helper()
	for i, err := range b.Publish(testCtx(t, 60*time.Second), es) {
		if err != nil {
			t.Fatalf("Publish event %d: %v", i, err)
		}
	}
}

// consumeIDs consumes sub until stop returns true for the ids seen so far
// (acking every delivery when ack is set), then stops the Consume.
func consumeIDs(t *testing.T, b *Broker, sub broker.Subscription, ack bool, stop func(ids []string) bool) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, sub, 100, func(ctx context.Context, ds []broker.Delivery) {
			for _, d := range ds {
				if ack {
					if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
						t.Errorf("Ack: %v", err)
						continue
					}
				}
				mu.Lock()
				got = append(got, d.Header()[envelope.HeaderID])
				enough := stop(got)
				mu.Unlock()
				if enough {
					cancel()
					return
				}
			}
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Consume: %v", err)
		}
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("timed out; consumed %d events", len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), got...)
}

func TestEmbeddedRestartKeepsAckedEvents(t *testing.T) {
	dir := t.TempDir()
	sub := broker.Subscription{Service: "restart", Name: "all", Types: []string{"test.restart.done"},
		Kind: envelope.KindIntegration, AckWait: 10 * time.Second}
	es := bulk("test.restart.done", 1000)

	b1, err := Embedded(testCtx(t, 30*time.Second), WithDataDir(dir), WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Provision(testCtx(t, 30*time.Second), broker.Topology{Service: "restart", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, b1, es)
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b2 := embedded(t, WithDataDir(dir))
	got := consumeIDs(t, b2, sub, true, func(ids []string) bool { return len(ids) >= len(es) })
	for i, e := range es {
		if got[i] != e.ID {
			t.Fatalf("event %d after restart: got %s, want %s", i, got[i], e.ID)
		}
	}
}

func TestExternalServerKill9KeepsAckedEvents(t *testing.T) {
	srv := startExternal(t)
	b := connect(t, srv.url())
	sub := broker.Subscription{Service: "kill9", Name: "all", Types: []string{"test.kill9.done"},
		Kind: envelope.KindIntegration, AckWait: 5 * time.Second}
	if err := b.Provision(testCtx(t, 30*time.Second), broker.Topology{Service: "kill9", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	es := bulk("test.kill9.done", 1000)
	mustPublish(t, b, es)
	// Consume and (confirmed-)ack the first 300.
	first := consumeIDs(t, b, sub, true, func(ids []string) bool { return len(ids) >= 300 })
	for i, id := range first[:300] {
		if id != es[i].ID {
			t.Fatalf("event %d: got %s, want %s", i, id, es[i].ID)
		}
	}

	srv.kill() // SIGKILL: no chance to flush anything
	// While the server is down a publish fails as transient.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	errs := b.Publish(ctx, bulk("test.kill9.done", 1))
	cancel()
	if !errors.Is(errs[0], broker.ErrTransient) {
		t.Errorf("Publish with the server down: got %v, want ErrTransient", errs[0])
	}
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}

	want := map[string]bool{}
	for _, e := range es[300:] {
		want[e.ID] = true
	}
	again := 0
	acked := map[string]bool{}
	for _, id := range first {
		acked[id] = true
	}
	got := consumeIDs(t, b, sub, true, func(ids []string) bool {
		id := ids[len(ids)-1]
		if acked[id] {
			again++
		}
		delete(want, id)
		return len(want) == 0
	})
	t.Logf("after kill -9 and restart: consumed %d, all 700 unacked present; %d of the 300 acked were redelivered", len(got), again)
}

// ---- options -------------------------------------------------------------------

func TestOptionValidation(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	missing := filepath.Join(t.TempDir(), "missing")
	embeddedCases := []struct {
		name string
		opts []Option
	}{
		{"no data dir", nil},
		{"data dir and ephemeral", []Option{WithDataDir(t.TempDir()), WithEphemeral()}},
		{"empty data dir", []Option{WithDataDir("")}},
		{"replicas 0", []Option{WithEphemeral(), WithReplicas(0)}},
		{"replicas 6", []Option{WithEphemeral(), WithReplicas(6)}},
		{"replicas 3 embedded", []Option{WithEphemeral(), WithReplicas(3)}},
		{"negative window", []Option{WithEphemeral(), WithDuplicateWindow(-time.Second)}},
		{"zero in flight", []Option{WithEphemeral(), WithMaxInFlight(0)}},
		{"empty prefix", []Option{WithEphemeral(), WithPrefix("")}},
		{"wildcard prefix", []Option{WithEphemeral(), WithPrefix("a.*")}},
		{"spaced prefix", []Option{WithEphemeral(), WithPrefix("a b")}},
		{"bad listen", []Option{WithEphemeral(), WithListen("localhost")}},
		{"bad listen port", []Option{WithEphemeral(), WithListen("127.0.0.1:99999")}},
		{"zero max memory", []Option{WithEphemeral(), WithMaxMemory(0)}},
		{"negative max store", []Option{WithEphemeral(), WithMaxStore(-1)}},
		{"zero max payload", []Option{WithEphemeral(), WithMaxPayload(0)}},
		{"max payload over 64 MiB", []Option{WithEphemeral(), WithMaxPayload(64<<20 + 1)}},
		{"sync interval with sync always", []Option{WithEphemeral(), WithSyncAlways(true), WithSyncInterval(time.Second)}},
		{"zero sync interval", []Option{WithEphemeral(), WithSyncAlways(false), WithSyncInterval(0)}},
		{"nil logger", []Option{WithEphemeral(), WithLogger(nil)}},
		{"nil option", []Option{WithEphemeral(), nil}},
		{"zero max age", []Option{WithEphemeral(), WithMaxAge(0)}},
		{"token on embedded", []Option{WithEphemeral(), WithToken("x")}},
		{"creds on embedded", []Option{WithEphemeral(), WithCredsFile(missing)}},
	}
	for _, tc := range embeddedCases {
		t.Run("Embedded/"+tc.name, func(t *testing.T) {
			b, err := Embedded(ctx, tc.opts...)
			if err == nil {
				_ = b.Close()
			}
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("got %v, want ErrInvalidOption", err)
			}
		})
	}
	connectCases := []struct {
		name string
		urls []string
		opts []Option
	}{
		{"no urls", nil, nil},
		{"empty url", []string{""}, nil},
		{"http url", []string{"http://127.0.0.1:4222"}, nil},
		{"comma in url", []string{"nats://a:1,nats://b:2"}, nil},
		{"data dir on connect", []string{"nats://127.0.0.1:1"}, []Option{WithDataDir(t.TempDir())}},
		{"sync always on connect", []string{"nats://127.0.0.1:1"}, []Option{WithSyncAlways(true)}},
		{"listen on connect", []string{"nats://127.0.0.1:1"}, []Option{WithListen("127.0.0.1:0")}},
		{"max payload on connect", []string{"nats://127.0.0.1:1"}, []Option{WithMaxPayload(1 << 20)}},
		{"empty user", []string{"nats://127.0.0.1:1"}, []Option{WithUserPassword("", "p")}},
		{"empty token", []string{"nats://127.0.0.1:1"}, []Option{WithToken("")}},
		{"missing nkey seed", []string{"nats://127.0.0.1:1"}, []Option{WithNKeySeedFile(missing)}},
		{"missing creds", []string{"nats://127.0.0.1:1"}, []Option{WithCredsFile(missing)}},
		{"missing CA", []string{"nats://127.0.0.1:1"}, []Option{WithRootCAs(missing)}},
		{"missing client cert", []string{"nats://127.0.0.1:1"}, []Option{WithClientCert(missing, missing)}},
		{"nil tls config", []string{"nats://127.0.0.1:1"}, []Option{WithTLSConfig(nil)}},
		{"zero reconnect buffer", []string{"nats://127.0.0.1:1"}, []Option{WithReconnectBuffer(0)}},
		{"negative window", []string{"nats://127.0.0.1:1"}, []Option{WithDuplicateWindow(-1)}},
		{"bad replicas", []string{"nats://127.0.0.1:1"}, []Option{WithReplicas(-1)}},
	}
	for _, tc := range connectCases {
		t.Run("Connect/"+tc.name, func(t *testing.T) {
			b, err := Connect(ctx, tc.urls, tc.opts...)
			if err == nil {
				_ = b.Close()
			}
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("got %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestConnectHonoursContext(t *testing.T) {
	port := freePort(t) // nothing listens there
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Connect(ctx, []string{"nats://127.0.0.1:" + strconv.Itoa(port)}, WithLogger(testLogger()))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Connect took %v with a 500ms context", el)
	}
}

// ---- transport specifics ---------------------------------------------------------

func TestEventTypesAndKinds(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 30*time.Second)
	good := broker.Subscription{Service: "types", Name: "ok", Types: []string{"shop.order.confirmed", "shop.order-v2.x_y"},
		Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "types", Subscriptions: []broker.Subscription{good}}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"shop order", "shop.*", "shop.>", "Shop.Order", ".shop", "shop.", "shop..order", "shop\torder", "shöp"} {
		e := bulk("x", 1)[0]
		e.Type = typ
		if errs := b.Publish(ctx, []*envelope.Envelope{e}); errs[0] == nil {
			t.Errorf("Publish of type %q succeeded", typ)
		}
		bad := good
		bad.Name, bad.Types = "bad", []string{typ}
		if err := b.Provision(ctx, broker.Topology{Service: "types", Subscriptions: []broker.Subscription{bad}}); err == nil {
			t.Errorf("Provision of type %q succeeded", typ)
		}
	}
	domain := good
	domain.Name, domain.Kind = "domain", envelope.KindDomain
	if err := b.Provision(ctx, broker.Topology{Service: "types", Subscriptions: []broker.Subscription{domain}}); err == nil {
		t.Error("Provision of a domain subscription succeeded")
	}
	if err := b.Provision(ctx, broker.Topology{Service: "types", Publishes: []broker.TypeRef{{Type: "a.b", Kind: envelope.KindDomain}}}); err == nil {
		t.Error("Provision of a published domain type succeeded")
	}
	// Values NATS headers cannot carry as they are (CR, LF, surrounding
	// white space) travel percent-encoded, as the CloudEvents NATS binding
	// says, and come back intact.
	stream, err := b.js.Stream(ctx, b.names.intStreamOf(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, mutate := range []func(*envelope.Envelope){
		func(e *envelope.Envelope) { e.CorrelationID = "a\r\nb" },
		func(e *envelope.Envelope) { e.Source = " padded" },
		func(e *envelope.Envelope) { e.Key = "padded\t" },
	} {
		e := bulk("shop.order.confirmed", 1)[0]
		mutate(e)
		if errs := b.Publish(ctx, []*envelope.Envelope{e}); errs[0] != nil {
			t.Fatalf("Publish of %+v: %v", e, errs[0])
		}
		m, err := stream.GetLastMsgForSubject(ctx, "herald.int.shop.order.confirmed")
		if err != nil {
			t.Fatal(err)
		}
		h := map[string]string{}
		for k, v := range m.Header {
			h[k] = v[0]
		}
		got, err := envelope.FromBinary(h, m.Data)
		if err != nil {
			t.Fatalf("FromBinary of %q: %v", h, err)
		}
		if got.CorrelationID != e.CorrelationID || got.Source != e.Source || got.Key != e.Key {
			t.Errorf("published %q %q %q, stored %q %q %q", e.CorrelationID, e.Source, e.Key, got.CorrelationID, got.Source, got.Key)
		}
	}
}

func TestSubjectsAndStreams(t *testing.T) {
	b := embedded(t, WithEphemeral(), WithPrefix("acme.hq"))
	ctx := testCtx(t, 30*time.Second)
	sub := broker.Subscription{Service: "billing", Name: "on-order", Types: []string{"shop.order.confirmed"}, Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "billing", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ACME_HQ_INT", "ACME_HQ_NTF", "ACME_HQ_DLQ"} {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != DefaultDuplicateWindow {
			t.Errorf("stream %s: storage %v, duplicates %v", name, cfg.Storage, cfg.Duplicates)
		}
		if name == "ACME_HQ_DLQ" && cfg.MaxAge != 14*24*time.Hour {
			t.Errorf("DLQ max age %v", cfg.MaxAge)
		}
	}
	c, err := b.js.Consumer(ctx, "ACME_HQ_INT", "billing_on-order")
	if err != nil {
		t.Fatal(err)
	}
	cc := c.CachedInfo().Config
	if cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxDeliver != -1 || cc.AckWait != 30*time.Second || cc.MaxAckPending != 1024 {
		t.Errorf("consumer config: %+v", cc)
	}
	wantSubj := []string{"acme.hq.int.shop.order.confirmed", "acme.hq.rpl.int.billing_on-order"}
	if strings.Join(cc.FilterSubjects, ",") != strings.Join(wantSubj, ",") {
		t.Errorf("filter subjects %v, want %v", cc.FilterSubjects, wantSubj)
	}

	e := bulk("shop.order.confirmed", 1)[0]
	mustPublish(t, b, []*envelope.Envelope{e})
	if err := b.Replay(ctx, "billing", "on-order", e); err != nil {
		t.Fatal(err)
	}
	var subjects []string
	consumeIDs(t, b, sub, true, func(ids []string) bool { return len(ids) >= 2 })
	msgs, err := b.js.Stream(ctx, "ACME_HQ_INT")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := msgs.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, m.Subject)
		if id := m.Header.Get(jetstream.MsgIDHeader); seq == 1 && id != e.ID || seq == 2 && !strings.HasPrefix(id, e.ID+":replay:") {
			t.Errorf("message %d has Nats-Msg-Id %q", seq, id)
		}
	}
	if subjects[0] != "acme.hq.int.shop.order.confirmed" || subjects[1] != "acme.hq.rpl.int.billing_on-order" {
		t.Errorf("subjects %v", subjects)
	}
}

func TestConsumerNames(t *testing.T) {
	cases := map[[2]string]string{
		{"billing", "on-order"}: "billing_on-order",
		{"Billing", "x"}:        "Billing_x",
	}
	for in, want := range cases {
		if got := ConsumerName(in[0], in[1]); got != want {
			t.Errorf("ConsumerName(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
	// Names that would collide after sanitising do not.
	pairs := [][2]string{{"a.b", "c"}, {"a", "b.c"}, {"a_b", "c"}, {"a", "b_c"}, {"a b", "c"}, {"a>b", "c"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		n := ConsumerName(p[0], p[1])
		if strings.ContainsAny(n, ". *>/\\") {
			t.Errorf("ConsumerName(%q, %q) = %q: not a valid durable name", p[0], p[1], n)
		}
		if other, ok := seen[n]; ok {
			t.Errorf("ConsumerName collision: %v and %v both give %q", other, p, n)
		}
		seen[n] = p
	}
}

func TestReplayAndPublishNotProvisioned(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 30*time.Second)
	e := bulk("shop.order.confirmed", 1)[0]
	if errs := b.Publish(ctx, []*envelope.Envelope{e}); !errors.Is(errs[0], broker.ErrNotProvisioned) {
		t.Errorf("Publish before Provision: got %v, want ErrNotProvisioned", errs[0])
	}
	if err := b.Replay(ctx, "nobody", "nothing", e); !errors.Is(err, broker.ErrNotProvisioned) {
		t.Errorf("Replay before Provision: got %v, want ErrNotProvisioned", err)
	}
	if err := b.Provision(ctx, broker.Topology{Service: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Replay(ctx, "nobody", "nothing", e); !errors.Is(err, broker.ErrNotProvisioned) {
		t.Errorf("Replay to an unknown subscription: got %v, want ErrNotProvisioned", err)
	}
}

func TestDeadLetterDocument(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 30*time.Second)
	if err := b.Provision(ctx, broker.Topology{Service: "billing"}); err != nil {
		t.Fatal(err)
	}
	e := bulk("shop.order.confirmed", 1)[0]
	e.DataContentType = "application/x-protobuf"
	h, body := envelope.ToBinary(e)
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	dl := broker.DeadLetter{Event: e, RawHeader: h, RawData: body, Service: "billing", Subscription: "on.order",
		Reason: "exhausted", LastError: "db down", Attempts: 7, Time: at}
	if err := b.PublishDeadLetter(ctx, dl); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishDeadLetter(ctx, dl); err != nil { // a retry of the same dead letter
		t.Fatal(err)
	}
	s, err := b.js.Stream(ctx, "HERALD_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		t.Logf("cached state: %d", n)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("DLQ holds %d messages, want 1 (the retry is deduplicated)", info.State.Msgs)
	}
	m, err := s.GetLastMsgForSubject(ctx, "herald.dlq.billing.on_order")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(m.Data, &doc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"service": "billing", "subscription": "on.order", "reason": "exhausted",
		"last_error": "db down", "attempts": float64(7), "time": "2025-01-02T03:04:05.000000006Z"} {
		if doc[k] != want {
			t.Errorf("doc[%s] = %v, want %v", k, doc[k], want)
		}
	}
	ev, _ := doc["event"].(map[string]any)
	if ev["id"] != e.ID || ev["type"] != e.Type || ev["datacontenttype"] != "application/x-protobuf" {
		t.Errorf("doc.event = %v", ev)
	}
	var raw struct {
		RawHeader map[string]string `json:"raw_header"`
		RawData   []byte            `json:"raw_data"`
	}
	if err := json.Unmarshal(m.Data, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw.RawData) != string(body) || raw.RawHeader[envelope.HeaderID] != e.ID {
		t.Errorf("raw data/headers not kept: %q %v", raw.RawData, raw.RawHeader)
	}
	if m.Header.Get(envelope.HeaderType) != e.Type || m.Header.Get(envelope.HeaderContentType) != "application/json" ||
		m.Header.Get(HeaderDLQReason) != "exhausted" || m.Header.Get(HeaderDLQAttempts) != "7" {
		t.Errorf("headers: %v", m.Header)
	}
}

func TestEmbeddedListen(t *testing.T) {
	b := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"))
	if !strings.HasPrefix(b.URL(), "nats://127.0.0.1:") {
		t.Fatalf("URL() = %q", b.URL())
	}
	if embedded(t, WithEphemeral()).URL() != "" {
		t.Fatal("URL() of a non-listening server is not empty")
	}
	other := connect(t, b.URL())
	ctx := testCtx(t, 30*time.Second)
	sub := broker.Subscription{Service: "listen", Name: "all", Types: []string{"test.listen"}, Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "listen", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	es := bulk("test.listen", 10)
	mustPublish(t, other, es) // published over TCP, consumed in-process
	got := consumeIDs(t, b, sub, true, func(ids []string) bool { return len(ids) >= 10 })
	for i := range es {
		if got[i] != es[i].ID {
			t.Fatalf("event %d: %s, want %s", i, got[i], es[i].ID)
		}
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	run := func() {
		b, err := Embedded(testCtx(t, 30*time.Second), WithEphemeral(), WithLogger(testLogger()))
		if err != nil {
			t.Fatal(err)
		}
		sub := broker.Subscription{Service: "leak", Name: "all", Types: []string{"test.leak"}, Kind: envelope.KindIntegration}
		if err := b.Provision(testCtx(t, 30*time.Second), broker.Topology{Service: "leak", Subscriptions: []broker.Subscription{sub}}); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, b, bulk("test.leak", 50))
		consumeIDs(t, b, sub, true, func(ids []string) bool { return len(ids) >= 50 })
		done := make(chan error, 1)
		go func() {
			done <- b.Consume(context.Background(), sub, 10, func(context.Context, []broker.Delivery) {})
		}()
		time.Sleep(50 * time.Millisecond)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, broker.ErrClosed) {
				t.Fatalf("Consume after Close: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Consume did not return after Close")
		}
	}
	run() // warm up lazily started package-level goroutines
	before := runtime.NumGoroutine()
	run()
	var after int
	if testwait.For(5*time.Second, "the goroutines to end", func() bool {
		after = runtime.NumGoroutine()
		return after <= before
	}) == nil {
		return
	}
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	t.Fatalf("goroutines: %d before, %d after Close\n%s", before, after, buf[:n])
}

func TestPublishThroughSmallWindowConcurrently(t *testing.T) {
	b := embedded(t, WithEphemeral(), WithMaxInFlight(8), WithSyncAlways(false))
	ctx := testCtx(t, 60*time.Second)
	sub := broker.Subscription{Service: "window", Name: "all", Types: []string{"test.window"}, Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "window", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	all := make([][]*envelope.Envelope, 4)
	for g := range all {
		all[g] = bulk("test.window", 300)
		wg.Go(func() {
			for i, err := range b.Publish(ctx, all[g]) {
				if err != nil {
					t.Errorf("publisher %d event %d: %v", g, i, err)
				}
			}
		})
	}
	wg.Wait()
	got := consumeIDs(t, b, sub, true, func(ids []string) bool { return len(ids) >= 1200 })
	seen := map[string]bool{}
	for _, id := range got {
		seen[id] = true
	}
	for _, es := range all {
		for _, e := range es {
			if !seen[e.ID] {
				t.Fatalf("event %s lost", e.ID)
			}
		}
	}
}

func TestConsumerDeletedWhileConsuming(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 30*time.Second)
	sub := broker.Subscription{Service: "deleted", Name: "all", Types: []string{"test.deleted"}, Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "deleted", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, sub, 10, func(context.Context, []broker.Delivery) {}) }()
	time.Sleep(200 * time.Millisecond)
	if err := b.js.DeleteConsumer(ctx, "HERALD_INT", ConsumerName("deleted", "all")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, broker.ErrNotProvisioned) {
			t.Fatalf("Consume after its consumer was deleted: %v, want ErrNotProvisioned", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Consume did not return after its consumer was deleted")
	}
}

// TestDeliveryHeaders checks that a delivery's Headers, which the consumer
// decodes without building a map, give the envelope that Header gives, and
// the one published.
func TestDeliveryHeaders(t *testing.T) {
	b := embedded(t, WithEphemeral())
	sub := broker.Subscription{Service: "hdr", Name: "all", Types: []string{"test.hdr.done"},
		Kind: envelope.KindIntegration, AckWait: 10 * time.Second}
	if err := b.Provision(testCtx(t, 30*time.Second), broker.Topology{Service: "hdr", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	full := &envelope.Envelope{ID: envelope.NewID(now), Type: "test.hdr.done", Version: 3, Kind: envelope.KindIntegration,
		Source: "natsjs-test", Key: "k1", Time: now, CorrelationID: envelope.NewID(now), CausationID: envelope.NewID(now),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "a=b",
		DataContentType: "application/json", Data: []byte(`{"i":1}`)}
	minimal := &envelope.Envelope{ID: envelope.NewID(now), Type: "test.hdr.done", Version: 1, Kind: envelope.KindIntegration,
		Source: "natsjs-test", Time: now}
	want := []*envelope.Envelope{full, minimal}
	mustPublish(t, b, want)

	ctx, cancel := context.WithCancel(testCtx(t, 60*time.Second))
	defer cancel()
	var got []broker.Delivery
	err := b.Consume(ctx, sub, 10, func(ctx context.Context, ds []broker.Delivery) {
		got = append(got, ds...)
		if len(got) >= len(want) {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range got {
		hs, ok := d.(interface {
			Headers() iter.Seq2[string, string]
		})
		if !ok {
			t.Fatalf("delivery %T has no Headers", d)
		}
		fromSeq, err := envelope.FromBinaryHeaders(hs.Headers(), d.Data())
		if err != nil {
			t.Fatalf("event %d: FromBinaryHeaders: %v", i, err)
		}
		fromMap, err := envelope.FromBinary(d.Header(), d.Data())
		if err != nil {
			t.Fatalf("event %d: FromBinary: %v", i, err)
		}
		for _, e := range []*envelope.Envelope{fromSeq, fromMap} {
			if e.ID != want[i].ID || e.Key != want[i].Key || e.Version != want[i].Version || e.TraceState != want[i].TraceState ||
				e.CausationID != want[i].CausationID || !e.Time.Equal(want[i].Time) || string(e.Data) != string(want[i].Data) {
				t.Errorf("event %d: got %+v, want %+v", i, e, want[i])
			}
		}
		if got := d.Header()["nats-msg-id"]; got != want[i].ID {
			t.Errorf("event %d: nats-msg-id %q, want %q", i, got, want[i].ID)
		}
	}
}
