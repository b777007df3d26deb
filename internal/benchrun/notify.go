package benchrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/smtp"
)

// notifyUsers recipients get the notifications round-robin, so the
// per-recipient throttle of 100 an hour is counted but never hit.
const notifyUsers = 1000

// notifyFrom is the sender address of both systems.
const notifyFrom = "Herald <noreply@example.com>"

// shipped is the notification the scenario sends.
type shipped struct {
	ID     string `json:"id"`
	To     string `json:"to"`
	SentNS int64  `json:"sent_ns"`
}

var notifyTemplates = map[string]notify.Template{
	"bench.shipped": {
		Subject: "Order {{.Data.ID}} shipped",
		// The first line carries the latency clock's start, short enough
		// never to be folded by the quoted-printable encoding, and without
		// "=", which that encoding escapes.
		Text: "sent:{{.Data.SentNS}};\nHi {{.Recipient.Name}}, order {{.Data.ID}} is on its way.",
		HTML: `<p>Hi {{.Recipient.Name}}, order <b>{{.Data.ID}}</b> is on its way.</p>`,
	},
}

func notifyDirectory() notify.MapDirectory {
	d := notify.MapDirectory{}
	for i := range notifyUsers {
		id := "u" + strconv.Itoa(i)
		d[id] = notify.Recipient{Name: "User " + strconv.Itoa(i), Addresses: map[string]string{notify.Email: id + "@example.com"}}
	}
	return d
}

// mailbox is an in-process SMTP server on loopback that counts the
// messages it accepts and, where a message carries "sent:<ns>;", the
// latency from that time to its acceptance.
type mailbox struct {
	srv  *gosmtp.Server
	addr string
	done chan struct{}

	run atomic.Pointer[mboxRun]
}

// mboxRun is one system's run: what the mailbox counts towards.
type mboxRun struct {
	n       atomic.Int64
	target  int64
	reached chan struct{}
	once    sync.Once
	lat     *Latencies
	bar     *Bar
}

func startMailbox() (*mailbox, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("smtp server: %w", err)
	}
	b := &mailbox{addr: l.Addr().String(), done: make(chan struct{})}
	b.srv = gosmtp.NewServer(b)
	b.srv.Domain = "localhost"
	b.srv.ReadTimeout = 10 * time.Second
	b.srv.WriteTimeout = 10 * time.Second
	b.srv.MaxMessageBytes = 1 << 20
	b.srv.MaxRecipients = 10
	b.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(l)
	}()
	return b, nil
}

// expect arms the count for one run.
func (b *mailbox) expect(n int, lat *Latencies, bar *Bar) *mboxRun {
	run := &mboxRun{target: int64(n), reached: make(chan struct{}), lat: lat, bar: bar}
	b.run.Store(run)
	return run
}

func (b *mailbox) close() {
	_ = b.srv.Close()
	<-b.done
}

// NewSession implements gosmtp.Backend.
func (b *mailbox) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return mboxSession{b}, nil }

type mboxSession struct{ b *mailbox }

func (mboxSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (mboxSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (mboxSession) Reset()                                 {}
func (mboxSession) Logout() error                          { return nil }

var sentMarker = []byte("sent:")

func (s mboxSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	b := s.b.run.Load()
	if b == nil {
		return nil
	}
	if i := bytes.Index(data, sentMarker); i >= 0 && b.lat != nil {
		rest := data[i+len(sentMarker):]
		if j := bytes.IndexByte(rest, ';'); j > 0 {
			if ns, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil && ns > 0 {
				b.lat.Add(time.Since(time.Unix(0, ns)))
			}
		}
	}
	if b.n.Add(1) == b.target {
		b.once.Do(func() { close(b.reached) })
	}
	b.bar.Add(1)
	return nil
}

// runNotify sends n e-mail notifications into the in-process SMTP server
// through plain go-mail (the ceiling: pre-rendered messages, the same
// templates and parts, smtp.DefaultPoolSize reused sessions) and through
// herald's notification pipeline: Notify in Do (100 per transaction) →
// outbox → JetStream → the notifier's decision (directory, preferences,
// suppression, idempotency, a throttle counted but not hit) → workers →
// notify/smtp with the same pool → delivery log, on SQLite.
func runNotify(ctx context.Context, r *runner) error {
	box, err := startMailbox()
	if err != nil {
		return err
	}
	defer box.close()
	n := r.cfg.Notifications
	if r.wants("raw-go-mail") {
		res, err := r.rawGoMail(ctx, box, n)
		if err != nil {
			return fmt.Errorf("go-mail: %w", err)
		}
		r.add(res)
	}
	if r.wants("herald-notify-sqlite") {
		res, err := r.heraldNotify(ctx, box, n)
		if err != nil {
			return fmt.Errorf("herald notify: %w", err)
		}
		r.add(res)
	}
	return nil
}

func (r *runner) rawGoMail(ctx context.Context, box *mailbox, n int) (Result, error) {
	res := Result{Scenario: "notify", System: "raw-go-mail", Baseline: true}
	host, ps, _ := net.SplitHostPort(box.addr)
	port, _ := strconv.Atoi(ps)
	tpl, err := notify.NewTemplates(notifyTemplates)
	if err != nil {
		return res, err
	}
	dir := notifyDirectory()
	bar := r.progress(res.System, n)
	defer bar.Done()
	m := StartMeter()
	msgs := make([]*gomail.Msg, n)
	for i := range msgs {
		to := "u" + strconv.Itoa(i%notifyUsers)
		rend, err := tpl.Render("bench.shipped", notify.Email, "", notify.TemplateData{
			Data:      shipped{ID: "o-" + strconv.Itoa(i), To: to},
			Recipient: notify.Profile{ID: to, Name: dir[to].Name}, Channel: notify.Email, Category: "orders",
		})
		if err != nil {
			return res, err
		}
		msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
		if err := msg.From(notifyFrom); err != nil {
			return res, err
		}
		if err := msg.To(dir[to].Addresses[notify.Email]); err != nil {
			return res, err
		}
		msg.Subject(rend.Subject)
		msg.SetMessageIDWithValue(strings.Trim(smtp.MessageID(fmt.Sprintf("ev-%d/%s/email", i, to), smtp.DefaultMessageIDDomain), "<>"))
		msg.SetDate()
		msg.SetBodyString(gomail.TypeTextPlain, strings.Replace(rend.Text, "sent:0;", "", 1))
		msg.AddAlternativeString(gomail.TypeTextHTML, rend.HTML)
		msgs[i] = msg
	}
	clients := make([]*gomail.Client, smtp.DefaultPoolSize)
	for i := range clients {
		// The same dialogue per message as herald's sender: no NOOP before
		// and no RSET after each message on a healthy session.
		c, err := gomail.NewClient(host, gomail.WithPort(port), gomail.WithTLSPolicy(gomail.NoTLS), gomail.WithTimeout(5*time.Second),
			gomail.WithoutNoop(), gomail.WithoutRset())
		if err != nil {
			return res, err
		}
		if err := c.DialWithContext(ctx); err != nil {
			return res, err
		}
		defer c.Close()
		clients[i] = c
	}
	lat := NewLatencies(n)
	run := box.expect(n, nil, bar)
	jobs := make(chan *gomail.Msg, len(msgs))
	for _, msg := range msgs {
		jobs <- msg
	}
	close(jobs)
	m.Restart()
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients {
		wg.Go(func() {
			for msg := range jobs {
				t0 := time.Now()
				if err := c.Send(msg); err != nil {
					errs <- err
					return
				}
				lat.Add(time.Since(t0))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(slicesOf(errs)...); err != nil {
		return res, err
	}
	if err := waitFor(ctx, run.reached, time.Minute, func() string { return fmt.Sprintf("server received %d of %d", run.n.Load(), n) }); err != nil {
		return res, err
	}
	m.Stop(&res, n)
	lat.Fill(&res, nil)
	res.Note = fmt.Sprintf("pre-rendered, %d sessions, no NOOP/RSET per message (as herald's sender); latency is one Send", len(clients))
	return res, nil
}

func slicesOf(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

var notifyShipped = herald.Notification[shipped]("bench.order.shipped")

func (r *runner) heraldNotify(ctx context.Context, box *mailbox, n int) (Result, error) {
	res := Result{Scenario: "notify", System: "herald-notify-sqlite"}
	br, err := natsjs.Embedded(ctx, append(r.cfg.logOpts(), natsjs.WithEphemeral())...)
	if err != nil {
		return res, err
	}
	defer br.Close()
	st, closeStore, err := r.openStore(ctx, SQLite, "notify")
	if err != nil {
		return res, err
	}
	defer closeStore()
	svc, err := herald.New("shop", herald.WithStore(st), herald.WithBroker(br), herald.WithLogger(r.cfg.Logger),
		herald.WithRelay(herald.RelayConfig{PollInterval: 20 * time.Millisecond}))
	if err != nil {
		return res, err
	}
	defer svc.Close()
	if err := svc.Register(notifyShipped); err != nil {
		return res, err
	}
	tpl, err := notify.NewTemplates(notifyTemplates)
	if err != nil {
		return res, err
	}
	nf, err := notify.NewNotifier(svc, notifyDirectory(), notify.WithRenderer(tpl), notify.WithLogger(r.cfg.Logger),
		notify.WithPollInterval(10*time.Millisecond), notify.WithWorkers(16))
	if err != nil {
		return res, err
	}
	defer nf.Close()
	if err := notify.Route(nf, notifyShipped, notify.Spec[shipped]{
		Category:   "orders",
		Recipients: func(o shipped) []string { return []string{o.To} },
		Channels:   []string{notify.Email},
		Template:   "bench.shipped",
		Throttle:   &notify.Throttle{Window: time.Hour, Limit: 100},
	}); err != nil {
		return res, err
	}
	sender, err := smtp.New(box.addr, notifyFrom, smtp.WithTLSPolicy(smtp.TLSNone), smtp.WithTimeout(5*time.Second), smtp.WithPoolSize(smtp.DefaultPoolSize))
	if err != nil {
		return res, err
	}
	defer sender.Close()
	if err := nf.Senders(notify.Email, sender); err != nil {
		return res, err
	}
	if err := svc.Start(ctx); err != nil {
		return res, err
	}
	if err := nf.Start(ctx); err != nil {
		return res, err
	}
	bar := r.progress(res.System, n)
	defer bar.Done()
	lat := NewLatencies(n)
	run := box.expect(n, lat, bar)
	m := StartMeter()
	for i := 0; i < n; i += 100 {
		if err := svc.Do(ctx, func(tx herald.Tx) error {
			now := time.Now().UnixNano()
			for j := i; j < min(i+100, n); j++ {
				if err := herald.Notify(tx, notifyShipped, shipped{ID: "o-" + strconv.Itoa(j), To: "u" + strconv.Itoa(j%notifyUsers), SentNS: now}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return res, err
		}
	}
	if err := waitFor(ctx, run.reached, 5*time.Minute, func() string { return fmt.Sprintf("server received %d of %d", run.n.Load(), n) }); err != nil {
		return res, err
	}
	m.Stop(&res, n)
	lat.Fill(&res, nil)
	res.Note = fmt.Sprintf("100 per transaction, 16 workers, %d SMTP sessions; latency is Notify → SMTP server", smtp.DefaultPoolSize)
	return res, nil
}
