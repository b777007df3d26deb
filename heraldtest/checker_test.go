package heraldtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/store"
	_ "github.com/heraldhq/herald/store/sqlite" // registers the "sqlite" driver
)

// credited is the event of the checker's tests: an amount credited to an
// account, the partition key.
type credited struct {
	Account string `json:"account"`
	Amount  int    `json:"amount"`
}

var accountCredited = herald.Integration[credited]("test.account.credited", herald.Version(1),
	herald.KeyBy(func(e credited) string { return e.Account }))

// credits are the events the checks deliver: two accounts, interleaved.
var credits = []credited{{"alice", 10}, {"bob", 5}, {"alice", 7}}

// creditHandler is a handler of the checker's tests, made for the store of
// one instance.
type creditHandler func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error

// ledgerService builds a service whose subscription "credit" runs the
// handler handler makes.
func ledgerService(handler creditHandler, opts ...herald.SubscribeOption) func(ctx context.Context, st *store.Store, o ...herald.Option) (heraldtest.Instance, error) {
	return func(ctx context.Context, st *store.Store, o ...herald.Option) (heraldtest.Instance, error) {
		if _, err := st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS credits (account TEXT NOT NULL, amount INTEGER NOT NULL, seq INTEGER NOT NULL)`); err != nil {
			return nil, err
		}
		svc, err := herald.New("ledger", append([]herald.Option{herald.WithStore(st)}, o...)...)
		if err != nil {
			return nil, err
		}
		if err := herald.Subscribe(svc, accountCredited, "credit", handler(st), opts...); err != nil {
			return nil, err
		}
		return svc, nil
	}
}

// creditRows reads the credits table, in a stable order.
func creditRows(ctx context.Context, st *store.Store) (any, error) {
	rows, err := st.DB().QueryContext(ctx, `SELECT account, amount, seq FROM credits ORDER BY account, seq, amount`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		var amount, seq int
		if err := rows.Scan(&a, &amount, &seq); err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%s+%d#%d", a, amount, seq))
	}
	return out, rows.Err()
}

// insertCredit writes e in tx; seq numbers the account's credits.
func insertCredit(ctx context.Context, tx herald.Tx, st *store.Store, e credited) error {
	_, err := tx.SQL().ExecContext(ctx, st.Rebind(`INSERT INTO credits (account, amount, seq)
		SELECT ?, ?, COUNT(*) + 1 FROM credits WHERE account = ?`), e.Account, e.Amount, e.Account)
	return err
}

// inTx is the handler that keeps its effect in the transaction herald
// hands it.
func inTx(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
	return func(ctx context.Context, tx herald.Tx, e credited) error { return insertCredit(ctx, tx, st, e) }
}

func TestCheckPassesAHandlerThatKeepsItsEffectsInTx(t *testing.T) {
	r := heraldtest.CheckHandler(t, heraldtest.Check[credited]{
		Event:        accountCredited,
		Subscription: "credit",
		Service:      ledgerService(inTx),
		Events:       credits,
		Effect:       creditRows,
	})
	want := []heraldtest.Fault{heraldtest.FaultNone, heraldtest.FaultDeliveredTwice, heraldtest.FaultCrashAfterCommit,
		heraldtest.FaultCrashInHandler, heraldtest.FaultTransient}
	for _, f := range want {
		if !slices.Contains(r.Faults, f) {
			t.Errorf("the check injected %v, not %q", r.Faults, f)
		}
	}
	t.Logf("%d runs", r.Runs)
}

// perStore gives each store — each run of a check — a value of its own,
// made by mk, and the same value to every instance of the run.
func perStore[V any](mk func() V) func(st *store.Store) V {
	var mu sync.Mutex
	m := map[*store.Store]V{}
	return func(st *store.Store) V {
		mu.Lock()
		defer mu.Unlock()
		v, ok := m[st]
		if !ok {
			v = mk()
			m[st] = v
		}
		return v
	}
}

// An external system a handler calls over HTTP: it counts the credits it
// received, and takes each once per idempotency key when one is sent.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []string
	keys map[string]bool
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{keys: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if k := req.Header.Get("Idempotency-Key"); k != "" {
			if r.keys[k] {
				return
			}
			r.keys[k] = true
		}
		r.got = append(r.got, string(body))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) post(ctx context.Context, e credited, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.URL, strings.NewReader(fmt.Sprintf("%s+%d", e.Account, e.Amount)))
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(slices.Values(r.got))
}

// ownDBs gives each run an SQLite database of its own, outside the
// service's store: the handler's own connection.
func ownDBs(t *testing.T) func(st *store.Store) *sql.DB {
	return perStore(func() *sql.DB {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "own.db")+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := db.Exec(`CREATE TABLE credits (account TEXT NOT NULL, amount INTEGER NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		return db
	})
}

// A handler that breaks a guarantee, the faults that must catch it, and
// words its report must have.
type brokenHandler struct {
	name    string
	events  []credited
	handler creditHandler
	opts    []herald.SubscribeOption
	effect  func(ctx context.Context, st *store.Store) (any, error)
	caught  []heraldtest.Fault
	reason  map[heraldtest.Fault]string // words the violation's reason has
}

func TestCheckCatchesBrokenHandlers(t *testing.T) {
	own := ownDBs(t)
	calls := perStore(func() *receiver { return newReceiver(t) })
	cases := []brokenHandler{
		{
			name: "writes through its own connection",
			handler: func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
				return func(ctx context.Context, _ herald.Tx, e credited) error {
					_, err := own(st).ExecContext(ctx, `INSERT INTO credits (account, amount) VALUES (?, ?)`, e.Account, e.Amount)
					return err
				}
			},
			effect: func(ctx context.Context, st *store.Store) (any, error) {
				var n, sum int
				err := own(st).QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM credits`).Scan(&n, &sum)
				return fmt.Sprintf("%d credits, %d in all", n, sum), err
			},
			caught: []heraldtest.Fault{heraldtest.FaultCrashInHandler, heraldtest.FaultTransient},
			reason: map[heraldtest.Fault]string{
				heraldtest.FaultCrashInHandler: "ran twice when event 1 (test.account.credited key alice) was redelivered after a crash inside the handler",
				heraldtest.FaultTransient:      "it wrote outside tx",
			},
		},
		{
			name: "calls an external endpoint without an idempotency key",
			handler: func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
				return func(ctx context.Context, _ herald.Tx, e credited) error { return calls(st).post(ctx, e, "") }
			},
			effect: func(_ context.Context, st *store.Store) (any, error) { return calls(st).received(), nil },
			caught: []heraldtest.Fault{heraldtest.FaultCrashInHandler, heraldtest.FaultTransient},
			reason: map[heraldtest.Fault]string{heraldtest.FaultCrashInHandler: "an external call without an idempotency key"},
		},
		{
			name: "numbers credits across accounts",
			handler: func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
				return func(ctx context.Context, tx herald.Tx, e credited) error {
					_, err := tx.SQL().ExecContext(ctx, st.Rebind(`INSERT INTO credits (account, amount, seq)
						SELECT ?, ?, COUNT(*) + 1 FROM credits`), e.Account, e.Amount)
					return err
				}
			},
			caught: []heraldtest.Fault{heraldtest.FaultNone},
			reason: map[heraldtest.Fault]string{heraldtest.FaultNone: "depends on the order of events of different keys"},
		},
		{
			name:   "counts in memory",
			events: []credited{{"alice", 10}, {"alice", 7}},
			handler: func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
				n := map[string]int{} // one instance's: a crash loses it
				return func(ctx context.Context, tx herald.Tx, e credited) error {
					n[e.Account]++
					_, err := tx.SQL().ExecContext(ctx, st.Rebind(`INSERT INTO credits (account, amount, seq) VALUES (?, ?, ?)`),
						e.Account, e.Amount, n[e.Account])
					return err
				}
			},
			caught: []heraldtest.Fault{heraldtest.FaultCrashAfterCommit, heraldtest.FaultTransient},
			reason: map[heraldtest.Fault]string{
				heraldtest.FaultCrashAfterCommit: "when event 1 (test.account.credited key alice) was redelivered to a new instance after a crash between its commit and its ack",
			},
		},
		{
			name:   "blocks past its ack wait",
			events: credits[:1],
			opts:   []herald.SubscribeOption{herald.AckWait(100 * time.Millisecond)},
			handler: func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
				return func(ctx context.Context, tx herald.Tx, e credited) error {
					select { // the handler under check waits on something slow
					case <-time.After(150 * time.Millisecond):
					case <-ctx.Done():
						return ctx.Err()
					}
					return insertCredit(ctx, tx, st, e)
				}
			},
			caught: []heraldtest.Fault{heraldtest.FaultBlocked},
			reason: map[heraldtest.Fault]string{heraldtest.FaultBlocked: "past its ack wait of 100ms"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			events, effect := c.events, c.effect
			if events == nil {
				events = credits
			}
			if effect == nil {
				effect = creditRows
			}
			r := heraldtest.Examine(t, heraldtest.Check[credited]{
				Event: accountCredited, Subscription: "credit", Service: ledgerService(c.handler, c.opts...),
				Events: events, Effect: effect,
			})
			var got []heraldtest.Fault
			for _, v := range r.Violations {
				got = append(got, v.Fault)
				t.Logf("%s: %s", r.Subscription, v)
				if want, ok := c.reason[v.Fault]; ok && !strings.Contains(v.Reason, want) {
					t.Errorf("the %s violation's reason %q does not say %q", v.Fault, v.Reason, want)
				}
			}
			for _, f := range c.caught {
				if !slices.Contains(got, f) {
					t.Errorf("the check found %v, not %q", got, f)
				}
			}
		})
	}
}

// deposited is the domain event of the domain checks.
type deposited struct {
	Account string
	Amount  int
}

var depositMade = herald.Domain[deposited]("test.deposit-made")

// bankService builds a service whose domain handler "book" runs the
// handler handle makes.
func bankService(handle func(st *store.Store) func(ctx context.Context, tx herald.Tx, e deposited) error) func(ctx context.Context, st *store.Store, o ...herald.Option) (heraldtest.DomainInstance, error) {
	return func(ctx context.Context, st *store.Store, o ...herald.Option) (heraldtest.DomainInstance, error) {
		if _, err := st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS credits (account TEXT NOT NULL, amount INTEGER NOT NULL, seq INTEGER NOT NULL)`); err != nil {
			return nil, err
		}
		svc, err := herald.New("bank", append([]herald.Option{herald.WithStore(st)}, o...)...)
		if err != nil {
			return nil, err
		}
		return svc, herald.Handle(svc, depositMade, "book", handle(st))
	}
}

func TestCheckDomainHandlers(t *testing.T) {
	events := []deposited{{"alice", 10}, {"bob", 5}}
	t.Run("in tx", func(t *testing.T) {
		t.Parallel()
		r := heraldtest.CheckDomain(t, heraldtest.DomainCheck[deposited]{
			Event: depositMade, Handler: "book", Events: events, Effect: creditRows,
			Service: bankService(func(st *store.Store) func(ctx context.Context, tx herald.Tx, e deposited) error {
				return func(ctx context.Context, tx herald.Tx, e deposited) error {
					return insertCredit(ctx, tx, st, credited(e))
				}
			}),
		})
		if r.Runs != 1+len(events) {
			t.Errorf("%d runs, want %d", r.Runs, 1+len(events))
		}
	})
	t.Run("outside tx", func(t *testing.T) {
		t.Parallel()
		calls := perStore(func() *receiver { return newReceiver(t) })
		r := heraldtest.ExamineDomain(t, heraldtest.DomainCheck[deposited]{
			Event: depositMade, Handler: "book", Events: events,
			Effect: func(_ context.Context, st *store.Store) (any, error) { return calls(st).received(), nil },
			Service: bankService(func(st *store.Store) func(ctx context.Context, tx herald.Tx, e deposited) error {
				return func(ctx context.Context, _ herald.Tx, e deposited) error { return calls(st).post(ctx, credited(e), "") }
			}),
		})
		if len(r.Violations) != 1 || r.Violations[0].Fault != heraldtest.FaultRolledBack || r.Violations[0].Target != 1 ||
			!strings.Contains(r.Violations[0].Reason, "wrote outside tx") {
			t.Fatalf("violations %+v, want one: event 1 rolled back, its handler wrote outside tx", r.Violations)
		}
		t.Log(r.Violations[0])
	})
}

// Correct handlers the checker must pass: one that dead-letters an event
// for good (no run of it ever ends to crash in), one whose retry policy
// allows two attempts (one injected failure, not a dead letter).
func TestCheckPassesCorrectHandlersWithDeadLettersAndShortRetries(t *testing.T) {
	refusing := func(st *store.Store) func(ctx context.Context, tx herald.Tx, e credited) error {
		return func(ctx context.Context, tx herald.Tx, e credited) error {
			if e.Amount < 0 {
				return herald.Permanent(fmt.Errorf("a credit of %d", e.Amount))
			}
			return insertCredit(ctx, tx, st, e)
		}
	}
	cases := []struct {
		name    string
		handler creditHandler
		opts    []herald.SubscribeOption
		events  []credited
	}{
		{"dead-letters a negative credit", refusing, nil, []credited{{"alice", 10}, {"bob", -5}}},
		{"two attempts", inTx, []herald.SubscribeOption{herald.Retry(herald.RetryPolicy{MaxAttempts: 2, BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond})}, credits[:2]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			heraldtest.CheckHandler(t, heraldtest.Check[credited]{
				Event: accountCredited, Subscription: "credit", Service: ledgerService(c.handler, c.opts...),
				Events: c.events, Effect: creditRows, Timeout: 10 * time.Second,
			})
		})
	}
}
