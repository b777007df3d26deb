package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/heraldhq/herald/internal/childproc"
	"io"
	"log"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
)

const (
	numOrders    = 1000
	numCustomers = 200
	concurrency  = 16
	waitBudget   = 120 * time.Second
)

// services in start order; each is built from ./examples/shop/<name>.
var services = []string{"orders", "shipping", "notifications", "reviews"}

// TestShopEndToEnd runs the shop as it runs in production: an external
// nats-server, the four services as separate processes, each on its own
// database (a PostgreSQL schema when HERALD_TEST_POSTGRES_URL is set, else an
// SQLite file), and notifications mailing a real SMTP server. It places
// 1,000 orders over HTTP, SIGKILLs shipping halfway and restarts it, and
// checks that every order ends up shipped, every customer got exactly one
// confirmation and one shipped mail per order, and reviews knows every
// verified buyer. With node on PATH it also runs the Node.js analytics
// service and checks its round trip: it counted every order, the trending
// events it published reached reviews, and herald catalog lists it.
func TestShopEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: end-to-end test with processes, a broker and 1,000 orders")
	}
	start := time.Now()
	tmp := t.TempDir()

	// Databases first: their cleanups (DROP SCHEMA) then run after the
	// processes are killed (cleanups run last-registered first).
	dbFlags := map[string][]string{}
	for _, name := range services {
		if testdb.PostgresEnabled() {
			dbFlags[name] = []string{"--postgres", testdb.PostgresURL(t)}
		} else {
			dbFlags[name] = []string{"--db", filepath.Join(tmp, name+".db")}
		}
	}
	store := "sqlite"
	if testdb.PostgresEnabled() {
		store = "postgres"
	}

	bins := buildServices(t, filepath.Join(tmp, "bin"))
	t.Logf("built the services in %v", time.Since(start).Round(time.Millisecond))

	nats := natsserver.Start(t, filepath.Join(tmp, "nats"), 0)
	mbox := startSMTP(t)

	procs := map[string]*proc{}
	t.Cleanup(func() {
		for _, name := range services {
			if p := procs[name]; p != nil {
				p.kill()
			}
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range services {
			if p := procs[name]; p != nil {
				t.Logf("--- %s stderr (tail) ---\n%s", name, tail(p.logPath, 6000))
			}
		}
		t.Logf("--- nats-server log (tail) ---\n%s", tailString(nats.Log(), 3000))
	})
	for _, name := range services {
		args := append([]string{"--nats", nats.URL(), "--listen", fmt.Sprintf("127.0.0.1:%d", natsserver.FreePort(t))}, dbFlags[name]...)
		switch name {
		case "shipping":
			args = append(args, "--dispatch-delay", "50ms")
		case "notifications":
			args = append(args, "--smtp", mbox.addr, "--smtp-from", "shop@example.test")
		}
		p := &proc{t: t, name: name, bin: bins[name], args: args, addr: args[3], logPath: filepath.Join(tmp, name+".log")}
		procs[name] = p
		p.start()
	}
	for _, name := range services {
		procs[name].waitHTTP(30 * time.Second)
	}
	t.Logf("%s: nats-server %s and the four services up after %v", store, nats.URL(), time.Since(start).Round(time.Millisecond))
	node := startAnalytics(t, tmp, nats.URL())
	if node != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- analytics (Node.js) output (tail) ---\n%s", tail(node.logPath, 6000))
			}
		})
		t.Logf("analytics (Node.js, pid %d) up after %v", node.p.PID(), time.Since(start).Round(time.Millisecond))
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * concurrency}}
	ordersURL := "http://" + procs["orders"].addr
	reviewsURL := "http://" + procs["reviews"].addr

	// Place the orders; after half of them, SIGKILL shipping and restart it
	// a second later while orders keep coming.
	catalog := slices.Sorted(func(yield func(string) bool) {
		for p := range orders.Catalog {
			if !yield(p) {
				return
			}
		}
	})
	type placed struct {
		id, customer, email string
		products            []string
	}
	var (
		mu       sync.Mutex
		all      []placed
		next     atomic.Int64
		done     atomic.Int64
		failures atomic.Int64
		killOnce sync.Once
		restart  sync.WaitGroup
		killedAt time.Time
	)
	placeStart := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= numOrders {
				c := rand.IntN(numCustomers)
				customer, email := fmt.Sprintf("c%d", c), fmt.Sprintf("c%d@example.test", c)
				type item struct {
					ProductID string `json:"product_id"`
					Quantity  int    `json:"quantity"`
				}
				var items []item
				var products []string
				for _, i := range rand.Perm(len(catalog))[:1+rand.IntN(3)] {
					items = append(items, item{catalog[i], 1 + rand.IntN(3)})
					products = append(products, catalog[i])
				}
				body, _ := json.Marshal(map[string]any{"customer_id": customer, "email": email, "items": items})
				code, resp, err := do(client, http.MethodPost, ordersURL+"/orders", body)
				var o struct {
					ID     string `json:"id"`
					Status string `json:"status"`
				}
				if err == nil && code == http.StatusCreated {
					err = json.Unmarshal(resp, &o)
				}
				if err != nil || code != http.StatusCreated || o.ID == "" || o.Status != orders.StatusConfirmed {
					if failures.Add(1) <= 5 {
						t.Errorf("POST /orders: %d %s (err %v)", code, resp, err)
					}
					continue
				}
				mu.Lock()
				all = append(all, placed{o.ID, customer, email, products})
				mu.Unlock()
				if done.Add(1) >= numOrders/2 {
					killOnce.Do(func() {
						killedAt = time.Now()
						procs["shipping"].kill()
						t.Logf("SIGKILLed shipping after %d orders (%v into placing)", done.Load(), time.Since(placeStart).Round(time.Millisecond))
						restart.Go(func() {
							time.Sleep(time.Second)
							procs["shipping"].start()
							procs["shipping"].waitHTTP(30 * time.Second)
							t.Logf("shipping restarted (%v after the kill)", time.Since(killedAt).Round(time.Millisecond))
						})
					})
				}
			}
		})
	}
	wg.Wait()
	placedIn := time.Since(placeStart)
	t.Logf("placed %d orders in %v (%.0f/s); %d failed", len(all), placedIn.Round(time.Millisecond), float64(len(all))/placedIn.Seconds(), failures.Load())
	restart.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d POST /orders did not return 201 (orders must accept while shipping is down)", n, numOrders)
	}

	// The expectations.
	byID := map[string]placed{}
	pairs := map[[2]string]bool{}
	for _, o := range all {
		byID[o.id] = o
		for _, p := range o.products {
			pairs[[2]string{o.customer, p}] = true
		}
	}
	notShipped := map[string]string{} // order id → last status seen
	for _, o := range all {
		notShipped[o.id] = ""
	}
	unverified := map[[2]string]bool{}
	for p := range pairs {
		unverified[p] = true
	}

	// check compares the mails received with the orders; it returns
	// whether every order has its two mails, and the problems that no wait
	// can fix (duplicates, wrong recipients, unknown orders).
	check := func(final bool) (complete bool, problems []string) {
		confirmed, shipped := map[string]int{}, map[string]int{}
		msgIDs := map[string]int{}
		for _, m := range mbox.messages() {
			msgIDs[m.messageID]++
			var id string
			var counts map[string]int
			if s, ok := strings.CutPrefix(m.subject, "Your order "); ok {
				id, _ = strings.CutSuffix(s, " is confirmed")
				counts = confirmed
			} else if s, ok := strings.CutPrefix(m.subject, "Order "); ok {
				id, _ = strings.CutSuffix(s, " has shipped")
				counts = shipped
			} else if strings.HasSuffix(m.subject, " shipment update(s)") {
				continue // the digest of shipment updates
			} else {
				problems = append(problems, fmt.Sprintf("unexpected mail %q to %v", m.subject, m.rcpt))
				continue
			}
			o, ok := byID[id]
			if !ok {
				problems = append(problems, fmt.Sprintf("mail %q names no order placed", m.subject))
				continue
			}
			counts[id]++
			if len(m.rcpt) != 1 || !strings.EqualFold(m.rcpt[0], o.email) || !strings.EqualFold(m.to, o.email) {
				problems = append(problems, fmt.Sprintf("mail %q went to envelope %v, To %q; want %s", m.subject, m.rcpt, m.to, o.email))
			}
		}
		for id, n := range msgIDs {
			if n > 1 && len(problems) < 20 {
				problems = append(problems, fmt.Sprintf("Message-ID %s received %d times", id, n))
			}
		}
		complete = true
		var missing []string
		for id := range byID {
			for kind, counts := range map[string]map[string]int{"confirmation": confirmed, "shipped": shipped} {
				switch n := counts[id]; {
				case n > 1:
					problems = append(problems, fmt.Sprintf("order %s: %d %s mails, want 1", id, n, kind))
				case n == 0:
					complete = false
					missing = append(missing, kind+" "+id)
				}
			}
		}
		if final && len(missing) > 0 {
			slices.Sort(missing)
			problems = append(problems, fmt.Sprintf("%d mails missing, e.g. %v", len(missing), missing[:min(10, len(missing))]))
		}
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
		}
		return complete, problems
	}

	waitStart := time.Now()
	deadline := waitStart.Add(waitBudget)
	lastProgress := waitStart
	for {
		for name, p := range procs {
			if !p.running() {
				t.Fatalf("%s exited unexpectedly", name)
			}
		}
		// Orders not yet shipped.
		ids := make([]string, 0, len(notShipped))
		for id := range notShipped {
			ids = append(ids, id)
		}
		statuses := parallel(ids, func(id string) string {
			code, body, err := do(client, http.MethodGet, ordersURL+"/orders/"+id, nil)
			if err != nil || code != http.StatusOK {
				return fmt.Sprintf("GET: %d %s %v", code, body, err)
			}
			var o orders.Order
			if err := json.Unmarshal(body, &o); err != nil {
				return err.Error()
			}
			return o.Status
		})
		for i, id := range ids {
			if statuses[i] == orders.StatusShipped {
				delete(notShipped, id)
			} else {
				notShipped[id] = statuses[i]
			}
		}
		// (customer, product) pairs not yet verified.
		ps := make([][2]string, 0, len(unverified))
		for p := range unverified {
			ps = append(ps, p)
		}
		verified := parallel(ps, func(p [2]string) string {
			code, body, err := do(client, http.MethodGet, reviewsURL+"/verified/"+p[0]+"/"+p[1], nil)
			var v struct{ Verified bool }
			if err != nil || code != http.StatusOK || json.Unmarshal(body, &v) != nil {
				return fmt.Sprintf("GET: %d %s %v", code, body, err)
			}
			return fmt.Sprint(v.Verified)
		})
		for i, p := range ps {
			if verified[i] == "true" {
				delete(unverified, p)
			}
		}
		mailsDone, problems := check(false)
		if len(problems) > 0 {
			t.Fatalf("mail problems:\n%s", strings.Join(problems, "\n"))
		}
		if len(notShipped) == 0 && len(unverified) == 0 && mailsDone {
			break
		}
		if time.Since(lastProgress) >= 5*time.Second {
			lastProgress = time.Now()
			t.Logf("%v: %d orders not shipped, %d mails, %d pairs not verified",
				time.Since(waitStart).Round(time.Second), len(notShipped), len(mbox.messages()), len(unverified))
		}
		if time.Now().After(deadline) {
			var sample []string
			for id, st := range notShipped {
				if len(sample) == 10 {
					break
				}
				sample = append(sample, id+": "+st)
			}
			_, problems := check(true)
			t.Fatalf("after %v: %d of %d orders not shipped (e.g. %v), %d of %d (customer, product) pairs not verified, mail problems:\n%s",
				waitBudget, len(notShipped), len(byID), sample, len(unverified), len(pairs), strings.Join(problems, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("all %d orders shipped, %d mails received, %d verified pairs, %v after the last order",
		len(byID), len(mbox.messages()), len(pairs), time.Since(waitStart).Round(time.Millisecond))

	// Let late duplicates (a resent mail, a redelivered event) show up.
	time.Sleep(2 * time.Second)
	if _, problems := check(true); len(problems) > 0 {
		t.Fatalf("after settling, mail problems:\n%s", strings.Join(problems, "\n"))
	}
	if node != nil {
		productsOf := make([][]string, 0, len(all))
		for _, o := range all {
			productsOf = append(productsOf, o.products)
		}
		node.check(t, client, reviewsURL, nats.URL(), productsOf)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// buildServices builds the four service binaries into dir in one go build.
func buildServices(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: %q %v", gomod, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	bins := map[string]string{}
	for _, name := range services {
		args = append(args, "./examples/shop/"+name)
		bins[name] = filepath.Join(dir, name)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bins
}

// proc is one service process, restartable with the same flags.
type proc struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	addr    string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

func (p *proc) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Errorf("%s: already running", p.name)
		return
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Errorf("%s: %v", p.name, err)
		return
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "=== e2e: %s %s at %s\n", p.name, strings.Join(p.args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	childproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		p.t.Errorf("%s: start: %v", p.name, err)
		return
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	p.cmd, p.exit = cmd, exit
}

// kill sends SIGKILL to the process, by PID, and waits for it to exit.
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exit
	p.cmd, p.exit = nil, nil
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exit:
		return false
	default:
		return true
	}
}

// waitHTTP waits until the process answers HTTP on its address.
func (p *proc) waitHTTP(timeout time.Duration) {
	c := &http.Client{Timeout: time.Second}
	var exited bool
	var err error
	if testwait.For(timeout, p.name+" to answer HTTP", func() bool {
		if exited = !p.running(); exited {
			return true
		}
		var resp *http.Response
		if resp, err = c.Get("http://" + p.addr + "/"); err == nil {
			resp.Body.Close()
			return true
		}
		return false
	}) != nil {
		p.t.Errorf("%s does not answer HTTP on %s after %v: %v", p.name, p.addr, timeout, err)
	} else if exited {
		p.t.Errorf("%s exited at start:\n%s", p.name, tail(p.logPath, 4000))
	}
}

func do(c *http.Client, method, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// parallel maps f over xs with concurrency goroutines.
func parallel[T any](xs []T, f func(T) string) []string {
	out := make([]string, len(xs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(xs); i = int(next.Add(1)) - 1 {
				out[i] = f(xs[i])
			}
		})
	}
	wg.Wait()
	return out
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	return tailString(string(b), n)
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// mailbox is an SMTP server that keeps every message it accepts.
type mailbox struct {
	addr string
	mu   sync.Mutex
	msgs []received
	bad  []string
}

type received struct {
	rcpt      []string // envelope recipients
	to        string   // the To header's address
	subject   string
	messageID string
}

func (b *mailbox) messages() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

func startSMTP(t *testing.T) *mailbox {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &mailbox{addr: l.Addr().String()}
	srv := gosmtp.NewServer(b)
	srv.Domain = "localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.bad {
			t.Errorf("SMTP: %s", e)
		}
	})
	return b
}

func (b *mailbox) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &session{b: b}, nil }

type session struct {
	b  *mailbox
	to []string
}

func (s *session) Mail(string, *gosmtp.MailOptions) error { return nil }

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		s.b.mu.Lock()
		s.b.bad = append(s.b.bad, fmt.Sprintf("unparseable message to %v: %v", s.to, err))
		s.b.mu.Unlock()
		return err
	}
	_, _ = io.Copy(io.Discard, m.Body)
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		subject = m.Header.Get("Subject")
	}
	rc := received{rcpt: slices.Clone(s.to), subject: subject, messageID: m.Header.Get("Message-Id")}
	if a, err := mail.ParseAddress(m.Header.Get("To")); err == nil {
		rc.to = a.Address
	} else {
		rc.to = m.Header.Get("To")
	}
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, rc)
	s.b.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.to = nil }
func (s *session) Logout() error { return nil }
