package faultrig

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testlog"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
)

// Rig is one test's nats-server, its JetStream view and its databases.
type Rig struct {
	t       *testing.T
	dialect string
	Dir     string
	Server  *natsserver.Server // the test's nats-server, to kill and restart
	js      jetstream.JetStream
	log     *testlog.Buffer
	procs   []*Process
	// DefaultAckWait: StartConsumer subscribes with herald's default ack
	// wait instead of NewConsumer's short one.
	DefaultAckWait bool
	// Arrivals, if set, records what StartConsumer's consumer receives.
	Arrivals *Arrivals
}

// New starts a nats-server for the test and connects an observer to it; on
// failure the processes', the services' and the server's logs are shown.
// It skips the test with -short.
func New(t *testing.T, dialect string) *Rig {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: fault tests take a while")
	}
	r := &Rig{t: t, dialect: dialect, Dir: t.TempDir(), log: &testlog.Buffer{}}
	r.Server = natsserver.Start(t, filepath.Join(r.Dir, "nats"), 0)
	nc, err := nats.Connect(r.Server.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Name("fault-observer"))
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

// Logger writes to the rig's buffer, shown when the test fails.
func (r *Rig) Logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelWarn})).With("who", name)
}

// DB returns the DSN of a new database (an SQLite file, or a fresh
// PostgreSQL schema) and a store on it opened by the test.
func (r *Rig) DB(name string, schema func(context.Context, *store.Store) error) (string, *store.Store) {
	r.t.Helper()
	dsn := filepath.Join(r.Dir, name+".db")
	if r.dialect == "postgres" {
		dsn = testdb.PostgresURL(r.t)
	}
	st, err := OpenStore(context.Background(), dsn)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { st.Close() })
	if err := schema(context.Background(), st); err != nil {
		r.t.Fatal(err)
	}
	return dsn, st
}

// Process is a role subprocess.
type Process struct {
	name string
	out  string // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Spawn starts this test binary as role r.
func (r *Rig) Spawn(name string, role Role) *Process {
	r.t.Helper()
	spec, err := json.Marshal(role)
	if err != nil {
		r.t.Fatal(err)
	}
	p := &Process{name: name, out: filepath.Join(r.Dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.out)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestFaultRole$", "-test.count=1", "-test.v", "-test.timeout=10m")
	p.cmd.Env = append(os.Environ(), RoleEnv+"="+string(spec))
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
	r.t.Cleanup(p.Kill)
	return p
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to the process by PID and waits for it.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Wait waits for the process to exit by itself and returns its error.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

// Err is how the process exited: nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Output is what the process wrote so far on stdout and stderr.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

func (r *Rig) dumpLogs() {
	for _, p := range r.procs {
		r.t.Logf("---- %s (%s) ----\n%s", p.name, p.out, Tail(FilterProbe(p.Output()), 40))
	}
	r.t.Logf("---- in-process services ----\n%s", Tail(r.log.String(), 40))
	r.t.Logf("---- nats-server ----\n%s", Tail(r.Server.Log(), 30))
}

// FilterProbe drops the probe's per-event lines.
func FilterProbe(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(line, "fault-probe: ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// ProbeCounts counts the consumer probe's findings over all processes, and
// describes them per process. "overtaken" counts the redeliveries of
// never-committed events that arrived after a redelivery of a later event of
// their key (the broker redelivers in ack-deadline order, not stream order).
func (r *Rig) ProbeCounts() (map[string]int, string) {
	n := map[string]int{}
	var per []string
	for _, p := range r.procs {
		pn := map[string]int{}
		top := map[string]int{}
		sc := bufio.NewScanner(strings.NewReader(p.Output()))
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

// ConsumerInfo is the broker's view of the shipping subscription.
func (r *Rig) ConsumerInfo() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.js.Consumer(ctx, "HERALD_INT", natsjs.ConsumerName("shipping", Sub))
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// StreamMsgs is how many events the integration stream holds.
func (r *Rig) StreamMsgs() (uint64, error) {
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
func (r *Rig) streamInversions() (int, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := r.js.OrderedConsumer(ctx, "HERALD_INT", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, nil, err
	}
	total, err := r.StreamMsgs()
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
			var e Event
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

// Count runs the COUNT query q on st.
func Count(t *testing.T, st *store.Store, q string, args ...any) int {
	t.Helper()
	var n int
	if err := st.DB().QueryRow(st.Rebind(q), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// KillPoints returns k sorted random points in [lo, hi), at least gap apart.
func KillPoints(k, lo, hi, gap int) []int {
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

// Status describes both ends for a failure message.
func (r *Rig) Status(pst, cst *store.Store) string {
	var b strings.Builder
	if pst != nil {
		svc, _ := NewProducer(pst, nil, r.Logger("status"))
		backlog, age, err := svc.OutboxStats(context.Background())
		fmt.Fprintf(&b, "orders placed %d, outbox backlog %d (oldest %v, err %v); ",
			Count(r.t, pst, `SELECT COUNT(*) FROM placed_orders`), backlog, age, err)
	}
	if cst != nil {
		fmt.Fprintf(&b, "effects %d (distinct events %d), violations %d; ",
			Count(r.t, cst, `SELECT COUNT(*) FROM effects`), Count(r.t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`),
			Count(r.t, cst, `SELECT COUNT(*) FROM violations`))
		svc, _ := NewConsumer(cst, nil, r.Logger("status"), 0, nil)
		dls, err := svc.DeadLetters(context.Background(), herald.DeadLetterFilter{})
		fmt.Fprintf(&b, "dead letters %d (err %v); ", len(dls), err)
		for i, d := range dls {
			if i == 3 {
				break
			}
			fmt.Fprintf(&b, "[%s %s: %s] ", d.EventID, d.Reason, d.LastError)
		}
	}
	if n, err := r.StreamMsgs(); err == nil {
		fmt.Fprintf(&b, "stream holds %d; ", n)
	}
	if ci, err := r.ConsumerInfo(); err == nil {
		fmt.Fprintf(&b, "consumer delivered stream seq %d, ack floor %d, ack pending %d, pending %d, redelivered %d",
			ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumAckPending, ci.NumPending, ci.NumRedelivered)
	} else {
		fmt.Fprintf(&b, "consumer info: %v", err)
	}
	return b.String()
}

// WaitSettled waits until the consumer took effect n times and the broker
// has nothing left for it: no pending and no unacknowledged event.
func (r *Rig) WaitSettled(pst, cst *store.Store, n int, timeout time.Duration) {
	r.t.Helper()
	testwait.UntilReport(r.t, timeout, func() bool {
		if Count(r.t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`) < n {
			return false
		}
		ci, err := r.ConsumerInfo()
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	}, func() string {
		return fmt.Sprintf("waiting for %d effects, all acknowledged: %s", n, r.Status(pst, cst))
	})
}

// CheckEffects is the verdict, from the consumer's own tables: exactly one
// effect for each of the n events, no other, each key in order.
func (r *Rig) CheckEffects(pst, cst *store.Store, n int) {
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
		k, s := Key(i)
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
			total, len(ids), n, len(missing), first(missing), len(dup), first(dup), len(got), dupIDs, r.Status(pst, cst))
	}
	if v := Count(t, cst, `SELECT COUNT(*) FROM violations`); v > 0 {
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
	svc, _ := NewConsumer(cst, nil, r.Logger("verdict"), 0, nil)
	if dls, err := svc.DeadLetters(context.Background(), herald.DeadLetterFilter{}); err != nil || len(dls) > 0 {
		t.Errorf("dead letters: %d (err %v), want 0", len(dls), err)
	}
	if pst != nil {
		p, _ := NewProducer(pst, nil, r.Logger("verdict"))
		if backlog, _, err := p.OutboxStats(context.Background()); err != nil || backlog != 0 {
			t.Errorf("producer outbox backlog %d (err %v), want 0", backlog, err)
		}
	}
}

// Dialects runs fn in a subtest per database dialect, skipping PostgreSQL
// unless it is configured, and logs how long each took.
func Dialects(t *testing.T, fn func(t *testing.T, dialect string)) {
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

// Progress samples, every 20ms, the consumer's effects and the events
// the stream holds, so that a test can tell the longest time the consumer
// made no progress while it had events to take.
type Progress struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at      time.Time
	effects int
	stored  int // -1: the server did not answer
}

// SampleProgress starts sampling until the test ends (or Halt is called).
func (r *Rig) SampleProgress(cst *store.Store) *Progress {
	p := &Progress{stop: make(chan struct{}), done: make(chan struct{})}
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
			s := sample{at: time.Now(), stored: -1}
			if err := cst.DB().QueryRow(`SELECT COUNT(DISTINCT event_id) FROM effects`).Scan(&s.effects); err != nil {
				continue
			}
			if n, err := r.StreamMsgs(); err == nil {
				s.stored = int(n)
			}
			p.mu.Lock()
			p.samples = append(p.samples, s)
			p.mu.Unlock()
		}
	}()
	r.t.Cleanup(p.Halt)
	return p
}

// Halt stops the sampling; it may be called more than once.
func (p *Progress) Halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// LongestStall returns the longest time within [from, to) in which the
// consumer's effects did not grow while the stream held events it had not
// taken (a server that does not answer counts as holding some), and when
// that time began.
func (p *Progress) LongestStall(from, to time.Time) (time.Duration, time.Time) {
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

// StartConsumer runs the shipping service in this process.
func (r *Rig) StartConsumer(cst *store.Store, gen int, received func(Event)) *herald.Service {
	r.t.Helper()
	log := r.Logger("shipping")
	b, err := Connect(context.Background(), r.Server.URL(), "fault-consumer-inproc", log)
	if err != nil {
		r.t.Fatal(err)
	}
	var br broker.Broker = b
	if received != nil {
		br = &Probe{Broker: b, st: cst, gen: gen, received: received, arrivals: r.Arrivals}
	}
	newSvc := NewConsumer
	if r.DefaultAckWait {
		newSvc = func(st *store.Store, b broker.Broker, log *slog.Logger, gen int, hook func(Event)) (*herald.Service, error) {
			return NewConsumerWith(st, b, log, gen, hook)
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

// StartProducer runs the orders service in this process.
func (r *Rig) StartProducer(pst *store.Store, publishing func(n int)) *herald.Service {
	r.t.Helper()
	log := r.Logger("orders")
	b, err := Connect(context.Background(), r.Server.URL(), "fault-producer-inproc", log)
	if err != nil {
		r.t.Fatal(err)
	}
	var br broker.Broker = b
	if publishing != nil {
		br = &SlowBroker{Broker: b, publishing: publishing}
	}
	svc, err := NewProducer(pst, br, log)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { svc.Close(); b.Close() })
	return svc
}
