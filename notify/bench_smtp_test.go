package notify_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/smtp"
)

// benchSMTPUsers recipients get the benchmark's notifications round-robin.
const benchSMTPUsers = 1000

// benchPool is the SMTP session pool of both benchmarks.
const benchPool = smtp.DefaultPoolSize

// rawRate is BenchmarkRawGoMail's last rate (messages/s), the baseline of
// BenchmarkNotifySMTP's ratio when both run in one go test invocation.
var rawRate struct {
	sync.Mutex
	v float64
}

// BenchmarkRawGoMail sends b.N rendered messages — the same templates, the
// same headers and parts as notify/smtp builds — with plain go-mail through
// benchPool reused client sessions into the in-process SMTP server: the
// ceiling of BenchmarkNotifySMTP.
func BenchmarkRawGoMail(b *testing.B) {
	box := &mailbox{}
	srv := startSMTP(b, box)
	host, ps, _ := net.SplitHostPort(srv.addr)
	port, _ := strconv.Atoi(ps)
	tpl, err := notify.NewTemplates(e2eTemplates)
	check(b, err)
	dir := e2eDirectory(benchSMTPUsers)
	msgs := make([]*gomail.Msg, b.N)
	for i := range msgs {
		to := fmt.Sprintf("u%d", i%benchSMTPUsers)
		r, err := tpl.Render("e2e.shipped", notify.Email, "", notify.TemplateData{
			Data:      e2eOrder{ID: fmt.Sprintf("o-%d", i), To: to, Note: e2eMalicious},
			Recipient: notify.Profile{ID: to, Name: dir[to].Name}, Channel: notify.Email, Category: "orders",
		})
		check(b, err)
		m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
		check(b, m.From(e2eFrom))
		check(b, m.To(dir[to].Addresses[notify.Email]))
		m.Subject(r.Subject)
		m.SetMessageIDWithValue(strings.Trim(smtp.MessageID(fmt.Sprintf("ev-%d/%s/email", i, to), smtp.DefaultMessageIDDomain), "<>"))
		m.SetDate()
		m.SetBodyString(gomail.TypeTextPlain, r.Text)
		m.AddAlternativeString(gomail.TypeTextHTML, r.HTML)
		msgs[i] = m
	}
	clients := make([]*gomail.Client, benchPool)
	for i := range clients {
		c, err := gomail.NewClient(host, gomail.WithPort(port), gomail.WithTLSPolicy(gomail.NoTLS), gomail.WithTimeout(5*time.Second))
		check(b, err)
		check(b, c.DialWithContext(context.Background()))
		clients[i] = c
	}
	b.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	jobs := make(chan *gomail.Msg, len(msgs))
	for _, m := range msgs {
		jobs <- m
	}
	close(jobs)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients {
		wg.Go(func() {
			for m := range jobs {
				if err := c.Send(m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if got := box.count(); got != b.N {
		b.Fatalf("server received %d of %d", got, b.N)
	}
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "msgs/s")
	rawRate.Lock()
	rawRate.v = rate
	rawRate.Unlock()
}

// BenchmarkNotifySMTP measures notifications/s through the whole pipeline
// into the in-process SMTP server: Notify in Do (100 per transaction) →
// outbox → broker → Receive (directory, preferences, suppression,
// idempotency, throttle of 100 per recipient and hour — counted, not hit)
// → worker (claim, template, notify/smtp with benchPool sessions) →
// delivery log, on SQLite. One recipient per event, round-robin over 1000.
// When BenchmarkRawGoMail ran before it in the same invocation it also
// reports its rate as a fraction of plain go-mail's ("x-raw").
func BenchmarkNotifySMTP(b *testing.B) {
	ctx := context.Background()
	box := &mailbox{}
	srv := startSMTP(b, box)
	br, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithPrefix(e2ePrefix()), natsjs.WithLogger(e2eLogger()))
	check(b, err)
	b.Cleanup(func() { br.Close() })
	s := newStack(ctx, b, stackConfig{
		st: testdb.SQLite(b), b: br, smtpAddr: srv.addr, users: benchSMTPUsers,
		relay:    herald.RelayConfig{PollInterval: 20 * time.Millisecond},
		opts:     []notify.Option{notify.WithWorkers(16)},
		smtpOpts: []smtp.Option{smtp.WithPoolSize(benchPool)},
		throttle: &notify.Throttle{Window: time.Hour, Limit: 100},
	})
	b.Cleanup(s.close)
	check(b, s.n.SetPreference(ctx, notify.Preference{Recipient: "u1", Category: "orders", Channel: notify.Email, Enabled: true}))
	check(b, s.n.SetPreference(ctx, notify.Preference{Recipient: "*", Category: "marketing", Channel: "*", Enabled: false}))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i += 100 {
		check(b, s.svc.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+100, b.N); j++ {
				if err := herald.Notify(tx, e2eShipped, e2eOrder{ID: fmt.Sprintf("o-%d", j), To: fmt.Sprintf("u%d", j%benchSMTPUsers), Note: e2eMalicious}); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	deadline := time.Now().Add(5 * time.Minute)
	for box.count() < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("server received %d of %d", box.count(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "notifications/s")
	rawRate.Lock()
	raw := rawRate.v
	rawRate.Unlock()
	if raw > 0 {
		b.ReportMetric(rate/raw, "x-raw")
	}
	if got := box.count(); got != b.N {
		b.Fatalf("server received %d, want %d", got, b.N)
	}
}
