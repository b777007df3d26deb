package herald_test

// The fault tests of the integration tier: a producer process, a consumer
// process and an external nats-server are SIGKILLed at random moments while
// 10,000 events flow, and every guarantee is checked from the consumer's own
// tables (never from herald's counters): every event has exactly one effect,
// nothing is missing, and each key's events took effect in order.
//
// Producers and consumers run as subprocesses of this test binary
// (TestFaultRole, selected by the HERALD_FAULT_ROLE variable) so that they
// can be SIGKILLed; the broker is a real nats-server built from the version
// go.mod pins (internal/natsserver). Two test hooks at the transport seam
// (broker.Broker), not in herald, widen the windows a kill must hit:
//   - faultSlowBroker delays each relay Publish a little before and after the
//     broker call, as a slow network would, so that commits pile up in the
//     outbox unpublished (commit → publish) and events sit in the broker
//     before the relay marks them (publish → mark);
//   - faultProbe lets each ack reach the broker late (AckNoWait is
//     allowed to lose acks: that is its contract), so that a kill finds
//     committed but unacknowledged events (commit → ack); it also reports
//     every redelivered event whose effect a previous process already
//     committed, which proves the inbox absorbed it.
//
// The same wrappers tell the broker-restart test when to kill the server:
// as an event arrives at the consumer, and as the relay starts a batch.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
)

// ---- contracts ----------------------------------------------------------------

// faultPlaced is the producer's domain event: order number Index was placed.
type faultPlaced struct {
	Index int `json:"index"`
}

// faultEvent is the integration event: the Seq-th event of key Key.
type faultEvent struct {
	Key   string `json:"key"`
	Seq   int    `json:"seq"`
	Index int    `json:"index"`
}

const (
	faultEvents = 10000 // events per test
	faultKeys   = 100   // partition keys; faultEvents is a multiple
	faultSub    = "ship"
)

var (
	faultOrderPlaced    = herald.Domain[faultPlaced]("orders.fault_placed")
	faultOrderConfirmed = herald.Integration[faultEvent]("shop.fault.confirmed",
		herald.KeyBy(func(e faultEvent) string { return e.Key }))
)

// faultKey maps order i to its key and its 1-based sequence number in that key.
func faultKey(i int) (string, int) { return fmt.Sprintf("k%03d", i%faultKeys), i/faultKeys + 1 }

// ---- the two services, shared by the subprocess roles and the tests ------------

func faultOpenStore(ctx context.Context, dsn string) (*store.Store, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return postgres.Open(ctx, dsn, postgres.WithMaxOpenConns(8))
	}
	return sqlite.Open(ctx, dsn)
}

func faultExec(ctx context.Context, st *store.Store, stmts ...string) error {
	for _, q := range stmts {
		if _, err := st.DB().ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// The producer's own table: one row per placed order, written with its event.
func faultProducerSchema(ctx context.Context, st *store.Store) error {
	return faultExec(ctx, st, `CREATE TABLE IF NOT EXISTS placed_orders (idx INTEGER PRIMARY KEY, event_key TEXT NOT NULL)`)
}

// The consumer's own tables. effects has no unique constraint, so a
// duplicate effect would show; gen is the consumer process (run) that
// committed the row. progress is the last seq taken per key; violations
// records every event that took effect out of its key's order.
func faultConsumerSchema(ctx context.Context, st *store.Store) error {
	return faultExec(ctx, st,
		`CREATE TABLE IF NOT EXISTS effects (event_key TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL, gen INTEGER NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS effects_event_id ON effects (event_id)`,
		`CREATE TABLE IF NOT EXISTS progress (event_key TEXT PRIMARY KEY, seq INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS violations (event_key TEXT NOT NULL, seq INTEGER NOT NULL, prev INTEGER NOT NULL, event_id TEXT NOT NULL, gen INTEGER NOT NULL)`,
	)
}

func faultConnect(ctx context.Context, url, name string, log *slog.Logger) (*natsjs.Broker, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return natsjs.Connect(ctx, []string{url}, natsjs.WithLogger(log), natsjs.WithName(name),
		natsjs.WithReconnectWait(100*time.Millisecond), natsjs.WithPublishTimeout(faultPublishTimeout))
}

// faultPublishTimeout bounds the wait for a publish acknowledgement that a
// server kill lost (the default, 30s, would only make the tests slower).
const faultPublishTimeout = 5 * time.Second

// newFaultProducer is the "orders" service: Do inserts the order row and
// records faultPlaced, translated to faultOrderConfirmed keyed by order.
func newFaultProducer(st *store.Store, b broker.Broker, log *slog.Logger) (*herald.Service, error) {
	opts := []herald.Option{herald.WithStore(st), herald.WithLogger(log),
		// A killed producer's relay lease must expire before the restarted
		// one can relay; keep that short.
		herald.WithRelay(herald.RelayConfig{PollInterval: 100 * time.Millisecond, LeaseTTL: 2 * time.Second, MaxBackoff: time.Second})}
	if b != nil {
		opts = append(opts, herald.WithBroker(b))
	}
	svc, err := herald.New("orders", opts...)
	if err != nil {
		return nil, err
	}
	err = herald.Translate(svc, faultOrderPlaced, faultOrderConfirmed, func(ctx context.Context, p faultPlaced) (faultEvent, error) {
		k, s := faultKey(p.Index)
		return faultEvent{Key: k, Seq: s, Index: p.Index}, nil
	})
	return svc, err
}

// faultPlaceOrders places orders from..to-1, perDo of them in each transaction
// (each with its row and its event). pace, if set, is slept between Dos.
func faultPlaceOrders(ctx context.Context, svc *herald.Service, st *store.Store, from, to, perDo int, pace time.Duration) error {
	ins := st.Rebind(`INSERT INTO placed_orders (idx, event_key) VALUES (?, ?)`)
	for i := from; i < to; i += perDo {
		err := svc.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+perDo, to); j++ {
				k, _ := faultKey(j)
				if _, err := tx.SQL().ExecContext(ctx, ins, j, k); err != nil {
					return err
				}
				if err := herald.Record(tx, faultOrderPlaced, faultPlaced{Index: j}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("order %d: %w", i, err)
		}
		if pace > 0 {
			time.Sleep(pace)
		}
	}
	return nil
}

// faultWaitOutbox waits until the service's outbox backlog is 0.
func faultWaitOutbox(ctx context.Context, svc *herald.Service, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, age, err := svc.OutboxStats(ctx)
		if err == nil && n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("outbox backlog %d (oldest %v, err %v) after %v", n, age, err, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// faultShipping is the consumer's handler state.
type faultShipping struct {
	st   *store.Store
	gen  int
	hook func(faultEvent) // called for each event handled, if set
}

// handle checks the key's order against the consumer's own progress table
// and writes one effect row, all in herald's transaction (with its inbox row).
func (c *faultShipping) handle(ctx context.Context, tx herald.Tx, e faultEvent) error {
	ev, _ := herald.EventFrom(ctx)
	if c.hook != nil {
		c.hook(e)
	}
	q := tx.SQL()
	prev := 0
	err := q.QueryRowContext(ctx, c.st.Rebind(`SELECT seq FROM progress WHERE event_key = ?`), e.Key).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if e.Seq != prev+1 {
		if _, err := q.ExecContext(ctx, c.st.Rebind(`INSERT INTO violations (event_key, seq, prev, event_id, gen) VALUES (?, ?, ?, ?, ?)`),
			e.Key, e.Seq, prev, ev.ID, c.gen); err != nil {
			return err
		}
	}
	if _, err := q.ExecContext(ctx, c.st.Rebind(`INSERT INTO progress (event_key, seq) VALUES (?, ?)
		ON CONFLICT (event_key) DO UPDATE SET seq = CASE WHEN excluded.seq > progress.seq THEN excluded.seq ELSE progress.seq END`),
		e.Key, e.Seq); err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, c.st.Rebind(`INSERT INTO effects (event_key, seq, event_id, gen) VALUES (?, ?, ?, ?)`), e.Key, e.Seq, ev.ID, c.gen)
	return err
}

// newFaultConsumer is the "shipping" service subscribed to
// faultOrderConfirmed. AckWait is short so that what a killed consumer held
// comes back soon.
func newFaultConsumer(st *store.Store, b broker.Broker, log *slog.Logger, gen int, hook func(faultEvent)) (*herald.Service, error) {
	return newFaultConsumerWith(st, b, log, gen, hook, herald.AckWait(2*time.Second))
}

// newFaultConsumerWith is newFaultConsumer with the subscription's options
// given (none: herald's defaults).
func newFaultConsumerWith(st *store.Store, b broker.Broker, log *slog.Logger, gen int, hook func(faultEvent), subOpts ...herald.SubscribeOption) (*herald.Service, error) {
	opts := []herald.Option{herald.WithStore(st), herald.WithLogger(log)}
	if b != nil {
		opts = append(opts, herald.WithBroker(b))
	}
	svc, err := herald.New("shipping", opts...)
	if err != nil {
		return nil, err
	}
	c := &faultShipping{st: st, gen: gen, hook: hook}
	return svc, herald.Subscribe(svc, faultOrderConfirmed, faultSub, c.handle, subOpts...)
}

// ---- transport hooks -------------------------------------------------------------

// faultSlowBroker delays every Publish by up to delay before the broker call and
// up to delay after it, like a slow network: commits wait in the outbox, and
// stored events wait for the relay to mark them.
//
// The hooks embed the concrete broker, so that the optional interfaces it
// implements (broker.PendingCounter, broker.LossWindower...) reach herald
// unchanged.
type faultSlowBroker struct {
	*natsjs.Broker
	delay      time.Duration
	publishing func(n int) // called as each Publish of n events starts, if set
}

func (b *faultSlowBroker) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	if b.publishing != nil {
		b.publishing(len(events))
	}
	time.Sleep(rand.N(b.delay + 1))
	errs := b.Broker.Publish(ctx, events)
	time.Sleep(rand.N(b.delay + 1))
	return errs
}

// faultProbe wraps the consumer's broker: acks reach the broker ackDelay
// late, and, with report set, every redelivered event is looked up in the
// consumer's effects table before herald sees it. One whose effect an
// earlier run committed is an event committed but not acknowledged when
// that run was killed: the probe prints "fault-probe: absorbed" for it (the
// test then checks that it took effect only once).
type faultProbe struct {
	*natsjs.Broker
	st       *store.Store
	gen      int
	report   bool
	ackDelay time.Duration
	received func(faultEvent) // called as each event arrives, if set
	arrivals *faultArrivals   // records each delivery, if set
	mu       sync.Mutex       // serialises output lines
}

// faultArrivals records the deliveries a consumer received, to tell when a
// redelivery brought back an event it had never received: one the broker
// delivered while it died (say from its outbound buffer), which comes back
// only after the ack wait, and which the consumer must wait for to keep its
// key in order.
type faultArrivals struct {
	mu   sync.Mutex
	seen map[uint64]bool
	lost []time.Time // arrivals of never-received events as redeliveries
}

func (a *faultArrivals) add(seq, num uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[uint64]bool{}
	}
	if num > 1 && !a.seen[seq] {
		a.lost = append(a.lost, time.Now())
	}
	a.seen[seq] = true
}

// lostBetween counts the never-received events that came back in [from,
// to], and tells when the last of them did.
func (a *faultArrivals) lostBetween(from, to time.Time) (n int, last time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, at := range a.lost {
		if !at.Before(from) && !at.After(to) {
			n++
			last = at
		}
	}
	return n, last
}

func (p *faultProbe) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	return p.Broker.Consume(ctx, sub, batch, func(ctx context.Context, ds []broker.Delivery) {
		out := make([]broker.Delivery, len(ds))
		for i, d := range ds {
			if p.arrivals != nil {
				p.arrivals.add(d.Sequence(), d.NumDelivered())
			}
			if p.received != nil {
				var e faultEvent
				if json.Unmarshal(d.Data(), &e) == nil {
					p.received(e)
				}
			}
			if p.report && d.NumDelivered() > 1 {
				p.inspect(ctx, d)
			}
			out[i] = d
			if p.ackDelay > 0 {
				out[i] = &faultLateAck{Delivery: d, delay: p.ackDelay}
			}
		}
		h(ctx, out)
	})
}

func (p *faultProbe) inspect(ctx context.Context, d broker.Delivery) {
	id := d.Header()[envelope.HeaderID]
	var gens []int
	rows, err := p.st.DB().QueryContext(ctx, p.st.Rebind(`SELECT gen FROM effects WHERE event_id = ?`), id)
	if err == nil {
		for rows.Next() {
			var g int
			if rows.Scan(&g) == nil {
				gens = append(gens, g)
			}
		}
		err = rows.Err()
		rows.Close()
	}
	what := "uncommitted" // its earlier delivery never took effect
	switch {
	case err != nil && ctx.Err() != nil:
		return // shutting down
	case err != nil:
		what = "error " + err.Error()
	case len(gens) > 0 && gens[0] < p.gen:
		what = "absorbed" // committed by a killed run, not acked
	case len(gens) > 0:
		what = "same-run" // committed by this run; the ack is late or lost
	}
	p.mu.Lock()
	var e faultEvent
	_ = json.Unmarshal(d.Data(), &e)
	fmt.Printf("fault-probe: %s event=%s key=%s seq=%d delivery=%d committed-by=%v\n", what, id, e.Key, e.Seq, d.NumDelivered(), gens)
	p.mu.Unlock()
}

// faultLateAck sends its ack after delay, without blocking the consumer.
type faultLateAck struct {
	broker.Delivery
	delay time.Duration
}

func (d *faultLateAck) AckNoWait() error {
	time.AfterFunc(d.delay, func() { _ = d.Delivery.AckNoWait() })
	return nil
}

func (d *faultLateAck) Ack(ctx context.Context) error {
	time.AfterFunc(d.delay, func() { _ = d.Delivery.AckNoWait() })
	return nil
}

// ---- subprocess roles ------------------------------------------------------------

// faultRoleEnv holds the JSON faultRole of a subprocess.
const faultRoleEnv = "HERALD_FAULT_ROLE"

type faultRole struct {
	Role string `json:"role"` // "producer" or "consumer"
	NATS string `json:"nats"` // server URL
	DB   string `json:"db"`   // SQLite file or PostgreSQL URL
	// producer: orders From..To-1, one per transaction
	From         int           `json:"from,omitempty"`
	To           int           `json:"to,omitempty"`
	PublishDelay time.Duration `json:"publish_delay,omitempty"`
	// consumer: run number, stop file, ack delay
	Gen      int           `json:"gen,omitempty"`
	Stop     string        `json:"stop,omitempty"`
	AckDelay time.Duration `json:"ack_delay,omitempty"`
}

// TestFaultRole is the body of the fault tests' subprocesses; it skips
// unless HERALD_FAULT_ROLE is set.
func TestFaultRole(t *testing.T) {
	spec := os.Getenv(faultRoleEnv)
	if spec == "" {
		t.Skip("only runs as a subprocess of the fault tests")
	}
	var r faultRole
	if err := json.Unmarshal([]byte(spec), &r); err != nil {
		t.Fatalf("%s: %v", faultRoleEnv, err)
	}
	// Die with the test that started us, even if it could not kill us.
	parent := os.Getppid()
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != parent {
				fmt.Fprintln(os.Stderr, "fault role: parent died, exiting")
				os.Exit(3)
			}
		}
	}()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()
	var err error
	switch r.Role {
	case "producer":
		err = runFaultProducer(ctx, r, log)
	case "consumer":
		err = runFaultConsumer(ctx, r, log)
	default:
		err = fmt.Errorf("unknown role %q", r.Role)
	}
	if err != nil {
		t.Fatalf("%s: %v", r.Role, err)
	}
}

func runFaultProducer(ctx context.Context, r faultRole, log *slog.Logger) error {
	st, err := faultOpenStore(ctx, r.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := faultProducerSchema(ctx, st); err != nil {
		return err
	}
	b, err := faultConnect(ctx, r.NATS, "fault-producer", log)
	if err != nil {
		return err
	}
	defer b.Close()
	var br broker.Broker = b
	if r.PublishDelay > 0 {
		br = &faultSlowBroker{Broker: b, delay: r.PublishDelay}
	}
	svc, err := newFaultProducer(st, br, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Close()
	fmt.Printf("producer: placing orders %d..%d\n", r.From, r.To-1)
	if err := faultPlaceOrders(ctx, svc, st, r.From, r.To, 1, 0); err != nil {
		return err
	}
	fmt.Println("producer: all committed, waiting for the outbox to drain")
	if err := faultWaitOutbox(ctx, svc, 3*time.Minute); err != nil {
		return err
	}
	fmt.Println("producer: done")
	return nil
}

func runFaultConsumer(ctx context.Context, r faultRole, log *slog.Logger) error {
	st, err := faultOpenStore(ctx, r.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := faultConsumerSchema(ctx, st); err != nil {
		return err
	}
	b, err := faultConnect(ctx, r.NATS, fmt.Sprintf("fault-consumer-%d", r.Gen), log)
	if err != nil {
		return err
	}
	defer b.Close()
	probe := &faultProbe{Broker: b, st: st, gen: r.Gen, report: true, ackDelay: r.AckDelay}
	svc, err := newFaultConsumer(st, probe, log, r.Gen, nil)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("consumer: run %d consuming\n", r.Gen)
	for {
		if _, err := os.Stat(r.Stop); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("consumer: stop file found, closing")
	return svc.Close()
}

// ---- test rig ---------------------------------------------------------------------

// faultRig is one test's nats-server, its JetStream view and its databases.
type faultRig struct {
	t       *testing.T
	dialect string
	dir     string
	srv     *natsserver.Server
	js      jetstream.JetStream
	log     *testlog.Buffer
	procs   []*faultProc
	// defaultAckWait: startConsumer subscribes with herald's default ack
	// wait instead of newFaultConsumer's short one.
	defaultAckWait bool
	// arrivals, if set, records what startConsumer's consumer receives.
	arrivals *faultArrivals
}

func newFaultRig(t *testing.T, dialect string) *faultRig {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: fault tests take a while")
	}
	r := &faultRig{t: t, dialect: dialect, dir: t.TempDir(), log: &testlog.Buffer{}}
	r.srv = natsserver.Start(t, filepath.Join(r.dir, "nats"), 0)
	nc, err := nats.Connect(r.srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Name("fault-observer"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			r.dumpLogs()
		}
	})
	return r
}

// logger writes to the rig's buffer, shown when the test fails.
func (r *faultRig) logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelWarn})).With("who", name)
}

// db returns the DSN of a new database (an SQLite file, or a fresh
// PostgreSQL schema) and a store on it opened by the test.
func (r *faultRig) db(name string, schema func(context.Context, *store.Store) error) (string, *store.Store) {
	r.t.Helper()
	dsn := filepath.Join(r.dir, name+".db")
	if r.dialect == "postgres" {
		dsn = testdb.PostgresURL(r.t)
	}
	st, err := faultOpenStore(context.Background(), dsn)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { st.Close() })
	if err := schema(context.Background(), st); err != nil {
		r.t.Fatal(err)
	}
	return dsn, st
}

// faultProc is a role subprocess.
type faultProc struct {
	name string
	out  string // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// spawn starts this test binary as role r.
func (r *faultRig) spawn(name string, role faultRole) *faultProc {
	r.t.Helper()
	spec, err := json.Marshal(role)
	if err != nil {
		r.t.Fatal(err)
	}
	p := &faultProc{name: name, out: filepath.Join(r.dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.out)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestFaultRole$", "-test.count=1", "-test.v", "-test.timeout=10m")
	p.cmd.Env = append(os.Environ(), faultRoleEnv+"="+string(spec))
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
	r.t.Cleanup(p.kill)
	return p
}

func (p *faultProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process by PID and waits for it.
func (p *faultProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// wait waits for the process to exit by itself and returns its error.
func (p *faultProc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

func (p *faultProc) output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

func (r *faultRig) dumpLogs() {
	for _, p := range r.procs {
		r.t.Logf("---- %s (%s) ----\n%s", p.name, p.out, faultTail(faultFilterProbe(p.output()), 40))
	}
	r.t.Logf("---- in-process services ----\n%s", faultTail(r.log.String(), 40))
	r.t.Logf("---- nats-server ----\n%s", faultTail(r.srv.Log(), 30))
}

// faultFilterProbe drops the probe's per-event lines.
func faultFilterProbe(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(line, "fault-probe: ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func faultTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// probeCounts counts the consumer probe's findings over all processes, and
// describes them per process. "overtaken" counts the redeliveries of
// never-committed events that arrived after a redelivery of a later event of
// their key (the broker redelivers in ack-deadline order, not stream order).
func (r *faultRig) probeCounts() (map[string]int, string) {
	n := map[string]int{}
	var per []string
	for _, p := range r.procs {
		pn := map[string]int{}
		top := map[string]int{}
		sc := bufio.NewScanner(strings.NewReader(p.output()))
		for sc.Scan() {
			rest, ok := strings.CutPrefix(sc.Text(), "fault-probe: ")
			if !ok {
				continue
			}
			what, _, _ := strings.Cut(rest, " ")
			n[what]++
			pn[what]++
			var id, key string
			var seq int
			if what == "uncommitted" {
				if _, err := fmt.Sscanf(rest, "uncommitted event=%s key=%s seq=%d", &id, &key, &seq); err == nil {
					if seq < top[key] {
						n["overtaken"]++
						pn["overtaken"]++
					}
					top[key] = max(top[key], seq)
				}
			}
		}
		per = append(per, fmt.Sprintf("%s %v", p.name, pn))
	}
	return n, strings.Join(per, "; ")
}

// consumerInfo is the broker's view of the shipping subscription.
func (r *faultRig) consumerInfo() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.js.Consumer(ctx, "HERALD_INT", natsjs.ConsumerName("shipping", faultSub))
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// streamMsgs is how many events the integration stream holds.
func (r *faultRig) streamMsgs() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, "HERALD_INT")
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// streamInversions reads the whole integration stream in order and counts
// the events stored after a later event of their key (the relay published
// out of commit order), with a few examples.
func (r *faultRig) streamInversions() (int, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := r.js.OrderedConsumer(ctx, "HERALD_INT", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, nil, err
	}
	total, err := r.streamMsgs()
	if err != nil {
		return 0, nil, err
	}
	top := map[string]int{}
	inversions := 0
	var ex []string
	for read := uint64(0); read < total; {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, nil, err
		}
		for m := range batch.Messages() {
			read++
			var e faultEvent
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				return 0, nil, fmt.Errorf("stream message %d: %w", read, err)
			}
			if e.Seq < top[e.Key] {
				inversions++
				if len(ex) < 5 {
					md, _ := m.Metadata()
					var at uint64
					if md != nil {
						at = md.Sequence.Stream
					}
					ex = append(ex, fmt.Sprintf("%s#%d stored at stream seq %d after %s#%d", e.Key, e.Seq, at, e.Key, top[e.Key]))
				}
			}
			top[e.Key] = max(top[e.Key], e.Seq)
		}
		if err := batch.Error(); err != nil {
			return 0, nil, err
		}
	}
	return inversions, ex, nil
}

func faultCount(t *testing.T, st *store.Store, q string, args ...any) int {
	t.Helper()
	var n int
	if err := st.DB().QueryRow(st.Rebind(q), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// faultWait polls cond until it holds, failing the test with status() after
// timeout.
func faultWait(t *testing.T, timeout time.Duration, what string, cond func() bool, status func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// faultKillPoints returns k sorted random points in [lo, hi), at least gap apart.
func faultKillPoints(k, lo, hi, gap int) []int {
	for {
		ps := make([]int, k)
		for i := range ps {
			ps[i] = lo + rand.N(hi-lo)
		}
		slices.Sort(ps)
		ok := true
		for i := 1; i < k; i++ {
			ok = ok && ps[i]-ps[i-1] >= gap
		}
		if ok {
			return ps
		}
	}
}

// faultStatus describes both ends for a failure message.
func (r *faultRig) faultStatus(pst, cst *store.Store) string {
	var b strings.Builder
	if pst != nil {
		svc, _ := newFaultProducer(pst, nil, r.logger("status"))
		backlog, age, err := svc.OutboxStats(context.Background())
		fmt.Fprintf(&b, "orders placed %d, outbox backlog %d (oldest %v, err %v); ",
			faultCount(r.t, pst, `SELECT COUNT(*) FROM placed_orders`), backlog, age, err)
	}
	if cst != nil {
		fmt.Fprintf(&b, "effects %d (distinct events %d), violations %d; ",
			faultCount(r.t, cst, `SELECT COUNT(*) FROM effects`), faultCount(r.t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`),
			faultCount(r.t, cst, `SELECT COUNT(*) FROM violations`))
		svc, _ := newFaultConsumer(cst, nil, r.logger("status"), 0, nil)
		dls, err := svc.DeadLetters(context.Background(), herald.DeadLetterFilter{})
		fmt.Fprintf(&b, "dead letters %d (err %v); ", len(dls), err)
		for i, d := range dls {
			if i == 3 {
				break
			}
			fmt.Fprintf(&b, "[%s %s: %s] ", d.EventID, d.Reason, d.LastError)
		}
	}
	if n, err := r.streamMsgs(); err == nil {
		fmt.Fprintf(&b, "stream holds %d; ", n)
	}
	if ci, err := r.consumerInfo(); err == nil {
		fmt.Fprintf(&b, "consumer delivered stream seq %d, ack floor %d, ack pending %d, pending %d, redelivered %d",
			ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumAckPending, ci.NumPending, ci.NumRedelivered)
	} else {
		fmt.Fprintf(&b, "consumer info: %v", err)
	}
	return b.String()
}

// waitSettled waits until the consumer took effect n times and the broker
// has nothing left for it: no pending and no unacknowledged event.
func (r *faultRig) waitSettled(pst, cst *store.Store, n int, timeout time.Duration) {
	r.t.Helper()
	faultWait(r.t, timeout, fmt.Sprintf("%d effects, all acknowledged", n), func() bool {
		if faultCount(r.t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`) < n {
			return false
		}
		ci, err := r.consumerInfo()
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	}, func() string { return r.faultStatus(pst, cst) })
}

// checkEffects is the verdict, from the consumer's own tables: exactly one
// effect for each of the n events, no other, each key in order.
func (r *faultRig) checkEffects(pst, cst *store.Store, n int) {
	t := r.t
	t.Helper()
	rows, err := cst.DB().Query(`SELECT event_key, seq, event_id FROM effects`)
	if err != nil {
		t.Fatal(err)
	}
	type ks struct {
		key string
		seq int
	}
	got := map[ks]int{}
	ids := map[string]int{}
	total := 0
	for rows.Next() {
		var k ks
		var id string
		if err := rows.Scan(&k.key, &k.seq, &id); err != nil {
			t.Fatal(err)
		}
		got[k]++
		ids[id]++
		total++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	var missing, dup []string
	for i := range n {
		k, s := faultKey(i)
		switch c := got[ks{k, s}]; {
		case c == 0:
			missing = append(missing, fmt.Sprintf("%s#%d", k, s))
		case c > 1:
			dup = append(dup, fmt.Sprintf("%s#%d×%d", k, s, c))
		}
		delete(got, ks{k, s})
	}
	dupIDs := 0
	for _, c := range ids {
		if c > 1 {
			dupIDs++
		}
	}
	first := func(s []string) []string { return s[:min(len(s), 10)] }
	if total != n || len(missing) > 0 || len(dup) > 0 || len(got) > 0 || len(ids) != n || dupIDs > 0 {
		t.Errorf("effects: %d rows for %d events, want exactly %d: %d missing %v, %d duplicated %v, %d unexpected, %d event ids with more than one effect\nstatus: %s",
			total, len(ids), n, len(missing), first(missing), len(dup), first(dup), len(got), dupIDs, r.faultStatus(pst, cst))
	}
	if v := faultCount(t, cst, `SELECT COUNT(*) FROM violations`); v > 0 {
		rows, err := cst.DB().Query(`SELECT event_key, seq, prev, gen FROM violations LIMIT 10`)
		if err != nil {
			t.Fatal(err)
		}
		var ex []string
		for rows.Next() {
			var k string
			var s, p, g int
			_ = rows.Scan(&k, &s, &p, &g)
			ex = append(ex, fmt.Sprintf("%s: seq %d after %d (consumer run %d)", k, s, p, g))
		}
		rows.Close()
		where := "the broker stored every key in order, so they were delivered out of order"
		if inv, iex, err := r.streamInversions(); err != nil {
			where = "stream order unknown: " + err.Error()
		} else if inv > 0 {
			where = fmt.Sprintf("the relay published out of commit order: %d events are stored after a later event of their key, e.g. %s",
				inv, strings.Join(iex, "; "))
		}
		t.Errorf("per-key order broken: %d events took effect out of order, e.g. %s\n(%s)", v, strings.Join(ex, "; "), where)
	}
	svc, _ := newFaultConsumer(cst, nil, r.logger("verdict"), 0, nil)
	if dls, err := svc.DeadLetters(context.Background(), herald.DeadLetterFilter{}); err != nil || len(dls) > 0 {
		t.Errorf("dead letters: %d (err %v), want 0", len(dls), err)
	}
	if pst != nil {
		p, _ := newFaultProducer(pst, nil, r.logger("verdict"))
		if backlog, _, err := p.OutboxStats(context.Background()); err != nil || backlog != 0 {
			t.Errorf("producer outbox backlog %d (err %v), want 0", backlog, err)
		}
	}
}

func faultDialects(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			if d == "postgres" && os.Getenv(testdb.EnvPostgres) == "" {
				t.Skipf("PostgreSQL fault tests skipped: set %s", testdb.EnvPostgres)
			}
			start := time.Now()
			fn(t, d)
			t.Logf("%s: %v", d, time.Since(start).Round(time.Millisecond))
		})
	}
}

// faultProgress samples, every 20ms, the consumer's effects and the events
// the stream holds, so that a test can tell the longest time the consumer
// made no progress while it had events to take.
type faultProgress struct {
	mu      sync.Mutex
	samples []faultSample
	stop    chan struct{}
	done    chan struct{}
}

type faultSample struct {
	at      time.Time
	effects int
	stored  int // -1: the server did not answer
}

// sampleProgress starts sampling until the test ends (or stop is called).
func (r *faultRig) sampleProgress(cst *store.Store) *faultProgress {
	p := &faultProgress{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			s := faultSample{at: time.Now(), stored: -1}
			if err := cst.DB().QueryRow(`SELECT COUNT(DISTINCT event_id) FROM effects`).Scan(&s.effects); err != nil {
				continue
			}
			if n, err := r.streamMsgs(); err == nil {
				s.stored = int(n)
			}
			p.mu.Lock()
			p.samples = append(p.samples, s)
			p.mu.Unlock()
		}
	}()
	r.t.Cleanup(p.halt)
	return p
}

func (p *faultProgress) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// longestStall returns the longest time within [from, to) in which the
// consumer's effects did not grow while the stream held events it had not
// taken (a server that does not answer counts as holding some), and when
// that time began.
func (p *faultProgress) longestStall(from, to time.Time) (time.Duration, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	var longestAt time.Time
	start, last := from, -1
	for _, s := range p.samples {
		if s.at.Before(from) {
			last = s.effects
			continue
		}
		if !s.at.Before(to) {
			break
		}
		if s.effects != last || (s.stored >= 0 && s.stored <= s.effects) {
			start, last = s.at, s.effects // progress, or nothing to take
			continue
		}
		if d := s.at.Sub(start); d > longest {
			longest, longestAt = d, start
		}
	}
	return longest, longestAt
}

// startConsumer runs the shipping service in this process.
func (r *faultRig) startConsumer(cst *store.Store, gen int, received func(faultEvent)) *herald.Service {
	r.t.Helper()
	log := r.logger("shipping")
	b, err := faultConnect(context.Background(), r.srv.URL(), "fault-consumer-inproc", log)
	if err != nil {
		r.t.Fatal(err)
	}
	var br broker.Broker = b
	if received != nil {
		br = &faultProbe{Broker: b, st: cst, gen: gen, received: received, arrivals: r.arrivals}
	}
	newSvc := newFaultConsumer
	if r.defaultAckWait {
		newSvc = func(st *store.Store, b broker.Broker, log *slog.Logger, gen int, hook func(faultEvent)) (*herald.Service, error) {
			return newFaultConsumerWith(st, b, log, gen, hook)
		}
	}
	svc, err := newSvc(cst, br, log, gen, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { svc.Close(); b.Close() })
	return svc
}

// startProducer runs the orders service in this process.
func (r *faultRig) startProducer(pst *store.Store, publishing func(n int)) *herald.Service {
	r.t.Helper()
	log := r.logger("orders")
	b, err := faultConnect(context.Background(), r.srv.URL(), "fault-producer-inproc", log)
	if err != nil {
		r.t.Fatal(err)
	}
	var br broker.Broker = b
	if publishing != nil {
		br = &faultSlowBroker{Broker: b, publishing: publishing}
	}
	svc, err := newFaultProducer(pst, br, log)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { svc.Close(); b.Close() })
	return svc
}

// ---- the tests ----------------------------------------------------------------------

// TestProducerKilledBetweenCommitAndPublish SIGKILLs the producer process
// three times at random points while it commits 10,000 orders one
// transaction each, and restarts it to finish. At least one kill must leave
// committed events unpublished in the outbox (checked after the kill, from
// its database), or the test did not cover the window; events the broker
// stored but the dead relay had not marked are counted too (they are
// published again and deduplicated). The consumer,
// never killed, must end with exactly one effect per event, in order per key.
func TestProducerKilledBetweenCommitAndPublish(t *testing.T) {
	faultDialects(t, func(t *testing.T, dialect string) {
		r := newFaultRig(t, dialect)
		n := faultEvents
		pdsn, pst := r.db("orders", faultProducerSchema)
		_, cst := r.db("shipping", faultConsumerSchema)
		r.startConsumer(cst, 1, nil)
		probe, _ := newFaultProducer(pst, nil, r.logger("probe")) // reads the outbox of the killed process

		role := faultRole{Role: "producer", NATS: r.srv.URL(), DB: pdsn, To: n, PublishDelay: 20 * time.Millisecond}
		unpublished, unmarked := 0, 0
		for k, at := range faultKillPoints(3, n/10, n*8/10, n/10) {
			p := r.spawn(fmt.Sprintf("producer-%d", k+1), role)
			faultWait(t, 90*time.Second, fmt.Sprintf("producer run %d to commit order %d", k+1, at), func() bool {
				return p.exited() || faultCount(t, pst, `SELECT COUNT(*) FROM placed_orders`) > at
			}, func() string { return r.faultStatus(pst, cst) })
			if p.exited() {
				t.Fatalf("producer run %d exited before it was killed: %v\n%s", k+1, p.err, faultTail(p.output(), 30))
			}
			p.kill()
			time.Sleep(300 * time.Millisecond) // let the server finish what the dead connection sent
			committed := faultCount(t, pst, `SELECT COUNT(*) FROM placed_orders`)
			if top := faultCount(t, pst, `SELECT COALESCE(MAX(idx), -1) FROM placed_orders`); top != committed-1 {
				t.Fatalf("after kill %d: %d orders committed but the highest is %d: not a prefix", k+1, committed, top)
			}
			backlog, _, err := probe.OutboxStats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			stored, err := r.streamMsgs()
			if err != nil {
				t.Fatal(err)
			}
			published := int64(committed) - backlog
			t.Logf("kill %d at order ≥%d: %d committed, %d of them unpublished in the outbox; broker holds %d, %d more than marked published",
				k+1, at, committed, backlog, stored, int64(stored)-published)
			unpublished += int(backlog)
			unmarked += max(int(int64(stored)-published), 0)
			role.From = committed
		}
		p := r.spawn("producer-final", role)
		if err := p.wait(3 * time.Minute); err != nil {
			t.Fatalf("final producer run: %v\n%s\nstatus: %s", err, faultTail(p.output(), 30), r.faultStatus(pst, cst))
		}
		r.waitSettled(pst, cst, n, 2*time.Minute)
		time.Sleep(500 * time.Millisecond) // room for a late duplicate
		r.checkEffects(pst, cst, n)
		if got := faultCount(t, pst, `SELECT COUNT(*) FROM placed_orders`); got != n {
			t.Errorf("orders placed: %d, want %d", got, n)
		}
		if unpublished == 0 {
			t.Errorf("no kill left a committed event unpublished: the commit → publish window was not covered")
		}
		t.Logf("window covered: %d committed events were unpublished at a kill; %d stored events were not yet marked published (republished, deduplicated)",
			unpublished, unmarked)
	})
}

// TestConsumerKilledAfterCommitBeforeAck SIGKILLs the consumer process three
// times at random points while it consumes 10,000 events, and restarts it.
// After each kill the broker's count of acknowledged events is compared
// with the effects committed in the consumer's table: committed effects the
// broker has no ack for are the window. The restarted consumer reports each
// redelivered event whose effect an earlier run committed (the probe); at
// least one must have come back, and still every event has exactly one
// effect, none is missing, and each key is in order.
func TestConsumerKilledAfterCommitBeforeAck(t *testing.T) {
	faultDialects(t, func(t *testing.T, dialect string) {
		r := newFaultRig(t, dialect)
		n := faultEvents
		_, pst := r.db("orders", faultProducerSchema)
		cdsn, cst := r.db("shipping", faultConsumerSchema)
		// Provision the stream and the durable consumer up front, so that
		// the broker's view of the subscription exists from the start.
		prov, err := faultConnect(context.Background(), r.srv.URL(), "provision", r.logger("provision"))
		if err != nil {
			t.Fatal(err)
		}
		ps, _ := newFaultConsumer(cst, prov, r.logger("provision"), 0, nil)
		if err := ps.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ps.Close()
		prov.Close()

		producer := r.startProducer(pst, nil)
		produced := make(chan error, 1)
		go func() { produced <- faultPlaceOrders(context.Background(), producer, pst, 0, n, 20, 0) }()

		stop := filepath.Join(r.dir, "stop-consumer")
		role := faultRole{Role: "consumer", NATS: r.srv.URL(), DB: cdsn, Stop: stop, AckDelay: 500 * time.Millisecond}
		effects := func() int { return faultCount(t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`) }
		unacked := 0
		for k, at := range faultKillPoints(3, n/10, n*8/10, n/10) {
			role.Gen = k + 1
			p := r.spawn(fmt.Sprintf("consumer-%d", k+1), role)
			faultWait(t, 90*time.Second, fmt.Sprintf("consumer run %d to reach %d effects", k+1, at), func() bool {
				return p.exited() || effects() > at
			}, func() string { return r.faultStatus(pst, cst) })
			if p.exited() {
				t.Fatalf("consumer run %d exited before it was killed: %v\n%s", k+1, p.err, faultTail(faultFilterProbe(p.output()), 30))
			}
			p.kill()
			time.Sleep(300 * time.Millisecond) // let the server take what the dead connection sent
			committed := effects()
			ci, err := r.consumerInfo()
			if err != nil {
				t.Fatal(err)
			}
			// Every event up to Delivered.Stream was delivered (one type
			// on the stream, deliver-all); NumAckPending of them are not
			// acknowledged.
			acked := int(ci.Delivered.Stream) - ci.NumAckPending
			t.Logf("kill %d at ≥%d effects: %d committed, broker has %d acknowledged (%d delivered, %d unacknowledged): %d committed but not acknowledged",
				k+1, at, committed, acked, ci.Delivered.Stream, ci.NumAckPending, committed-acked)
			if committed < acked {
				t.Errorf("kill %d: the broker has %d acks but only %d effects are committed: an event was acknowledged before its effect committed", k+1, acked, committed)
			}
			unacked += max(committed-acked, 0)
		}
		role.Gen = 4
		p := r.spawn("consumer-final", role)
		if err := <-produced; err != nil {
			t.Fatal(err)
		}
		if err := faultWaitOutbox(context.Background(), producer, time.Minute); err != nil {
			t.Fatal(err)
		}
		r.waitSettled(pst, cst, n, 2*time.Minute)
		time.Sleep(500 * time.Millisecond) // room for a late duplicate
		if err := os.WriteFile(stop, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := p.wait(time.Minute); err != nil {
			t.Errorf("final consumer run: %v\n%s", err, faultTail(faultFilterProbe(p.output()), 30))
		}
		r.checkEffects(pst, cst, n)
		pc, perRun := r.probeCounts()
		if unacked == 0 {
			t.Errorf("no kill found a committed but unacknowledged event: the commit → ack window was not covered")
		}
		if pc["absorbed"] == 0 {
			t.Errorf("no event committed by a killed run was redelivered (probe: %v): the inbox was not exercised", pc)
		}
		if pc["error"] > 0 {
			t.Errorf("the probe failed to look up %d redeliveries", pc["error"])
		}
		t.Logf("window covered: %d committed effects had no ack at a kill; redelivered after a kill and absorbed by the inbox: %d; redelivered, never committed: %d; redelivered within a run: %d (%s)",
			unacked, pc["absorbed"], pc["uncommitted"], pc["same-run"], perRun)
	})
}

// TestBrokerRestartUnderLoad SIGKILLs and restarts the nats-server twice
// while an in-process producer commits 10,000 events (50 per transaction,
// paced so that production spans both restarts) and an in-process consumer
// takes them. The first kill lands as an event arrives at the consumer (the
// server is sending the next ones), the second as the relay starts
// publishing a batch (its events are on the wire). The relay must retry what
// the dead server did not acknowledge and the consumer must resume; nothing
// may be lost, nothing take effect twice, and each key stays in order. From
// each restart on, the consumer's effects are sampled every 20ms: it may not
// go faultMaxStall without progress while the stream holds events for it.
func TestBrokerRestartUnderLoad(t *testing.T) {
	faultDialects(t, func(t *testing.T, dialect string) { brokerRestartUnderLoad(t, dialect, false) })
}

// TestBrokerRestartDefaultAckWait is TestBrokerRestartUnderLoad with the
// consumer on herald's default ack wait (10s), as services run: a consumer
// that held new events for the whole ack wait after a reconnect would stall
// for longer than faultMaxStall. Only a hold for events that the dying
// server had delivered and the consumer never received may take longer
// (they come back after the ack wait, and the later events of their keys
// must wait for them); the test tells those by their arrival.
func TestBrokerRestartDefaultAckWait(t *testing.T) {
	faultDialects(t, func(t *testing.T, dialect string) { brokerRestartUnderLoad(t, dialect, true) })
}

// faultMaxStall bounds the longest time a consumer may make no progress
// after a broker restart while events wait for it: recovery takes seconds.
const faultMaxStall = 5 * time.Second

func brokerRestartUnderLoad(t *testing.T, dialect string, defaultAckWait bool) {
	r := newFaultRig(t, dialect)
	r.defaultAckWait = defaultAckWait
	r.arrivals = &faultArrivals{}
	ackWait := 2 * time.Second // newFaultConsumer's, for the log
	// The producer's pause between transactions: production must outlast
	// the first restart and the consumer's recovery from it, or the second
	// kill (as the relay publishes) never comes. With the long ack wait a
	// recovery that waits for events lost on the wire takes ~10s.
	pace := 15 * time.Millisecond
	if defaultAckWait {
		ackWait = 10 * time.Second // herald's
		pace = 150 * time.Millisecond
	}
	n := faultEvents
	const perDo = 50
	_, pst := r.db("orders", faultProducerSchema)
	_, cst := r.db("shipping", faultConsumerSchema)
	trigger := make(chan struct{}, 1)
	fire := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	// Kill 1: the consumer's transport tells when event arrive reaches it.
	var arrive atomic.Int64
	arrive.Store(-1)
	r.startConsumer(cst, 1, func(e faultEvent) {
		if int64(e.Index) == arrive.Load() {
			fire()
		}
	})
	// Kill 2: the relay's transport tells when a batch starts out.
	var armed atomic.Bool
	producer := r.startProducer(pst, func(size int) {
		if size >= perDo && armed.CompareAndSwap(true, false) {
			fire()
		}
	})
	placed := func() int { return faultCount(t, pst, `SELECT COUNT(*) FROM placed_orders`) }
	effects := func() int { return faultCount(t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`) }

	progress := r.sampleProgress(cst)
	produced := make(chan error, 1)
	go func() {
		produced <- faultPlaceOrders(context.Background(), producer, pst, 0, n, perDo, pace)
	}()

	var ups, kills []time.Time // restarts, and the kills after them
	for k := range 2 {
		var what string
		if k == 0 {
			at := n/5 + rand.N(n/5)
			what = fmt.Sprintf("as event %d reached the consumer", at)
			arrive.Store(int64(at))
		} else {
			at := n/2 + rand.N(n/5)
			what = fmt.Sprintf("as the relay published a batch after order %d", at)
			faultWait(t, 90*time.Second, fmt.Sprintf("%d orders placed", at), func() bool { return placed() >= at },
				func() string { return r.faultStatus(pst, cst) })
			armed.Store(true)
		}
		select {
		case <-trigger:
		case <-time.After(90 * time.Second):
			t.Fatalf("kill %d (%s) never triggered: %s", k+1, what, r.faultStatus(pst, cst))
		}
		r.srv.Kill()
		if k > 0 {
			kills = append(kills, time.Now())
		}
		pk, before := placed(), effects()
		backlog, _, _ := producer.OutboxStats(context.Background())
		down := time.Duration(300+rand.N(1200)) * time.Millisecond
		time.Sleep(down)
		p, e := placed(), effects()
		r.srv.Restart()
		up := time.Now()
		ups = append(ups, up)
		stored, err := r.streamMsgs()
		for err != nil && time.Since(up) < 10*time.Second { // JetStream may still be recovering
			time.Sleep(20 * time.Millisecond)
			stored, err = r.streamMsgs()
		}
		// The relay and the consumer must resume: wait for the next
		// stored event and the next effect.
		var relayUp, consumerUp time.Duration
		faultWait(t, time.Minute, fmt.Sprintf("the relay and the consumer to resume after restart %d", k+1), func() bool {
			if s, err := r.streamMsgs(); relayUp == 0 && err == nil && (s > stored || s >= uint64(n)) {
				relayUp = time.Since(up)
			}
			if consumerUp == 0 && (effects() > e || effects() >= n) {
				consumerUp = time.Since(up)
			}
			return relayUp > 0 && consumerUp > 0
		}, func() string { return r.faultStatus(pst, cst) })
		t.Logf("restart %d: killed %s; %d placed, %d effects, outbox backlog %d; down %v, during which %d were placed and %d took effect; after the restart the relay stored its next event in %v, the consumer took its next in %v",
			k+1, what, pk, before, backlog, down, p-pk, e-before, relayUp.Round(time.Millisecond), consumerUp.Round(time.Millisecond))
		if before >= n {
			t.Errorf("restart %d came after the consumer finished: not under load", k+1)
		}
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	if err := faultWaitOutbox(context.Background(), producer, 2*time.Minute); err != nil {
		t.Fatalf("%v\nstatus: %s", err, r.faultStatus(pst, cst))
	}
	r.waitSettled(pst, cst, n, 2*time.Minute)
	progress.halt()
	kills = append(kills, time.Now())
	for k, up := range ups {
		stall, at := progress.longestStall(up, kills[k])
		until := "all were taken"
		if k+1 < len(ups) {
			until = "the next kill"
		}
		from := ""
		if stall > 0 {
			from = fmt.Sprintf(" (from %v after the restart)", at.Sub(up).Round(time.Millisecond))
		}
		t.Logf("restart %d: the consumer's longest time without progress while events waited for it, from the restart until %s: %v%s",
			k+1, until, stall.Round(time.Millisecond), from)
		if stall < faultMaxStall {
			continue
		}
		// Events the dying server had delivered but the consumer never
		// received come back only after the ack wait; until then the
		// consumer must hold the later events of their keys. That wait is
		// no fault, if it ends as they are back.
		end := at.Add(stall)
		if lost, last := r.arrivals.lostBetween(at, end.Add(time.Second)); lost > 0 && end.Sub(last) < 700*time.Millisecond {
			t.Logf("restart %d: the stall ended as %d events the consumer had never received came back after their ack wait (%v): lost on the wire, a hold it needed",
				k+1, lost, ackWait)
			continue
		}
		t.Errorf("restart %d: the consumer made no progress for %v while events waited for it; want under %v", k+1, stall.Round(time.Millisecond), faultMaxStall)
	}
	time.Sleep(500 * time.Millisecond) // room for a late duplicate
	r.checkEffects(pst, cst, n)
	stored, _ := r.streamMsgs()
	t.Logf("stream holds %d events for %d placed", stored, n)
}
