package notify

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testdb"
)

// countingSender is a fast in-test sender.
type countingSender struct {
	channel string
	n       atomic.Int64
	target  atomic.Int64
	done    chan struct{}
}

func (s *countingSender) Name() string    { return "count" }
func (s *countingSender) Channel() string { return s.channel }
func (s *countingSender) Send(ctx context.Context, m Message) (Receipt, error) {
	if s.n.Add(1) == s.target.Load() {
		close(s.done)
	}
	return Receipt{ProviderID: m.Key}, nil
}

func benchDialects(b *testing.B, fn func(b *testing.B, dialect string)) {
	for _, d := range testdb.Dialects {
		b.Run(d, func(b *testing.B) {
			if d == "postgres" && os.Getenv(testdb.EnvPostgres) == "" {
				b.Skipf("set %s to run on PostgreSQL", testdb.EnvPostgres)
			}
			fn(b, d)
		})
	}
}

// benchUsers is a directory of 1000 recipients; events go round-robin to
// them, so a per-recipient throttle of 100 an hour is counted but not hit.
const benchUsers = 1000

func benchDirectory() MapDirectory {
	d := testDirectory()
	for i := range benchUsers {
		id := fmt.Sprintf("u%d", i)
		d[id] = Recipient{Name: id, TimeZone: "Europe/Zurich", Addresses: map[string]string{Email: id + "@example.com"}}
	}
	return d
}

func benchUser(i int) string { return fmt.Sprintf("u%d", i%benchUsers) }

// BenchmarkPipeline measures notifications/s through the whole notifier:
// Notify in Do (100 per transaction) → outbox → broker → Receive (directory,
// preferences, suppression, idempotency, quiet hours, throttle, one row per
// notification) → worker (claim, template, send into a fast sender,
// record). One recipient per event, e-mail, round-robin over 1000
// recipients with a throttle of 100 per recipient and hour.
func BenchmarkPipeline(b *testing.B) {
	benchDialects(b, func(b *testing.B, dialect string) {
		sender := &countingSender{channel: Email, done: make(chan struct{})}
		spec := defaultSpec()
		spec.Throttle = &Throttle{Window: time.Hour, Limit: 100} // counted, not hit
		e := newEnv(b, dialect, setup{spec: spec, noStart: true, dir: benchDirectory(),
			opts:    []Option{WithWorkers(16), WithQuietHours(QuietHours{Start: 3 * time.Hour, End: 3*time.Hour + time.Minute})},
			senders: func(e *env) error { return e.n.Senders(Email, sender) }})
		must(b, e.n.SetPreference(e.ctx, Preference{Recipient: "u1", Category: "orders", Channel: Email, Enabled: true}))
		must(b, e.n.SetPreference(e.ctx, Preference{Recipient: "*", Category: "marketing", Channel: "*", Enabled: false}))
		must(b, e.n.Start(e.ctx))
		sender.target.Store(int64(b.N))
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += 100 {
			must(b, e.svc.Do(e.ctx, func(tx herald.Tx) error {
				for j := i; j < min(i+100, b.N); j++ {
					if err := herald.Notify(tx, orderShipped, order{ID: fmt.Sprint(j), To: []string{benchUser(j)}, Total: j}); err != nil {
						return err
					}
				}
				return nil
			}))
		}
		select {
		case <-sender.done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("sent %d of %d", sender.n.Load(), b.N)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notifications/s")
	})
}

// BenchmarkDecide measures the deciding half alone: the pipeline for one
// recipient and channel, 100 events per transaction, no broker, no send.
func BenchmarkDecide(b *testing.B) {
	benchDialects(b, func(b *testing.B, dialect string) {
		spec := defaultSpec()
		spec.Throttle = &Throttle{Window: time.Hour, Limit: 100}
		e := newEnv(b, dialect, setup{spec: spec, noStart: true, dir: benchDirectory()})
		must(b, e.n.SetPreference(e.ctx, Preference{Recipient: "u1", Category: "orders", Channel: Email, Enabled: true}))
		r := e.n.route(defaultRouteName(orderShipped.Name()))
		data := []byte(`{"id":"o","to":["bob"],"total":1}`)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += 100 {
			must(b, e.svc.Do(e.ctx, func(tx herald.Tx) error {
				for j := i; j < min(i+100, b.N); j++ {
					ev := event{ID: fmt.Sprintf("bench-%d", j), Type: orderShipped.Name(), CorrelationID: "bench"}
					if err := e.n.decide(e.ctx, tx, r, ev, intake{recipients: []string{benchUser(j)}, data: data}); err != nil {
						return err
					}
				}
				return nil
			}))
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
	})
}
