package notify_test

// TestNotifierKilledHoldingClaims: a notifier process that holds claims —
// sends hanging at a webhook receiver, rows waiting behind them — is
// SIGKILLed, and another instance sends every row it held within 5 s, the
// claims' leases being short and renewed rather than long.

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/heraldhq/herald/internal/childproc"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/webhook"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
)

// envLeaseRole holds the child's set-up (a leaseRole, as JSON).
const envLeaseRole = "HERALD_NOTIFY_LEASE_ROLE"

// leaseRole is the set-up of TestLeaseRole, the child notifier.
type leaseRole struct {
	Dialect string `json:"dialect"`
	DB      string `json:"db"` // SQLite file or PostgreSQL URL
	NATS    string `json:"nats"`
	Prefix  string `json:"prefix"`
	Hook    string `json:"hook"` // the webhook receiver's URL
	Users   int    `json:"users"`
	Workers int    `json:"workers"`
}

// leaseHang is the child's send timeout, and its webhook client's: its
// sends hang at the receiver for the whole test.
const leaseHang = 2 * time.Minute

// maxRecovery is how long after the SIGKILL every row the dead notifier
// held must have been sent by another instance.
const maxRecovery = 5 * time.Second

func openLeaseStore(ctx context.Context, t testing.TB, dialect, db string) *store.Store {
	t.Helper()
	var st *store.Store
	var err error
	if dialect == "postgres" {
		st, err = postgres.Open(ctx, db, postgres.WithMaxOpenConns(6))
	} else {
		st, err = sqlite.Open(ctx, db)
	}
	check(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

// leaseService is service "shop" emitting e2eShipped and a notifier that
// sends it by webhook to each recipient's URL at the receiver (r.Hook), on
// the notifier's defaults but for opts.
func leaseService(ctx context.Context, t testing.TB, st *store.Store, b *natsjs.Broker, r leaseRole, opts ...notify.Option) (*herald.Service, *notify.Notifier) {
	t.Helper()
	svc, err := herald.New("shop", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(e2eLogger()),
		herald.WithRelay(herald.RelayConfig{PollInterval: 20 * time.Millisecond}))
	check(t, err)
	check(t, svc.Register(e2eShipped))
	tpl, err := notify.NewTemplates(e2eTemplates)
	check(t, err)
	dir := notify.MapDirectory{}
	for i := range r.Users {
		id := fmt.Sprintf("u%d", i)
		dir[id] = notify.Recipient{Name: "User " + id, Addresses: map[string]string{notify.Webhook: r.Hook + "/" + id}}
	}
	n, err := notify.NewNotifier(svc, dir, append([]notify.Option{notify.WithRenderer(tpl), notify.WithLogger(e2eLogger())}, opts...)...)
	check(t, err)
	check(t, notify.Route(n, e2eShipped, notify.Spec[e2eOrder]{
		Category:   "orders",
		Recipients: func(o e2eOrder) []string { return []string{o.To} },
		Channels:   []string{notify.Webhook},
		Template:   "e2e.shipped",
	}, herald.AckWait(2*time.Second)))
	sender, err := webhook.New(webhook.WithAllowPrivate(), webhook.WithTimeout(leaseHang))
	check(t, err)
	t.Cleanup(func() { sender.Close() })
	check(t, n.Senders(notify.Webhook, sender))
	return svc, n
}

// TestLeaseRole is the child of TestNotifierKilledHoldingClaims: an
// instance of service "shop" and its notifier, with a send timeout longer
// than the test, running until it is killed. It skips unless
// HERALD_NOTIFY_LEASE_ROLE is set.
func TestLeaseRole(t *testing.T) {
	spec := os.Getenv(envLeaseRole)
	if spec == "" {
		t.Skip("only runs as the child of TestNotifierKilledHoldingClaims")
	}
	var r leaseRole
	check(t, json.Unmarshal([]byte(spec), &r))
	// Die with the test that started us, even where Pdeathsig does not exist.
	parent := os.Getppid()
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != parent {
				fmt.Fprintln(os.Stderr, "lease role: parent died, exiting")
				os.Exit(3)
			}
		}
	}()
	ctx := context.Background()
	st := openLeaseStore(ctx, t, r.Dialect, r.DB)
	b, err := natsjs.Connect(ctx, []string{r.NATS}, natsjs.WithPrefix(r.Prefix), natsjs.WithLogger(e2eLogger()))
	check(t, err)
	defer b.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc, n := leaseService(ctx, t, st, b, r, notify.WithWorkers(r.Workers), notify.WithSendTimeout(leaseHang), notify.WithLogger(log))
	check(t, svc.Start(ctx))
	defer svc.Close()
	check(t, n.Start(ctx))
	defer n.Close()
	fmt.Println("lease role: notifier started")
	time.Sleep(leaseHang)
	t.Fatalf("lease role: not killed after %v", leaseHang)
}

// hookReceiver is a webhook receiver on loopback. While hanging it takes
// every request and never answers it (until its client goes away); then it
// answers 204 and notes when each webhook-id arrived.
type hookReceiver struct {
	srv  *httptest.Server
	stop chan struct{}

	mu       sync.Mutex
	hang     bool
	hanging  map[string]int         // webhook-id → requests hanging now
	answered map[string][]time.Time // webhook-id → arrivals answered
}

func newHookReceiver(t testing.TB) *hookReceiver {
	h := &hookReceiver{stop: make(chan struct{}), hang: true, hanging: map[string]int{}, answered: map[string][]time.Time{}}
	h.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		close(h.stop)
		h.srv.Close()
	})
	return h
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	id := r.Header.Get(webhook.HeaderID)
	_, _ = io.Copy(io.Discard, r.Body)
	h.mu.Lock()
	if !h.hang {
		h.answered[id] = append(h.answered[id], at)
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.hanging[id]++
	h.mu.Unlock()
	select {
	case <-r.Context().Done():
	case <-h.stop:
	}
	h.mu.Lock()
	if h.hanging[id]--; h.hanging[id] == 0 {
		delete(h.hanging, id)
	}
	h.mu.Unlock()
}

// answer makes the receiver answer from now on.
func (h *hookReceiver) answer() {
	h.mu.Lock()
	h.hang = false
	h.mu.Unlock()
}

func (h *hookReceiver) hangingNow() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.hanging)
}

func (h *hookReceiver) answeredNow() map[string][]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]time.Time, len(h.answered))
	for id, ts := range h.answered {
		out[id] = slices.Clone(ts)
	}
	return out
}

// leaseChild is a running TestLeaseRole process.
type leaseChild struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startLeaseChild(t *testing.T, dir string, r leaseRole) *leaseChild {
	t.Helper()
	spec, err := json.Marshal(r)
	check(t, err)
	c := &leaseChild{log: filepath.Join(dir, "child.log"), done: make(chan struct{})}
	f, err := os.Create(c.log)
	check(t, err)
	defer f.Close() // the child has its own descriptor
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestLeaseRole$", "-test.count=1", "-test.v", "-test.timeout=5m")
	c.cmd.Env = append(os.Environ(), envLeaseRole+"="+string(spec))
	c.cmd.Stdout, c.cmd.Stderr = f, f
	childproc.DieWithParent(c.cmd)
	check(t, c.cmd.Start())
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.kill)
	return c
}

func (c *leaseChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the child, by its PID, and waits for it to end.
func (c *leaseChild) kill() {
	if !c.exited() {
		_ = c.cmd.Process.Kill()
	}
	<-c.done
}

func (c *leaseChild) output() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// poll calls cond until it reports true, and fails the test with
// its description after timeout or if the child (when not nil) exits.
func poll(t *testing.T, timeout time.Duration, child *leaseChild, what string, cond func() (bool, string)) {
	t.Helper()
	var state string
	testwait.UntilReport(t, timeout, func() bool {
		ok, st := cond()
		state = st
		if !ok && child != nil && child.exited() {
			t.Fatalf("%s: the child exited (%v) while waiting; %s\n%s", what, child.err, state, child.output())
		}
		return ok
	}, func() string {
		out := ""
		if child != nil {
			out = "\n---- child ----\n" + child.output()
		}
		return fmt.Sprintf("%s; %s%s", what, state, out)
	})
}

func describe(ds []notify.Delivery) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d rows:", len(ds))
	for _, d := range ds {
		fmt.Fprintf(&b, "\n  %s %s claimed_by=%s claim_until=%s attempts=%d err=%q",
			d.Key, d.State, d.ClaimedBy, d.ClaimUntil.Format(time.RFC3339Nano), d.Attempts, d.LastError)
	}
	return b.String()
}

// TestNotifierKilledHoldingClaims: the parent's service decides 2×3
// webhook notifications; a child notifier process of 3 workers on the same
// database (SQLite file, or PostgreSQL with HERALD_TEST_POSTGRES_URL) and
// broker claims all of them, on the default lease: 3 sends hang at the
// receiver (it takes the requests and never answers), 3 rows wait behind
// them. Once the leases seen then have run out and the child still holds
// every row (renewed), the child is SIGKILLed by its PID and the
// parent starts its own notifier (default lease and poll interval) with the
// receiver answering: every row the child held is sent by the parent, once,
// within 5 s of the kill.
func TestNotifierKilledHoldingClaims(t *testing.T) {
	if os.Getenv(envLeaseRole) != "" || os.Getenv(envRole) != "" {
		return // a child runs only its role
	}
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			if dialect == "postgres" && !testdb.PostgresEnabled() {
				t.Skipf("set %s to run on PostgreSQL", testdb.EnvPostgres)
			}
			testKilledHoldingClaims(t, dialect)
		})
	}
}

func testKilledHoldingClaims(t *testing.T, dialect string) {
	const workers = 3
	const events = 2 * workers // one in a send and one waiting, per worker
	ctx := context.Background()
	dir := t.TempDir()
	r := leaseRole{Dialect: dialect, Prefix: e2ePrefix(), Users: events, Workers: workers}
	if dialect == "postgres" {
		r.DB = testdb.PostgresURL(t)
	} else {
		r.DB = filepath.Join(dir, "shop.db")
	}
	st := openLeaseStore(ctx, t, dialect, r.DB)
	b, err := natsjs.Embedded(ctx, natsjs.WithDataDir(filepath.Join(dir, "nats")), natsjs.WithListen("127.0.0.1:0"),
		natsjs.WithPrefix(r.Prefix), natsjs.WithLogger(e2eLogger()))
	check(t, err)
	t.Cleanup(func() { b.Close() })
	r.NATS = b.URL()
	hook := newHookReceiver(t)
	r.Hook = hook.srv.URL

	// The parent's instance decides; its notifier starts after the kill.
	svc, n := leaseService(ctx, t, st, b, r)
	check(t, svc.Start(ctx))
	t.Cleanup(func() { n.Close(); svc.Close() })
	check(t, svc.Do(ctx, func(tx herald.Tx) error {
		for i := range events {
			if err := herald.Notify(tx, e2eShipped, e2eOrder{ID: fmt.Sprintf("o%d", i), To: fmt.Sprintf("u%d", i), Note: "n"}); err != nil {
				return err
			}
		}
		return nil
	}))
	rows := func() []notify.Delivery {
		ds, err := n.Deliveries(ctx, notify.DeliveryFilter{})
		check(t, err)
		return ds
	}
	poll(t, 30*time.Second, nil, "deciding", func() (bool, string) {
		ds := rows()
		return len(ds) == events && !slices.ContainsFunc(ds, func(d notify.Delivery) bool { return d.State != notify.Queued }), describe(ds)
	})

	child := startLeaseChild(t, dir, r)
	// The child claims every row: one send per worker hangs at the
	// receiver, the other rows wait for a worker. Generous: the child
	// starts a test binary, a store and a service on a loaded machine.
	first := map[string]notify.Delivery{}
	poll(t, 60*time.Second, child, "the child holding every row", func() (bool, string) {
		ds, hanging := rows(), hook.hangingNow()
		for _, d := range ds {
			if d.State != notify.Sending {
				return false, describe(ds)
			}
			first[d.Key] = d
		}
		return len(hanging) == workers, fmt.Sprintf("%d sends hanging at the receiver; %s", len(hanging), describe(ds))
	})
	// Once the leases seen then have run out, the child still holds every
	// row, with leases renewed past them.
	var firstEnd time.Time
	for _, d := range first {
		if d.ClaimUntil.After(firstEnd) {
			firstEnd = d.ClaimUntil
		}
	}
	poll(t, 30*time.Second, child, "the child renewing its leases", func() (bool, string) {
		ds := rows()
		if !time.Now().After(firstEnd) {
			return false, "the leases seen are not over: " + describe(ds)
		}
		for _, d := range ds {
			f := first[d.Key]
			if d.State != notify.Sending || d.ClaimedBy != f.ClaimedBy || !d.ClaimUntil.After(f.ClaimUntil) {
				return false, describe(ds)
			}
		}
		return true, ""
	})
	pid := child.cmd.Process.Pid
	killedAt := time.Now()
	check(t, child.cmd.Process.Kill()) // SIGKILL
	<-child.done
	hook.answer()
	held := rows()
	var leftAt time.Time
	for _, d := range held {
		if d.State != notify.Sending || d.ClaimedBy != first[d.Key].ClaimedBy {
			t.Fatalf("a row changed hands before the kill: %s", describe(held))
		}
		if d.ClaimUntil.After(leftAt) {
			leftAt = d.ClaimUntil
		}
	}
	check(t, n.Start(ctx))

	// Wait past maxRecovery, to measure how long it takes even when too long.
	var sent map[string][]time.Time
	poll(t, 30*time.Second, nil, "the second notifier sending the dead one's rows", func() (bool, string) {
		sent = hook.answeredNow()
		return len(sent) == events, fmt.Sprintf("%d of %d webhooks answered; %s", len(sent), events, describe(rows()))
	})
	var took time.Duration
	for _, d := range held {
		at := sent[d.Key]
		if len(at) == 0 {
			t.Fatalf("%s, held by the child, was not sent; sent: %v", d.Key, slices.Sorted(maps.Keys(sent)))
		}
		took = max(took, at[0].Sub(killedAt))
	}
	t.Logf("%s: SIGKILL of the child (pid %d) holding %d rows (%d in a send) on a lease of %v: the last of them sent by the second notifier %v after the kill (their leases ran out %v after it)",
		dialect, pid, len(held), workers, notify.DefaultLease, took.Round(time.Millisecond), leftAt.Sub(killedAt).Round(time.Millisecond))
	if took > maxRecovery {
		t.Errorf("the rows the killed notifier held were sent %v after the kill, want at most %v", took, maxRecovery)
	}
	// Recorded as delivered by the second notifier's claims, each sent once.
	poll(t, 30*time.Second, nil, "recording", func() (bool, string) {
		ds := rows()
		for _, d := range ds {
			if d.State != notify.Delivered || d.ClaimedBy == first[d.Key].ClaimedBy {
				return false, describe(ds)
			}
		}
		return true, ""
	})
	for id, at := range hook.answeredNow() {
		if len(at) != 1 {
			t.Errorf("%s answered %d times after the kill, want once", id, len(at))
		}
	}
}
