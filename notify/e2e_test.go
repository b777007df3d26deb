package notify_test

// End-to-end tests of the notifier with a real SMTP server (emersion/go-smtp
// on loopback) and the real notify/smtp sender: the provider going down and
// coming back under load, and the notifier process being SIGKILLed while
// sends are in flight.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/heraldhq/herald/internal/childproc"
	"io"
	"log"
	"log/slog"
	mrand "math/rand/v2"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/smtp"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
)

// ---------------------------------------------------------------------------
// The in-process SMTP server.

// mailbox is a go-smtp Backend that keeps every message it accepts. While
// down is set it answers MAIL with 421, so in-flight transactions finish and
// new ones are refused (a graceful stop without lost replies).
type mailbox struct {
	delay func() time.Duration // DATA processing time, before the message is kept

	down   atomic.Bool
	inData atomic.Int64
	mu     sync.Mutex
	msgs   [][]byte
}

func (b *mailbox) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &mboxSession{b: b}, nil }

func (b *mailbox) messages() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

func (b *mailbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

type mboxSession struct{ b *mailbox }

func (s *mboxSession) Mail(string, *gosmtp.MailOptions) error {
	if s.b.down.Load() {
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
	}
	return nil
}

func (s *mboxSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }

func (s *mboxSession) Data(r io.Reader) error {
	s.b.inData.Add(1)
	defer s.b.inData.Add(-1)
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.b.delay != nil {
		time.Sleep(s.b.delay())
	}
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, data)
	s.b.mu.Unlock()
	return nil
}

func (s *mboxSession) Reset()        {}
func (s *mboxSession) Logout() error { return nil }

// smtpServer runs a mailbox on loopback and can stop and start again on the
// same address.
type smtpServer struct {
	t    testing.TB
	box  *mailbox
	addr string

	mu   sync.Mutex
	srv  *gosmtp.Server
	l    net.Listener
	done chan struct{}
}

func startSMTP(t testing.TB, box *mailbox) *smtpServer {
	t.Helper()
	s := &smtpServer{t: t, box: box, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *smtpServer) start() {
	s.t.Helper()
	var l net.Listener
	var err error
	// The port may take a moment to be free again.
	_ = testwait.For(time.Second, "the port to be free", func() bool {
		l, err = net.Listen("tcp", s.addr)
		return err == nil
	})
	if err != nil {
		s.t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.addr = l.Addr().String()
	srv := gosmtp.NewServer(s.box)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 10
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	s.box.down.Store(false)
	s.mu.Lock()
	s.srv, s.l, s.done = srv, l, done
	s.mu.Unlock()
}

// stop refuses new transactions, lets the ones in DATA answer, then closes
// the listener and every connection.
func (s *smtpServer) stop() {
	s.box.down.Store(true)
	_ = testwait.For(5*time.Second, "the transactions in DATA to answer", func() bool { return s.box.inData.Load() == 0 })
	time.Sleep(50 * time.Millisecond) // the 250 of the last DATA is on the wire
	s.kill()
}

// kill closes the listener and every connection at once.
func (s *smtpServer) kill() {
	s.mu.Lock()
	srv, l, done := s.srv, s.l, s.done
	s.srv, s.l, s.done = nil, nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	_ = l.Close()
	<-done
}

// ---------------------------------------------------------------------------
// Parsing what arrived.

type parsedMail struct {
	Header    mail.Header
	MessageID string
	From, To  string
	Subject   string
	MediaType string
	Parts     []string
	Text      string
	HTML      string
}

func parseMail(t testing.TB, data []byte) parsedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("ReadMessage: %v\n%s", err, data)
	}
	p := parsedMail{Header: msg.Header, MessageID: msg.Header.Get("Message-ID"),
		From: msg.Header.Get("From"), To: msg.Header.Get("To")}
	dec := mime.WordDecoder{}
	if p.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("subject: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	p.MediaType = mt
	if !strings.HasPrefix(mt, "multipart/") {
		p.Text = decodeBody(t, msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
		p.Parts = []string{mt}
		return p
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("NextPart: %v", err)
		}
		pmt, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type: %v", err)
		}
		body := decodeBody(t, part.Header.Get("Content-Transfer-Encoding"), part)
		p.Parts = append(p.Parts, pmt)
		switch pmt {
		case "text/plain":
			p.Text = body
		case "text/html":
			p.HTML = body
		}
	}
	return p
}

func decodeBody(t testing.TB, cte string, r io.Reader) string {
	t.Helper()
	switch strings.ToLower(cte) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return string(b)
}

// ---------------------------------------------------------------------------
// The service and its notifier.

// e2eOrder is the payload: Note is rendered into the HTML template and
// carries markup that must arrive escaped.
type e2eOrder struct {
	ID   string `json:"id"`
	To   string `json:"to"`
	Note string `json:"note"`
}

var e2eShipped = herald.Notification[e2eOrder]("e2e.order.shipped")

const (
	e2eFrom      = "Herald <noreply@example.com>"
	e2eMalicious = `<script>alert(1)</script>`
)

var e2eTemplates = map[string]notify.Template{
	"e2e.shipped": {
		Subject: "Order {{.Data.ID}} shipped",
		Text:    "Hi {{.Recipient.Name}}, order {{.Data.ID}} is on its way. Note: {{.Data.Note}}",
		HTML:    `<p>Hi {{.Recipient.Name}}, order <b>{{.Data.ID}}</b> is on its way.</p><p>Note: {{.Data.Note}}</p>`,
	},
}

func e2eDirectory(users int) notify.MapDirectory {
	d := notify.MapDirectory{}
	for i := range users {
		id := fmt.Sprintf("u%d", i)
		d[id] = notify.Recipient{Name: "User " + strconv.Itoa(i), Addresses: map[string]string{notify.Email: id + "@example.com"}}
	}
	return d
}

func e2eLogger() *slog.Logger {
	if os.Getenv("NOTIFY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func e2ePrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("e%x", b)
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// e2eStack is a service "shop" with its own table, emitting e2eShipped, and
// a notifier sending it by e-mail through the real SMTP sender.
type e2eStack struct {
	svc    *herald.Service
	n      *notify.Notifier
	sender *smtp.Sender
}

type stackConfig struct {
	st       *store.Store
	b        *natsjs.Broker
	smtpAddr string
	users    int
	relay    herald.RelayConfig
	opts     []notify.Option
	smtpOpts []smtp.Option
	throttle *notify.Throttle
}

func newStack(ctx context.Context, t testing.TB, c stackConfig) *e2eStack {
	t.Helper()
	_, err := c.st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS e2e_orders (id TEXT PRIMARY KEY, recipient TEXT NOT NULL)`)
	check(t, err)
	svc, err := herald.New("shop", herald.WithStore(c.st), herald.WithBroker(c.b), herald.WithLogger(e2eLogger()),
		herald.WithRelay(c.relay))
	check(t, err)
	check(t, svc.Register(e2eShipped))
	tpl, err := notify.NewTemplates(e2eTemplates)
	check(t, err)
	opts := append([]notify.Option{notify.WithRenderer(tpl), notify.WithLogger(e2eLogger()),
		notify.WithPollInterval(10 * time.Millisecond)}, c.opts...)
	n, err := notify.NewNotifier(svc, e2eDirectory(c.users), opts...)
	check(t, err)
	check(t, notify.Route(n, e2eShipped, notify.Spec[e2eOrder]{
		Category:   "orders",
		Recipients: func(o e2eOrder) []string { return []string{o.To} },
		Channels:   []string{notify.Email},
		Template:   "e2e.shipped",
		Throttle:   c.throttle,
	}, herald.AckWait(2*time.Second)))
	sopts := append([]smtp.Option{smtp.WithTLSPolicy(smtp.TLSNone), smtp.WithTimeout(2 * time.Second)}, c.smtpOpts...)
	sender, err := smtp.New(c.smtpAddr, e2eFrom, sopts...)
	check(t, err)
	check(t, n.Senders(notify.Email, sender))
	check(t, svc.Start(ctx))
	check(t, n.Start(ctx))
	return &e2eStack{svc: svc, n: n, sender: sender}
}

func (s *e2eStack) close() {
	s.n.Close()
	s.svc.Close()
	s.sender.Close()
}

// record inserts one order and notifies its recipient, in one Do.
func (s *e2eStack) record(ctx context.Context, o e2eOrder) error {
	return s.svc.Do(ctx, func(tx herald.Tx) error {
		if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO e2e_orders (id, recipient) VALUES (?, ?)`, o.ID, o.To); err != nil {
			return err
		}
		return herald.Notify(tx, e2eShipped, o)
	})
}

// allSent reports whether the log holds want deliveries, all sent.
func (s *e2eStack) allSent(ctx context.Context, want int) (bool, string, error) {
	ds, err := s.n.Deliveries(ctx, notify.DeliveryFilter{Limit: 100000})
	if err != nil {
		return false, "", err
	}
	states := map[notify.State]int{}
	for _, d := range ds {
		states[d.State]++
	}
	return len(ds) == want && states[notify.Sent] == want, fmt.Sprintf("%d rows, states %v", len(ds), states), nil
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// ---------------------------------------------------------------------------
// TestSMTPProviderDown

// TestSMTPProviderDown records notifications at a steady 200/s for 6 s while
// the SMTP server is stopped for the middle 3 s and started again on the
// same port. The business flow does not notice (no Do error, Do latency of
// the same order while the provider is down), and once it is back every
// notification arrives exactly once, as a well-formed multipart e-mail with
// its HTML escaped.
func TestSMTPProviderDown(t *testing.T) {
	ctx := context.Background()
	box := &mailbox{}
	srv := startSMTP(t, box)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithPrefix(e2ePrefix()), natsjs.WithLogger(e2eLogger()))
	check(t, err)
	t.Cleanup(func() { b.Close() })
	const users = 50
	s := newStack(ctx, t, stackConfig{
		st: testdb.SQLite(t), b: b, smtpAddr: srv.addr, users: users,
		relay: herald.RelayConfig{PollInterval: 20 * time.Millisecond},
		opts: []notify.Option{
			notify.WithSendRetry(notify.Retry{MaxAttempts: 1000, BaseDelay: 50 * time.Millisecond, MaxDelay: 400 * time.Millisecond, MaxAge: 5 * time.Minute}),
			notify.WithBreaker(notify.Breaker{Failures: 5, OpenFor: 300 * time.Millisecond}),
			notify.WithSendTimeout(2 * time.Second),
		},
	})
	t.Cleanup(s.close)

	const (
		rate     = 200
		upFirst  = 1500 * time.Millisecond
		downFor  = 3 * time.Second
		duration = 6 * time.Second
	)
	type sample struct {
		d    time.Duration
		down bool
	}
	var (
		samples []sample
		doErrs  []error
		phase   atomic.Bool // true while the server is down
	)
	stopDone := make(chan struct{})
	go func() {
		defer close(stopDone)
		time.Sleep(upFirst)
		phase.Store(true)
		srv.stop()
		time.Sleep(downFor)
		srv.start()
		phase.Store(false)
	}()
	tick := time.NewTicker(time.Second / rate)
	start := time.Now()
	events := 0
	for time.Since(start) < duration {
		<-tick.C
		down := phase.Load()
		o := e2eOrder{ID: fmt.Sprintf("o-%d", events), To: fmt.Sprintf("u%d", events%users), Note: e2eMalicious + ` & "quotes"`}
		t0 := time.Now()
		err := s.record(ctx, o)
		d := time.Since(t0)
		if err != nil {
			doErrs = append(doErrs, err)
			continue
		}
		// A Do that overlapped a phase change counts as down: that is the
		// harsher comparison.
		samples = append(samples, sample{d, down || phase.Load()})
		events++
	}
	tick.Stop()
	<-stopDone
	elapsed := time.Since(start)

	var up, down []time.Duration
	for _, s := range samples {
		if s.down {
			down = append(down, s.d)
		} else {
			up = append(up, s.d)
		}
	}
	t.Logf("recorded %d events in %v (%.0f/s); Do latency up (n=%d): p50 %v p99 %v max %v; down (n=%d): p50 %v p99 %v max %v",
		events, elapsed.Round(time.Millisecond), float64(events)/elapsed.Seconds(),
		len(up), quantile(up, .5), quantile(up, .99), quantile(up, 1),
		len(down), quantile(down, .5), quantile(down, .99), quantile(down, 1))
	if len(doErrs) > 0 {
		t.Errorf("%d Do errors, first: %v", len(doErrs), doErrs[0])
	}
	if len(up) < rate || len(down) < rate {
		t.Fatalf("too few samples: up %d, down %d", len(up), len(down))
	}
	// The latencies above are reported, not asserted (speed is for
	// benchmarks); a Do that waited for the SMTP server would have failed or
	// hung while it was down.
	if maxDown := quantile(down, 1); maxDown > 5*time.Second {
		t.Errorf("a Do took %v while the provider was down: it waited for the provider", maxDown)
	}

	// Everything arrives once the server is back.
	var state string
	testwait.UntilReport(t, 20*time.Second, func() bool {
		ok, st, err := s.allSent(ctx, events)
		check(t, err)
		state = st
		return ok && box.count() >= events
	}, func() string {
		return fmt.Sprintf("not all delivered: %s; server has %d messages of %d", state, box.count(), events)
	})
	time.Sleep(100 * time.Millisecond) // a late duplicate would land now

	ds, err := s.n.Deliveries(ctx, notify.DeliveryFilter{Limit: 100000})
	check(t, err)
	retried := 0
	for _, d := range ds {
		if d.Attempts > 1 {
			retried++
		}
	}
	t.Logf("%d of %d deliveries needed more than one attempt (the server was down)", retried, len(ds))
	if retried == 0 {
		t.Errorf("no delivery was retried: the server was never seen down")
	}

	msgs := box.messages()
	perID := map[string]int{}
	var parsed []parsedMail
	for _, m := range msgs {
		p := parseMail(t, m)
		perID[p.MessageID]++
		parsed = append(parsed, p)
	}
	if len(msgs) != events {
		t.Errorf("server received %d messages, want %d (one per event)", len(msgs), events)
	}
	for id, c := range perID {
		if c != 1 {
			t.Errorf("Message-ID %s arrived %d times", id, c)
		}
	}
	for _, d := range ds {
		id := smtp.MessageID(d.Key, smtp.DefaultMessageIDDomain)
		if perID[id] != 1 {
			t.Errorf("delivery %s (Message-ID %s) arrived %d times", d.Key, id, perID[id])
		}
		if d.ProviderID != id || d.Provider != smtp.DefaultName {
			t.Errorf("delivery %s: provider %q id %q, want %q %q", d.Key, d.Provider, d.ProviderID, smtp.DefaultName, id)
		}
	}

	// One message in detail: the first event's.
	var first notify.Delivery
	for _, d := range ds {
		if d.Recipient == "u0" {
			first = d
			break
		}
	}
	wantID := smtp.MessageID(first.Key, smtp.DefaultMessageIDDomain)
	var p *parsedMail
	for i := range parsed {
		if parsed[i].MessageID == wantID {
			p = &parsed[i]
		}
	}
	if p == nil {
		t.Fatalf("no message with Message-ID %s", wantID)
	}
	if from, err := mail.ParseAddress(p.From); err != nil || from.Address != "noreply@example.com" || from.Name != "Herald" {
		t.Errorf("From %q (%v)", p.From, err)
	}
	if to, err := mail.ParseAddress(p.To); err != nil || to.Address != "u0@example.com" {
		t.Errorf("To %q (%v)", p.To, err)
	}
	if !regexp.MustCompile(`^Order o-\d+ shipped$`).MatchString(p.Subject) {
		t.Errorf("Subject %q", p.Subject)
	}
	if p.Header.Get("Date") == "" {
		t.Errorf("no Date header")
	}
	if p.MediaType != "multipart/alternative" || !slices.Equal(p.Parts, []string{"text/plain", "text/html"}) {
		t.Errorf("MIME %s with parts %v, want multipart/alternative with text/plain, text/html", p.MediaType, p.Parts)
	}
	if !strings.Contains(p.Text, "Hi User 0, order o-") || !strings.Contains(p.Text, "Note: "+e2eMalicious) {
		t.Errorf("text part %q", p.Text)
	}
	if strings.Contains(p.HTML, "<script>") || !strings.Contains(p.HTML, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;") ||
		!strings.Contains(p.HTML, "<p>Hi User 0, order <b>o-") {
		t.Errorf("HTML part not escaped as expected: %q", p.HTML)
	}
}

// ---------------------------------------------------------------------------
// TestNotifierKilledMidSend

// The child process of TestNotifierKilledMidSend reads its set-up from
// these variables.
const (
	envRole   = "HERALD_NOTIFY_E2E_ROLE"
	envDB     = "HERALD_NOTIFY_E2E_DB"
	envNATS   = "HERALD_NOTIFY_E2E_NATS"
	envPrefix = "HERALD_NOTIFY_E2E_PREFIX"
	envSMTP   = "HERALD_NOTIFY_E2E_SMTP"
	envRecord = "HERALD_NOTIFY_E2E_RECORD" // how many notifications to record first
	envTotal  = "HERALD_NOTIFY_E2E_TOTAL"  // exit once this many are sent
)

// killWorkers is the child notifier's worker count, and its SMTP pool: at
// most this many sends are in flight when it is killed.
const killWorkers = 4

// TestNotifierRole is the child process of TestNotifierKilledMidSend: a
// service and its notifier on an SQLite file and the parent's broker. It
// records HERALD_NOTIFY_E2E_RECORD notifications, then runs until every one
// of HERALD_NOTIFY_E2E_TOTAL is sent, and exits. Without the variables it
// does nothing.
func TestNotifierRole(t *testing.T) {
	if os.Getenv(envRole) != "notifier" {
		return
	}
	ctx := context.Background()
	record, _ := strconv.Atoi(os.Getenv(envRecord))
	total, _ := strconv.Atoi(os.Getenv(envTotal))
	st, err := sqlite.Open(ctx, os.Getenv(envDB))
	check(t, err)
	defer st.Close()
	b, err := natsjs.Connect(ctx, []string{os.Getenv(envNATS)}, natsjs.WithPrefix(os.Getenv(envPrefix)), natsjs.WithLogger(e2eLogger()))
	check(t, err)
	defer b.Close()
	s := newStack(ctx, t, stackConfig{
		st: st, b: b, smtpAddr: os.Getenv(envSMTP), users: 20,
		relay: herald.RelayConfig{PollInterval: 20 * time.Millisecond, LeaseTTL: time.Second},
		opts: []notify.Option{
			notify.WithWorkers(killWorkers),
			notify.WithSendTimeout(2 * time.Second),
			notify.WithLease(3 * time.Second), // a dead instance's claims come back after 3s
			notify.WithSendRetry(notify.Retry{MaxAttempts: 100, BaseDelay: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond, MaxAge: 5 * time.Minute}),
			notify.WithBreaker(notify.Breaker{Failures: 1000}),
		},
		smtpOpts: []smtp.Option{smtp.WithPoolSize(killWorkers)},
	})
	defer s.close()
	for i := 0; i < record; i += 50 {
		err := s.svc.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+50, record); j++ {
				o := e2eOrder{ID: fmt.Sprintf("k-%d", j), To: fmt.Sprintf("u%d", j%20), Note: "n"}
				if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO e2e_orders (id, recipient) VALUES (?, ?)`, o.ID, o.To); err != nil {
					return err
				}
				if err := herald.Notify(tx, e2eShipped, o); err != nil {
					return err
				}
			}
			return nil
		})
		check(t, err)
	}
	fmt.Println("RECORDED", record)
	var state string
	testwait.UntilReport(t, 40*time.Second, func() bool {
		ok, st, err := s.allSent(ctx, total)
		check(t, err)
		state = st
		return ok
	}, func() string { return "child: not all sent: " + state })
	fmt.Println("ALL-SENT", state)
}

// child is a running TestNotifierRole process.
type child struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestNotifierRole$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	childproc.DieWithParent(cmd)
	check(t, cmd.Start())
	c := &child{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		c.done <- nil
	})
	return c
}

// TestNotifierKilledMidSend runs the service and notifier in a child process
// against a slow SMTP server (20–50 ms per DATA), SIGKILLs it after about a
// third of the mails arrived, and starts it again on the same database and
// broker. Every notification arrives; the duplicates are exactly the sends
// the SMTP server accepted but the dead notifier had not recorded as sent
// (read from its database right after the kill), a few — usually at most
// the worker count — and a duplicate carries the same Message-ID as its
// original, so a mail client can drop it.
func TestNotifierKilledMidSend(t *testing.T) {
	if os.Getenv(envRole) != "" {
		return // the child runs only TestNotifierRole
	}
	ctx := context.Background()
	dir := t.TempDir()
	prefix := e2ePrefix()
	b, err := natsjs.Embedded(ctx, natsjs.WithDataDir(filepath.Join(dir, "nats")), natsjs.WithListen("127.0.0.1:0"),
		natsjs.WithPrefix(prefix), natsjs.WithLogger(e2eLogger()))
	check(t, err)
	t.Cleanup(func() { b.Close() })
	box := &mailbox{delay: func() time.Duration { return 20*time.Millisecond + mrand.N(30*time.Millisecond) }}
	srv := startSMTP(t, box)

	const total, killAt = 300, 100
	env := []string{envRole + "=notifier", envDB + "=" + filepath.Join(dir, "shop.db"), envNATS + "=" + b.URL(),
		envPrefix + "=" + prefix, envSMTP + "=" + srv.addr, envTotal + "=" + strconv.Itoa(total)}

	first := startChild(t, append(env, envRecord+"="+strconv.Itoa(total))...)
	testwait.UntilReport(t, 20*time.Second, func() bool {
		select {
		case err := <-first.done:
			t.Fatalf("child exited before the kill (%v):\n%s", err, first.out)
		default:
		}
		return box.count() >= killAt
	}, func() string { return fmt.Sprintf("only %d mails:\n%s", box.count(), first.out) })
	check(t, first.cmd.Process.Signal(os.Kill)) // SIGKILL
	<-first.done
	first.done <- nil
	atKill, inData := box.count(), box.inData.Load()
	// The DATA in progress end, and the server keeps those messages.
	testwait.Until(t, time.Minute, "the DATA in progress to end", func() bool { return box.inData.Load() == 0 })
	time.Sleep(20 * time.Millisecond)
	// Accepted but not recorded as sent: the sends the restarted notifier
	// must repeat, and the only ones it may repeat.
	unrecorded := acceptedUnrecorded(t, filepath.Join(dir, "shop.db"), box.messages())
	t.Logf("killed the notifier (pid %d) after %d mails, %d DATA in progress; %d mails accepted but not recorded as sent",
		first.cmd.Process.Pid, atKill, inData, len(unrecorded))

	second := startChild(t, env...) // records nothing, sends the rest
	select {
	case err := <-second.done:
		second.done <- nil
		if err != nil {
			t.Fatalf("restarted child: %v\n%s", err, second.out)
		}
	case <-time.After(25 * time.Second):
		t.Fatalf("restarted child did not finish in 25s; server has %d mails:\n%s", box.count(), second.out)
	}
	if !strings.Contains(second.out.String(), "ALL-SENT") {
		t.Fatalf("restarted child did not report ALL-SENT:\n%s", second.out)
	}
	time.Sleep(50 * time.Millisecond)

	msgs := box.messages()
	perID := map[string]int{}
	idsOf := map[string]map[string]bool{} // recipient and subject → Message-IDs
	msgID := regexp.MustCompile(`^<[0-9a-f]{64}@` + smtp.DefaultMessageIDDomain + `>$`)
	for _, m := range msgs {
		p := parseMail(t, m)
		if !msgID.MatchString(p.MessageID) {
			t.Errorf("Message-ID %q is not derived from the key", p.MessageID)
		}
		perID[p.MessageID]++
		k := p.To + " " + p.Subject
		if idsOf[k] == nil {
			idsOf[k] = map[string]bool{}
		}
		idsOf[k][p.MessageID] = true
	}
	dups := 0
	for id, c := range perID {
		if c > 1 {
			dups += c - 1
			t.Logf("duplicate: %s arrived %d times", id, c)
		}
	}
	t.Logf("%d mails for %d notifications: %d distinct, %d duplicates (workers: %d)",
		len(msgs), total, len(perID), dups, killWorkers)
	if len(perID) != total || len(idsOf) != total {
		t.Errorf("%d distinct Message-IDs, %d distinct recipient/subject pairs, want %d each", len(perID), len(idsOf), total)
	}
	for k, ids := range idsOf {
		if len(ids) != 1 {
			t.Errorf("%s arrived with %d different Message-IDs: a duplicate a client cannot fold", k, len(ids))
		}
	}
	var dupIDs []string
	for id, c := range perID {
		if c > 1 {
			dupIDs = append(dupIDs, id)
		}
	}
	slices.Sort(dupIDs)
	if !slices.Equal(dupIDs, unrecorded) {
		t.Errorf("repeated Message-IDs %v, want exactly the accepted but unrecorded ones %v", dupIDs, unrecorded)
	}
	// In flight at the kill is, per worker, at most one send in DATA and one
	// accepted send whose outcome waits for the next round's group commit: a
	// worker takes its next row without waiting for that commit, and the
	// rows claimed and not yet recorded are at most twice the workers. So the
	// duplicates are bounded by twice the workers; the worker count itself is
	// the usual value, and exceeding it is logged, not failed.
	if dups > 2*killWorkers {
		t.Errorf("%d duplicates > 2 × %d workers: more than the sends in flight at the kill were repeated", dups, killWorkers)
	} else if dups > killWorkers {
		t.Logf("%d duplicates > %d workers: accepted sends were waiting for the round's commit besides those in DATA", dups, killWorkers)
	}
}

// acceptedUnrecorded returns, sorted, the Message-IDs of msgs whose delivery
// row in the SQLite file at path is not recorded as sent.
func acceptedUnrecorded(t *testing.T, path string, msgs [][]byte) []string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, path)
	check(t, err)
	defer st.Close()
	rows, err := st.DB().QueryContext(ctx, `SELECT idem_key, state FROM herald_notify_deliveries`)
	check(t, err)
	defer rows.Close()
	state := map[string]string{}
	for rows.Next() {
		var key, st string
		check(t, rows.Scan(&key, &st))
		state[smtp.MessageID(key, smtp.DefaultMessageIDDomain)] = st
	}
	check(t, rows.Err())
	var out []string
	for _, m := range msgs {
		id := parseMail(t, m).MessageID
		if s := state[id]; s != string(notify.Sent) && s != string(notify.Delivered) && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
