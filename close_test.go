package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
)

// closeRoleEnv holds the JSON closeRole of a TestCloseRole subprocess.
const closeRoleEnv = "HERALD_CLOSE_ROLE"

// closeRole is what a TestCloseRole subprocess consumes.
type closeRole struct {
	NATS   string `json:"nats"`   // server URL
	Prefix string `json:"prefix"` // natsjs.WithPrefix
	Order  string `json:"order"`  // the orderStepped event it waits for
}

// TestCloseRole is the consumer process of TestCloseDeliversWhatWasCommitted:
// a shipping service, with its own database, on a new connection to the
// server, that waits for one orderStepped event and prints it. It skips
// unless HERALD_CLOSE_ROLE is set.
func TestCloseRole(t *testing.T) {
	spec := os.Getenv(closeRoleEnv)
	if spec == "" {
		t.Skip("only runs as a subprocess of TestCloseDeliversWhatWasCommitted")
	}
	var r closeRole
	if err := json.Unmarshal([]byte(spec), &r); err != nil {
		t.Fatalf("%s: %v", closeRoleEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b, err := natsjs.Connect(ctx, []string{r.NATS}, natsjs.WithPrefix(r.Prefix), natsjs.WithConnectRetry(false), natsjs.WithLogger(log))
	must(t, err)
	defer b.Close()
	svc, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(log))
	must(t, err)
	got := make(chan stepped, 16)
	must(t, herald.Subscribe(svc, orderStepped, "close-role", func(_ context.Context, _ herald.Tx, e stepped) error {
		got <- e
		return nil
	}))
	must(t, svc.Start(ctx))
	defer svc.Close()
	for {
		select {
		case e := <-got:
			fmt.Printf("close-role: received order %s step %d\n", e.OrderID, e.N)
			if e.OrderID == r.Order {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no event of order %s: %v", r.Order, ctx.Err())
		}
	}
}

// TestCloseDeliversWhatWasCommitted: a service that commits and closes at
// once has published what it committed — a consumer in a new process, which
// connects only after the producer closed, receives it — and marked it
// published (Close leaves no backlog). Before Close drained the outbox, the
// relay's publish was cancelled and the event waited for the next start.
func TestCloseDeliversWhatWasCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := "t" + randHex(4)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithPrefix(prefix), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	st := testdb.SQLite(t)
	order := "close-" + randHex(4)
	svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet))
	must(t, err)
	must(t, herald.Translate(svc, stepRecorded, orderStepped, func(_ context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, svc.Start(ctx))
	must(t, svc.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, stepRecorded, step{OrderID: order, N: 1}) }))
	must(t, svc.Close())
	if n, _, err := st.OutboxStats(ctx, "orders"); err != nil || n != 0 {
		t.Errorf("outbox backlog after Close = %d (err %v), want 0", n, err)
	}

	spec, err := json.Marshal(closeRole{NATS: b.URL(), Prefix: prefix, Order: order})
	must(t, err)
	out := filepath.Join(t.TempDir(), "consumer.log")
	f, err := os.Create(out)
	must(t, err)
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCloseRole$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), closeRoleEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = f, f
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill() // by PID: the process this test started
		err = fmt.Errorf("still running after a minute (killed): %w", <-done)
	}
	log, _ := os.ReadFile(out)
	if err != nil || !strings.Contains(string(log), "close-role: received order "+order+" step 1") {
		t.Fatalf("consumer process: %v\n%s", err, log)
	}
}

// TestCloseWithTheServerDownGivesUpAtTheTimeout: with the NATS server down
// (the connection reconnecting) Close retries for the drain timeout, then
// returns and logs at Warn how many committed events it left in the outbox;
// they are still there. The relay's failures say the server is
// unreachable, not "nats: outbound buffer limit exceeded".
func TestCloseWithTheServerDownGivesUpAtTheTimeout(t *testing.T) {
	ctx := context.Background()
	srv, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithLogger(quiet))
	must(t, err)
	defer srv.Close()
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b, err := natsjs.Connect(ctx, []string{srv.URL()}, natsjs.WithLogger(log), natsjs.WithReconnectWait(50*time.Millisecond))
	must(t, err)
	defer b.Close()
	st := testdb.SQLite(t)
	const timeout = time.Second
	svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(log),
		herald.WithRelay(herald.RelayConfig{DrainTimeout: timeout}))
	must(t, err)
	must(t, herald.Translate(svc, stepRecorded, orderStepped, func(_ context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, svc.Start(ctx))
	defer svc.Close()

	must(t, srv.Close())
	testwait.Until(t, 20*time.Second, "the connection to notice the server is gone", func() bool { return b.ConnectedServer() == "" })
	const n = 3
	for i := range n {
		must(t, svc.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, stepRecorded, step{OrderID: "o", N: i}) }))
	}
	testwait.Until(t, 20*time.Second, "a failed publish", func() bool { return strings.Contains(logs.String(), `msg="outbox relay"`) })
	start := time.Now()
	must(t, svc.Close())
	took := time.Since(start)
	t.Logf("Close took %v; log:\n%s", took.Round(time.Millisecond), logs.String())
	if took > timeout+3*time.Second {
		t.Errorf("Close took %v, want about the drain timeout %v", took, timeout)
	}
	left := regexp.MustCompile(`level=WARN msg="closed with committed events not published[^"]*" service=orders unpublished=(\d+)`).FindStringSubmatch(logs.String())
	if left == nil || left[1] != fmt.Sprint(n) {
		t.Errorf("no Warn saying Close left %d events unpublished (got %q)", n, left)
	}
	if backlog, _, err := st.OutboxStats(ctx, "orders"); err != nil || backlog != n {
		t.Errorf("outbox backlog after Close = %d (err %v), want %d", backlog, err, n)
	}
	if l := logs.String(); strings.Contains(l, "outbound buffer limit exceeded") || !strings.Contains(l, "NATS server is unreachable") {
		t.Errorf("the relay's failures do not say the server is unreachable:\n%s", l)
	}
}

// TestCloseWithTheBrokerClosedReturnsAtOnce: a closed broker can publish
// nothing before any timeout, so Close does not wait for it, and says what
// it left.
func TestCloseWithTheBrokerClosedReturnsAtOnce(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st := testdb.SQLite(t)
	const timeout = time.Minute
	svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(log),
		herald.WithRelay(herald.RelayConfig{DrainTimeout: timeout}))
	must(t, err)
	must(t, herald.Translate(svc, stepRecorded, orderStepped, func(_ context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, svc.Start(ctx))
	defer svc.Close()
	must(t, b.Close())
	must(t, svc.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, stepRecorded, step{OrderID: "o", N: 1}) }))
	start := time.Now()
	must(t, svc.Close())
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Close took %v on a closed broker, want it not to wait for the drain timeout %v", took, timeout)
	}
	if !strings.Contains(logs.String(), "unpublished=1") {
		t.Errorf("Close did not log what it left:\n%s", logs.String())
	}
}

// gatedBroker holds every Publish while its gate is shut (until its ctx
// ends).
type gatedBroker struct {
	broker.Broker
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func newGatedBroker(b broker.Broker) *gatedBroker {
	g := &gatedBroker{Broker: b, open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gatedBroker) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *gatedBroker) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.open)
}

func (g *gatedBroker) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return g.Broker.Publish(ctx, events)
	case <-ctx.Done():
		errs := make([]error, len(events))
		for i := range errs {
			errs[i] = ctx.Err()
		}
		return errs
	}
}

// TestCloseWithoutTheLeaseLeavesTheOutboxToItsHolder: an instance that does
// not hold the relay lease has nothing to publish at Close — the holder
// publishes what it committed — so its Close does not wait for the drain
// timeout nor warn; it says at Info that the outbox is the holder's.
func TestCloseWithoutTheLeaseLeavesTheOutboxToItsHolder(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	st := testdb.SQLite(t)
	rc := herald.RelayConfig{DrainTimeout: time.Minute, PollInterval: 20 * time.Millisecond, LeaseTTL: time.Minute}
	instance := func(br broker.Broker, pubs *publishCounter, log *slog.Logger) *herald.Service {
		s, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(br), herald.WithLogger(log),
			herald.WithObserver(pubs), herald.WithRelay(rc))
		must(t, err)
		must(t, herald.Translate(s, stepRecorded, orderStepped, func(_ context.Context, s step) (stepped, error) { return stepped(s), nil }))
		must(t, s.Start(ctx))
		return s
	}
	gate := newGatedBroker(b)
	holderPubs := &publishCounter{n: map[string]int{}}
	holder := instance(gate, holderPubs, quiet)
	defer holder.Close()
	recordSteps(t, holder, 0, 1)
	holderPubs.waitIDs(t, 1) // it holds the lease
	gate.shut()

	var logs testlog.Buffer
	other := instance(b, &publishCounter{n: map[string]int{}}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	recordSteps(t, other, 1, 1)
	start := time.Now()
	must(t, other.Close())
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Close of the instance without the lease took %v, want it not to wait for the drain timeout", took)
	}
	if l := logs.String(); strings.Contains(l, "level=WARN") || !strings.Contains(l, `level=INFO msg="closed without the relay lease`) ||
		!strings.Contains(l, "unpublished=") {
		t.Errorf("Close of the instance without the lease: want one Info line saying the holder publishes the outbox, got:\n%s", l)
	}
	gate.release()
	holderPubs.waitIDs(t, 2) // the holder publishes the other's event
}

// TestCloseAfterTheStoreClosedReturnsAtOnce: a closed store can neither
// be read nor marked, so Close does not wait for the drain timeout.
func TestCloseAfterTheStoreClosedReturnsAtOnce(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	st := testdb.SQLite(t)
	const timeout = time.Minute
	// A long lease: the relay would not find the store closed by renewing
	// it before the timeout.
	svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet),
		herald.WithRelay(herald.RelayConfig{DrainTimeout: timeout, LeaseTTL: time.Hour}))
	must(t, err)
	must(t, herald.Translate(svc, stepRecorded, orderStepped, func(_ context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, svc.Start(ctx))
	defer svc.Close()
	recordSteps(t, svc, 0, 1)
	must(t, st.Close())
	start := time.Now()
	must(t, svc.Close())
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Close took %v after the store closed, want it not to wait for the drain timeout %v", took, timeout)
	}
}
