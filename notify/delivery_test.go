package notify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/sony/gobreaker/v2"
)

// TestRetries: a retryable error is retried with growing, jittered
// delays until it succeeds; it fails for good after MaxAttempts or MaxAge;
// a Retry-After is honoured; a permanent error (PermanentFailure, or
// herald.Permanent) is not retried; ErrGone also
// suppresses the address.
func TestRetries(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect, setup{opts: []Option{
			WithSendRetry(Retry{MaxAttempts: 4, BaseDelay: 40 * time.Millisecond, MaxDelay: 160 * time.Millisecond, MaxAge: time.Minute})}})
		var mu sync.Mutex
		calls := map[string]int{}
		e.senders[Email].setFail(func(m Message, _ int) error {
			mu.Lock()
			calls[m.CorrelationID]++
			n := calls[m.CorrelationID]
			mu.Unlock()
			switch m.CorrelationID {
			case "flaky":
				if n <= 2 {
					return fmt.Errorf("smtp 451 try again (%d)", n)
				}
			case "down":
				return errors.New("connection refused")
			case "slow-down":
				if n == 1 {
					return &RetryAfterError{After: 400 * time.Millisecond, Err: errors.New("429")}
				}
			case "permanent":
				return PermanentFailure(errors.New("550 mailbox does not exist"))
			case "herald-permanent": // the handlers' marker means the same in a Sender
				return herald.Permanent(errors.New("551 user not local"))
			case "gone":
				return fmt.Errorf("hard bounce: %w", ErrGone)
			}
			return nil
		})
		start := time.Now()
		for _, c := range []string{"flaky", "down", "slow-down", "permanent", "herald-permanent"} {
			e.emit(c, order{ID: c, To: []string{"bob"}})
		}
		e.emit("gone", order{ID: "gone", To: []string{"dave"}})
		flaky := e.waitState(DeliveryFilter{CorrelationID: "flaky"}, Sent)
		if flaky.Attempts != 3 || !strings.Contains(flaky.LastError, "451") {
			t.Errorf("flaky: %+v", flaky)
		}
		down := e.waitState(DeliveryFilter{CorrelationID: "down"}, Failed)
		if down.Attempts != 4 || !strings.HasPrefix(down.Reason, ReasonExhausted+": 4 attempts") || down.LastError != "connection refused" {
			t.Errorf("down: %+v", down)
		}
		slow := e.waitState(DeliveryFilter{CorrelationID: "slow-down"}, Sent)
		if slow.Attempts != 2 || slow.SentAt.Sub(start) < 400*time.Millisecond {
			t.Errorf("retry-after: %+v (after %v)", slow, slow.SentAt.Sub(start))
		}
		perm := e.waitState(DeliveryFilter{CorrelationID: "permanent"}, Failed)
		if perm.Attempts != 1 || !strings.HasPrefix(perm.Reason, ReasonPermanent+": ") || !strings.Contains(perm.Reason, "550") {
			t.Errorf("permanent: %+v", perm)
		}
		hp := e.waitState(DeliveryFilter{CorrelationID: "herald-permanent"}, Failed)
		if hp.Attempts != 1 || !strings.HasPrefix(hp.Reason, ReasonPermanent+": ") || !strings.Contains(hp.Reason, "551") {
			t.Errorf("herald.Permanent from a sender: %+v", hp)
		}
		gone := e.waitState(DeliveryFilter{CorrelationID: "gone"}, Failed)
		if gone.Attempts != 1 || !strings.HasPrefix(gone.Reason, ReasonGone+": ") {
			t.Errorf("gone: %+v", gone)
		}
		if s, ok, err := e.n.Suppressed(e.ctx, Email, "dave@example.com"); err != nil || !ok || !strings.HasPrefix(s.Reason, ReasonGone) {
			t.Fatalf("gone did not suppress: %+v %v %v", s, ok, err)
		}
		e.emit("after-gone", order{ID: "x", To: []string{"dave"}})
		expect(t, byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "after-gone"}, 1)), "dave/email", Suppressed, ReasonSuppressedAddress+": gone")
	})
}

// TestBackoff: the delays between attempts grow exponentially, with jitter
// within [d/2, d], capped at MaxDelay; MaxAge ends retries early.
func TestBackoff(t *testing.T) {
	t.Parallel()
	r := Retry{MaxAttempts: 10, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, MaxAge: time.Hour}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 50 {
			if d := r.backoff(attempt + 1); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt+1, d, want/2, want)
			}
		}
	}

	e := newEnv(t, "sqlite", setup{opts: []Option{
		// MaxAge leaves room for a few attempts on a loaded machine; the
		// attempts never reach MaxAttempts, so age is what ends them.
		WithSendRetry(Retry{MaxAttempts: 100, BaseDelay: 30 * time.Millisecond, MaxDelay: 60 * time.Millisecond, MaxAge: time.Second})}})
	e.senders[Email].setFail(func(Message, int) error { return errors.New("still down") })
	e.emit("age", order{ID: "o", To: []string{"bob"}})
	d := e.waitState(DeliveryFilter{CorrelationID: "age"}, Failed)
	if !strings.HasPrefix(d.Reason, ReasonExpired) || d.Attempts < 3 || d.Attempts >= 100 {
		t.Fatalf("max age: %+v", d)
	}
	times := e.senders[Email].callTimes()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 14*time.Millisecond {
			t.Errorf("gap %d is %v, below the jittered minimum", i, gap)
		}
	}
}

// TestFailover: while the primary provider fails, its breaker opens after
// Failures consecutive failures and sends go to the failover; once the
// primary is back, a half-open probe closes the breaker and sends return
// to it.
func TestFailover(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		primary, backup := newSender("primary", Email), newSender("backup", Email)
		primary.setFail(func(Message, int) error { return errors.New("primary down") })
		e := newEnv(t, dialect, setup{
			opts: []Option{WithWorkers(2), WithBreaker(Breaker{Failures: 3, OpenFor: 300 * time.Millisecond})},
			senders: func(e *env) error {
				e.senders["primary"], e.senders["backup"] = primary, backup
				return e.n.Senders(Email, primary, backup)
			}})
		start := time.Now()
		for i := range 10 {
			e.emit("down", order{ID: fmt.Sprint(i), To: []string{"bob"}})
		}
		ds := e.waitDeliveries(DeliveryFilter{CorrelationID: "down"}, 10)
		// 3 failures open it; the other worker may have had one in flight;
		// then one probe per OpenFor.
		bound := 3 + 1 + int(time.Since(start)/(300*time.Millisecond)) + 1
		for _, d := range ds {
			if d.State != Sent || d.Provider != "backup" {
				t.Errorf("while the primary is down: %s %s %q", d.State, d.Provider, d.LastError)
			}
		}
		if n := primary.callCount(); n < 3 || n > bound {
			t.Errorf("primary called %d times: the breaker should stop it after 3 (plus probes, at most %d)", n, bound)
		}
		if st := e.n.providers(Email)[0].cb.State(); st != gobreaker.StateOpen && st != gobreaker.StateHalfOpen {
			t.Errorf("primary breaker %v", st)
		}
		primary.setFail(nil)
		time.Sleep(350 * time.Millisecond) // half-open
		for i := range 3 {
			e.emit("up", order{ID: fmt.Sprint(i), To: []string{"bob"}})
			e.waitDeliveries(DeliveryFilter{CorrelationID: "up"}, i+1)
		}
		for _, d := range e.deliveries(DeliveryFilter{CorrelationID: "up"}) {
			if d.Provider != "primary" {
				t.Errorf("after recovery: %s via %s", d.State, d.Provider)
			}
		}
		if st := e.n.providers(Email)[0].cb.State(); st != gobreaker.StateClosed {
			t.Errorf("primary breaker %v after a good probe", st)
		}
	})
}

// TestFallback: push → e-mail. A push not confirmed delivered within After
// is followed by an e-mail; one confirmed (MarkDelivered) is not; a push
// that fails for good, or a recipient without a push address, gets the
// e-mail at once.
func TestFallback(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Channels = []string{Push}
		spec.Fallback = []Fallback{{From: Push, To: Email, After: time.Hour}}
		e := newEnv(t, dialect, setup{spec: spec})
		e.senders[Push].setFail(func(m Message, _ int) error {
			if m.To == "dave-push" {
				return PermanentFailure(errors.New("invalid subscription"))
			}
			return nil
		})
		e.emit("unconfirmed", order{ID: "o1", To: []string{"alice"}})
		e.emit("confirmed", order{ID: "o2", To: []string{"alice"}})
		e.emit("push-fails", order{ID: "o3", To: []string{"dave"}})
		e.emit("no-push", order{ID: "o4", To: []string{"bob"}})

		fails := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "push-fails"}, 2))
		expect(t, fails, "dave/push", Failed, ReasonPermanent)
		expect(t, fails, "dave/email", Sent, ReasonFallback)
		if fails["dave/email"].Kind != KindFallback || fails["dave/email"].FallbackOf != fails["dave/push"].ID {
			t.Errorf("fallback row: %+v", fails["dave/email"])
		}
		noPush := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "no-push"}, 2))
		expect(t, noPush, "bob/push", Failed, ReasonNoAddress)
		expect(t, noPush, "bob/email", Sent, "")

		push := e.waitState(DeliveryFilter{CorrelationID: "confirmed", Channel: Push}, Sent)
		e.waitState(DeliveryFilter{CorrelationID: "unconfirmed", Channel: Push}, Sent)
		fb := e.waitState(DeliveryFilter{CorrelationID: "unconfirmed", Channel: Email}, Deferred)
		if !strings.HasPrefix(fb.Reason, ReasonFallback+": if push is not delivered by") {
			t.Errorf("fallback reason %q", fb.Reason)
		}
		must(t, e.n.MarkDelivered(e.ctx, Ref{Key: push.Key}))
		if err := e.n.MarkDelivered(e.ctx, Ref{Key: "nope"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown ref: %v", err)
		}
		e.waitState(DeliveryFilter{CorrelationID: "confirmed", Channel: Push}, Delivered)
		e.waitState(DeliveryFilter{CorrelationID: "confirmed", Channel: Email}, Suppressed)

		e.clk.Advance(time.Hour + time.Second)
		e.waitState(DeliveryFilter{CorrelationID: "unconfirmed", Channel: Email}, Sent)
		if d := e.deliveries(DeliveryFilter{CorrelationID: "confirmed", Channel: Email}); d[0].State != Suppressed ||
			!strings.HasPrefix(d[0].Reason, ReasonFallbackNotNeeded) {
			t.Errorf("confirmed push still fell back: %s", dump(d))
		}
		var to []string
		for _, m := range e.senders[Email].sent() {
			to = append(to, m.CorrelationID)
		}
		slices.Sort(to)
		if !slices.Equal(to, []string{"no-push", "push-fails", "unconfirmed"}) {
			t.Errorf("fallback e-mails for %v", to)
		}
	})
}

// TestMarkBounced: a bounce reported after the send fails the delivery and
// suppresses the address.
func TestMarkBounced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite", setup{})
	e.emit("b", order{ID: "o1", To: []string{"bob"}})
	d := e.waitState(DeliveryFilter{CorrelationID: "b"}, Sent)
	must(t, e.n.MarkBounced(e.ctx, Ref{Provider: d.Provider, ProviderID: d.ProviderID}, "550 5.1.1 user unknown"))
	d = e.waitState(DeliveryFilter{CorrelationID: "b"}, Failed)
	if !strings.HasPrefix(d.Reason, ReasonBounced) {
		t.Errorf("bounced: %+v", d)
	}
	if _, ok, _ := e.n.Suppressed(e.ctx, Email, "bob@example.com"); !ok {
		t.Error("bounce did not suppress")
	}
}

// TestTwoInstances: two notifier instances (two processes of the service
// on one database and broker) share the work and send each key once.
func TestTwoInstances(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		b, st := newBroker(t), testdb.For(t, dialect)
		var mu sync.Mutex
		sent := map[string][]string{}
		slow := func(name string) func(Message, int) error {
			return func(m Message, _ int) error {
				time.Sleep(2 * time.Millisecond)
				mu.Lock()
				sent[m.Key] = append(sent[m.Key], name)
				mu.Unlock()
				return nil
			}
		}
		spec := defaultSpec()
		spec.Channels = []string{Email, SMS}
		a := newEnv(t, dialect, setup{broker: b, store: st, spec: spec, opts: []Option{WithWorkers(4)}})
		c := newEnv(t, dialect, setup{broker: b, store: st, spec: spec, opts: []Option{WithWorkers(4)}})
		for _, e := range []*env{a, c} {
			name := fmt.Sprintf("%p", e)
			for _, s := range e.senders {
				s.setFail(slow(name))
			}
		}
		const events = 60
		for i := range events {
			e := a
			if i%2 == 1 {
				e = c
			}
			e.emit("two", order{ID: fmt.Sprint(i), To: []string{"alice", "dave"}})
		}
		// alice: email + sms, dave: email (+ sms failed, no address)
		ds := a.waitDeliveries(DeliveryFilter{CorrelationID: "two", Limit: 10000}, events*4)
		testwait.UntilReport(t, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(sent) == events*3
		}, func() string { return fmt.Sprintf("%d keys sent", len(sent)) })
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		by := map[string]int{}
		for k, who := range sent {
			if len(who) != 1 {
				t.Errorf("%s sent %d times", k, len(who))
			}
			by[who[0]]++
		}
		t.Logf("sends per instance: %v", by)
		var states []string
		for _, d := range ds {
			states = append(states, string(d.State))
		}
		sort.Strings(states)
		if n := len(slices.Compact(states)); n != 2 {
			t.Errorf("states %v", slices.Compact(states))
		}
	})
}

// TestSlowSendKeepsItsClaim: two instances share rows whose sends take 2.5
// times the lease (and rows that wait for a worker behind them as long).
// The renewal keeps every claim with its instance, so the other instance,
// polling all along, never takes a row whose send is still running: each
// delivery reaches the provider once, in one attempt.
func TestSlowSendKeepsItsClaim(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		const lease, send, events = time.Second, 2500 * time.Millisecond, 8
		b, st := newBroker(t), testdb.For(t, dialect)
		var mu sync.Mutex
		began := map[string][]string{} // key → the instances that called the provider
		var envs []*env
		for i := range 2 {
			name := fmt.Sprint("instance-", i)
			envs = append(envs, newEnv(t, dialect, setup{broker: b, store: st,
				opts: []Option{WithLease(lease), WithSendTimeout(10 * send), WithWorkers(2)},
				senders: func(e *env) error {
					return e.n.Senders(Email, FuncSender(Email, name, func(ctx context.Context, m Message) (Receipt, error) {
						mu.Lock()
						began[m.Key] = append(began[m.Key], name)
						mu.Unlock()
						select {
						case <-time.After(send):
							return Receipt{ProviderID: name + "/" + m.Key}, nil
						case <-ctx.Done():
							return Receipt{}, ctx.Err()
						}
					}))
				}}))
		}
		for i := range events {
			envs[i%2].emit("slow", order{ID: fmt.Sprint(i), To: []string{"bob"}})
		}
		// Two instances of two workers: two rounds of sends, about 5s.
		ds := envs[0].waitDeliveries(DeliveryFilter{CorrelationID: "slow"}, events)
		mu.Lock()
		defer mu.Unlock()
		per := map[string]int{}
		for _, d := range ds {
			who := began[d.Key]
			if d.State != Sent || d.Attempts != 1 || len(who) != 1 {
				t.Errorf("%s: %s after %d attempts, provider called by %v", d.Key, d.State, d.Attempts, who)
				continue
			}
			if want := who[0] + "/" + d.Key; d.ProviderID != want {
				t.Errorf("%s: recorded provider id %q, want %q", d.Key, d.ProviderID, want)
			}
			per[who[0]]++
		}
		if len(began) != events {
			t.Errorf("the provider got %d keys, want %d", len(began), events)
		}
		t.Logf("sends per instance: %v", per)
	})
}

// TestExpiredClaim: a row claimed by an instance that died (its lease
// expired) is claimed again and sent; a row under a live lease is not.
func TestExpiredClaim(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect, setup{noStart: true})
		e.emit("dead", order{ID: "o1", To: []string{"bob"}})
		e.emit("alive", order{ID: "o2", To: []string{"bob"}})
		var dead, alive Delivery
		testwait.UntilReport(t, 10*time.Second, func() bool {
			d, a := e.deliveries(DeliveryFilter{CorrelationID: "dead"}), e.deliveries(DeliveryFilter{CorrelationID: "alive"})
			if len(d) == 1 && len(a) == 1 {
				dead, alive = d[0], a[0]
				return true
			}
			return false
		}, func() string { return "not decided" })
		now := e.clk.Now()
		claim := e.st.Rebind(`UPDATE herald_notify_deliveries SET state = 'sending', claimed_by = ?, claim_until = ?, due_at = ? WHERE id = ?`)
		_, err := e.st.DB().Exec(claim, "crashed/1", now.Add(-time.Second).UnixNano(), now.Add(-time.Second).UnixNano(), dead.ID)
		must(t, err)
		_, err = e.st.DB().Exec(claim, "busy/1", now.Add(time.Hour).UnixNano(), now.Add(time.Hour).UnixNano(), alive.ID)
		must(t, err)
		must(t, e.n.Start(e.ctx))
		d := e.waitState(DeliveryFilter{CorrelationID: "dead"}, Sent)
		if d.ClaimedBy == "crashed/1" || d.Attempts != 1 {
			t.Errorf("reclaimed: %+v", d)
		}
		time.Sleep(100 * time.Millisecond)
		if a := e.deliveries(DeliveryFilter{CorrelationID: "alive"}); a[0].State != Sending || a[0].ClaimedBy != "busy/1" {
			t.Errorf("a live claim was taken: %s", dump(a))
		}
	})
}

// TestExpiredLeaseReleased: a claimed row whose lease ran out before a
// worker takes it (its renewals failed, or the clock jumped past it) is not
// sent but released, without counting an attempt, and sent by a later
// claim; a row with less than a send timeout of its lease left is sent (the
// renewal keeps it while it sends).
func TestExpiredLeaseReleased(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect, setup{noStart: true, opts: []Option{WithSendTimeout(time.Minute), WithLease(3 * time.Minute)}})
		e.emit("short", order{ID: "o1", To: []string{"bob"}})
		e.emit("expired", order{ID: "o2", To: []string{"bob"}})
		testwait.UntilReport(t, 10*time.Second, func() bool { return len(e.deliveries(DeliveryFilter{Limit: 10})) == 2 },
			func() string { return "not decided" })
		claimed, err := e.n.recordTx(e.ctx, nil, 2)
		must(t, err)
		if len(claimed) != 2 {
			t.Fatalf("claimed %d rows, want 2", len(claimed))
		}
		short, expired := claimed[0], claimed[1]
		if short.CorrelationID != "short" {
			short, expired = expired, short
		}
		e.clk.Advance(2*time.Minute + time.Second) // less than the send timeout left
		if j := e.n.process(e.ctx, short); j.o.state != Sent || j.o.release {
			t.Fatalf("short: outcome %+v, want sent", j.o)
		} else {
			e.n.recordBatch([]recordJob{j})
		}
		e.clk.Advance(time.Minute) // past the lease
		j := e.n.process(e.ctx, expired)
		if !j.o.release {
			t.Fatalf("expired: outcome %+v, want a release", j.o)
		}
		e.n.recordBatch([]recordJob{j})
		if d := e.deliveries(DeliveryFilter{CorrelationID: "expired"}); d[0].State != Queued || d[0].Attempts != 0 || e.senders[Email].callCount() != 1 {
			t.Fatalf("after the release: %s, %d sends", dump(d), e.senders[Email].callCount())
		}
		must(t, e.n.Start(e.ctx))
		if d := e.waitState(DeliveryFilter{CorrelationID: "expired"}, Sent); d.Attempts != 1 {
			t.Errorf("sent after %d attempts, want 1", d.Attempts)
		}
		if d := e.deliveries(DeliveryFilter{CorrelationID: "short"}); d[0].State != Sent || d[0].Attempts != 1 {
			t.Errorf("short: %s", dump(d))
		}
	})
}

// blockingSender never returns until released, whatever its context says.
type blockingSender struct {
	channel string
	release chan struct{}
	mu      sync.Mutex
	calls   int
	fail    bool // fail fast instead of blocking
}

func (s *blockingSender) Name() string    { return "stuck-" + s.channel }
func (s *blockingSender) Channel() string { return s.channel }
func (s *blockingSender) Send(ctx context.Context, m Message) (Receipt, error) {
	s.mu.Lock()
	s.calls++
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return Receipt{}, errors.New("provider down")
	}
	<-s.release
	return Receipt{}, errors.New("released")
}

// TestBusinessFlowNotBlocked: a service records events in Do at a steady
// rate; the notifier (its own service) has every sender blocking forever,
// then failing. Do never fails and its latency stays that of the phase with
// healthy senders, while the notifier keeps deciding.
func TestBusinessFlowNotBlocked(t *testing.T) {
	ctx := context.Background()
	b := newBroker(t)
	ost, nst := testdb.SQLite(t), testdb.SQLite(t)
	_, err := ost.DB().Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY)`)
	must(t, err)
	orders, err := herald.New("orders", herald.WithStore(ost), herald.WithBroker(b), herald.WithLogger(quiet()),
		herald.WithRelay(herald.RelayConfig{PollInterval: 20 * time.Millisecond}))
	must(t, err)
	must(t, orders.Register(orderShipped))
	notifications, err := herald.New("notifications", herald.WithStore(nst), herald.WithBroker(b), herald.WithLogger(quiet()))
	must(t, err)
	tpl, _ := NewTemplates(testTemplates)
	n, err := NewNotifier(notifications, testDirectory(), WithRenderer(tpl), WithLogger(quiet()), WithPollInterval(10*time.Millisecond),
		WithSendTimeout(100*time.Millisecond), WithLease(time.Second), WithWorkers(4),
		WithSendRetry(Retry{BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}))
	must(t, err)
	spec := defaultSpec()
	spec.Channels = []string{Email, Push}
	must(t, Route(n, orderShipped, spec))
	healthy := map[string]*recSender{Email: newSender("ok", Email), Push: newSender("ok", Push)}
	stuck := map[string]*blockingSender{Email: {channel: Email, release: make(chan struct{})}, Push: {channel: Push, release: make(chan struct{})}}
	var down sync.Map // switches every channel to its stuck sender
	for _, ch := range spec.Channels {
		must(t, n.Senders(ch, FuncSender(ch, "switch", func(ctx context.Context, m Message) (Receipt, error) {
			if _, ok := down.Load("down"); ok {
				return stuck[m.Channel].Send(ctx, m)
			}
			return healthy[m.Channel].Send(ctx, m)
		})))
	}
	must(t, orders.Start(ctx))
	must(t, notifications.Start(ctx))
	must(t, n.Start(ctx))
	t.Cleanup(func() {
		for _, s := range stuck {
			close(s.release)
		}
		n.Close()
		notifications.Close()
		orders.Close()
	})

	const perPhase = 60
	seq := 0
	phase := func(name string) []time.Duration {
		var ds []time.Duration
		tick := time.NewTicker(5 * time.Millisecond) // 200 Do/s
		defer tick.Stop()
		for range perPhase {
			<-tick.C
			seq++
			id := fmt.Sprintf("%s-%d", name, seq)
			start := time.Now()
			err := orders.Do(herald.WithCorrelationID(ctx, name), func(tx herald.Tx) error {
				if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, id); err != nil {
					return err
				}
				return herald.Notify(tx, orderShipped, order{ID: id, To: []string{"alice", "dave"}})
			})
			ds = append(ds, time.Since(start))
			if err != nil {
				t.Fatalf("%s: Do failed: %v", name, err)
			}
		}
		slices.Sort(ds)
		return ds
	}
	up := phase("up")
	testwait.UntilReport(t, 15*time.Second, func() bool { return len(healthy[Email].sent()) == 2*perPhase },
		func() string { return fmt.Sprintf("%d e-mails while healthy", len(healthy[Email].sent())) })

	down.Store("down", true)
	blocked := phase("blocked")
	for _, s := range stuck {
		s.mu.Lock()
		s.fail = true
		s.mu.Unlock()
	}
	failing := phase("failing")

	// The notifier kept deciding while nothing could be sent.
	for _, flow := range []string{"blocked", "failing"} {
		testwait.UntilReport(t, 15*time.Second, func() bool {
			ds, err := n.Deliveries(ctx, DeliveryFilter{CorrelationID: flow, Limit: 10000})
			return err == nil && len(ds) == perPhase*4
		}, func() string { return flow + ": not every event was decided" })
	}
	if len(healthy[Email].sent()) != 2*perPhase {
		t.Errorf("sends while down: %d", len(healthy[Email].sent())-2*perPhase)
	}
	med := func(ds []time.Duration) time.Duration { return ds[len(ds)/2] }
	p90 := func(ds []time.Duration) time.Duration { return ds[len(ds)*9/10] }
	t.Logf("Do latency: healthy p50 %v p90 %v; blocked p50 %v p90 %v; failing p50 %v p90 %v",
		med(up), p90(up), med(blocked), p90(blocked), med(failing), p90(failing))
	// Speed is for benchmarks; what must hold is structural: a Do that
	// waited for a sender would hang behind the one that blocks forever.
	for name, ds := range map[string][]time.Duration{"blocked": blocked, "failing": failing} {
		if ds[len(ds)-1] > 5*time.Second {
			t.Errorf("%s senders held Do up: max %v (healthy p50 %v)", name, ds[len(ds)-1], med(up))
		}
	}
}

// TestOptionsAndSpecs: options, specs and registrations validate and wrap
// ErrInvalidOption (and herald.ErrInvalidOption).
func TestOptionsAndSpecs(t *testing.T) {
	t.Parallel()
	st := testdb.SQLite(t)
	svc, err := herald.New("opts", herald.WithStore(st))
	must(t, err)
	for name, o := range map[string]Option{
		"clock":   WithClock(nil),
		"workers": WithWorkers(0),
		"poll":    WithPollInterval(0),
		"retry":   WithSendRetry(Retry{BaseDelay: time.Second, MaxDelay: time.Millisecond}),
		"breaker": WithBreaker(Breaker{Failures: -1}),
		"timeout": WithSendTimeout(-1),
		"lease":   WithLease(99 * time.Millisecond), // < 100ms
		"quiet":   WithQuietHours(QuietHours{Start: 25 * time.Hour}),
		"default": WithDefaultOff("", Email),
		"render":  WithRenderer(nil),
		"logger":  WithLogger(nil),
		"keep":    WithRetention(-1),
		"check":   WithAddressCheck(Email, nil),
	} {
		if _, err := NewNotifier(svc, MapDirectory{}, o); !errors.Is(err, ErrInvalidOption) || !errors.Is(err, herald.ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewNotifier(svc, nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil directory: %v", err)
	}
	n, err := NewNotifier(svc, MapDirectory{})
	must(t, err)
	ok := defaultSpec()
	for name, mod := range map[string]func(s *Spec[order]){
		"category":      func(s *Spec[order]) { s.Category = "" },
		"recipients":    func(s *Spec[order]) { s.Recipients = nil },
		"channels":      func(s *Spec[order]) { s.Channels = nil },
		"dup channel":   func(s *Spec[order]) { s.Channels = []string{Email, Email} },
		"template":      func(s *Spec[order]) { s.Template = "" },
		"throttle":      func(s *Spec[order]) { s.Throttle = &Throttle{Window: time.Hour} },
		"digest":        func(s *Spec[order]) { s.Digest = &Digest{} },
		"fallback from": func(s *Spec[order]) { s.Fallback = []Fallback{{From: Push, To: SMS}} },
		"fallback to":   func(s *Spec[order]) { s.Fallback = []Fallback{{From: Email, To: Email}} },
		"name":          func(s *Spec[order]) { s.Name = "Bad Name" },
	} {
		s := ok
		mod(&s)
		if err := Route(n, orderShipped, s); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := n.Senders(Email, newSender("x", SMS)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("sender of another channel: %v", err)
	}
	must(t, Route(n, orderShipped, ok))
	if err := Route(n, orderShipped, ok); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("route twice: %v", err)
	}
	if err := n.Start(context.Background()); !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "no senders") {
		t.Errorf("start without senders: %v", err)
	}
	must(t, n.Senders(Email, newSender("x", Email)))
	if err := n.Start(context.Background()); !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "renderer") {
		t.Errorf("start without renderer: %v", err)
	}
	if got := defaultRouteName(strings.Repeat("a.", 60) + "b"); len(got) > 63 || !routeName.MatchString(got) {
		t.Errorf("long default route name %q", got)
	}
	must(t, n.Close())
	if err := n.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close: %v", err)
	}
}
