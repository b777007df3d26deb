// Notifications quickstart: one service on the embedded defaults (a SQLite
// file and an in-process NATS JetStream) records a user's sign-up and, in
// the same transaction, a notification event. Its notifier turns the event
// into a welcome e-mail in the development mailbox (notify/devbox) and a
// line on a log channel of this program's own, through one template per
// channel, minding each user's preferences: alice gets both, bob turned
// e-mail off, carol has no e-mail address.
//
//	go run ./examples/notifications
package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
	"github.com/heraldhq/herald/notify/template"
	"github.com/heraldhq/herald/store/sqlite"
)

// SignedUp is the notification event: a versioned contract, like an
// integration event, but its audience is people.
type SignedUp struct {
	UserID string `json:"user_id"`
	Plan   string `json:"plan"`
}

var signedUp = herald.Notification[SignedUp]("accounts.signed-up", herald.Version(1))

// Log is this program's own channel: a line on its output per message.
// Any name works as a channel; a Sender serves it.
const Log = "log"

// users are the accounts the program signs up; carol has no e-mail address.
var users = []struct{ id, name, email, plan string }{
	{"alice", "Alice", "alice@example.com", "pro"},
	{"bob", "Bob", "bob@example.com", "free"},
	{"carol", "Carol", "", "free"},
}

// Templates: one per channel, text/template (and html/template for HTML),
// with the event as .Data and the recipient as .Recipient.
var templates = []template.Spec{
	{Name: "welcome", Channel: notify.Email,
		Subject: `Welcome to herald, {{.Recipient.Name}}`,
		Text:    "Hello {{.Recipient.Name}},\n\nyour {{.Data.Plan}} account is ready.\n"},
	{Name: "welcome", Channel: Log, Text: `{{.Recipient.ID}} signed up ({{.Data.Plan}})`},
}

func main() {
	dir, err := os.MkdirTemp("", "herald-notifications-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	box, err := devbox.New() // the development mailbox; smtp.New for real e-mail
	if err != nil {
		log.Fatal(err)
	}
	if err := run(ctx, dir, box, os.Stdout, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

// run signs up the users, waits until every delivery has ended, and prints
// the delivery log and the mailbox to out; warnings go to logs.
func run(ctx context.Context, dir string, box *devbox.Box, out, logs io.Writer) error {
	out = &syncWriter{w: out} // the log channel's sender writes from the notifier's workers
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := natsjs.Embedded(ctx, natsjs.WithDataDir(filepath.Join(dir, "nats")), natsjs.WithLogger(logger))
	if err != nil {
		return err
	}
	defer b.Close()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "accounts.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)`); err != nil {
		return err
	}
	accounts, err := herald.New("accounts", herald.WithStore(db), herald.WithBroker(b), herald.WithLogger(logger))
	if err != nil {
		return err
	}
	defer accounts.Close()

	// The notifier: where recipients are (a Directory), how messages look
	// (a template set), which providers send them (Senders), and which
	// events go to whom on which channels (Route).
	set, err := template.NewSet()
	if err != nil {
		return err
	}
	for _, t := range templates {
		if err := set.Add(t); err != nil {
			return err
		}
	}
	directory := notify.DirectoryFunc(func(ctx context.Context, id string) (notify.Recipient, error) {
		var name, email string
		err := db.DB().QueryRowContext(ctx, `SELECT name, email FROM users WHERE id = ?`, id).Scan(&name, &email)
		if errors.Is(err, sql.ErrNoRows) {
			return notify.Recipient{}, fmt.Errorf("%w: %s", notify.ErrUnknownRecipient, id)
		}
		if err != nil {
			return notify.Recipient{}, err
		}
		return notify.Recipient{ID: id, Name: name, Addresses: map[string]string{notify.Email: email, Log: id}}, nil
	})
	n, err := notify.NewNotifier(accounts, directory, notify.WithRenderer(set), notify.WithLogger(logger))
	if err != nil {
		return err
	}
	defer n.Close()
	logSender := notify.FuncSender(Log, "stdout", func(ctx context.Context, m notify.Message) (notify.Receipt, error) {
		_, err := fmt.Fprintf(out, "log: %s\n", m.Text)
		return notify.Receipt{}, err
	})
	err = errors.Join(
		n.Senders(notify.Email, box.Sender(notify.Email)),
		n.Senders(Log, logSender),
		notify.Route(n, signedUp, notify.Spec[SignedUp]{
			Category:   "accounts", // what preferences and throttles are about
			Template:   "welcome",
			Channels:   []string{notify.Email, Log},
			Recipients: func(e SignedUp) []string { return []string{e.UserID} },
		}),
	)
	if err != nil {
		return err
	}
	// A preference: bob wants no account e-mails (his log line still goes).
	if err := n.SetPreference(ctx, notify.Preference{Recipient: "bob", Category: "accounts", Channel: notify.Email, Enabled: false}); err != nil {
		return err
	}
	if err := accounts.Start(ctx); err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}

	// The business flow: the user's row and the notification event commit
	// together, or neither does. Sending happens later, elsewhere, and
	// never fails this transaction.
	for _, u := range users {
		err := accounts.Do(ctx, func(tx herald.Tx) error {
			if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO users (id, name, email) VALUES (?, ?, ?)`, u.id, u.name, u.email); err != nil {
				return err
			}
			return herald.Notify(tx, signedUp, SignedUp{UserID: u.id, Plan: u.plan})
		})
		if err != nil {
			return err
		}
	}

	ds, err := waitEnded(ctx, n, len(users)*2)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "delivery log:")
	for _, d := range ds {
		line := fmt.Sprintf("  %-6s %-6s %s", d.Recipient, d.Channel, d.State)
		if d.Reason != "" {
			line += " (" + d.Reason + ")"
		}
		fmt.Fprintln(out, line)
	}
	mail := box.List(devbox.Filter{Channel: notify.Email})
	fmt.Fprintf(out, "mailbox: %d message(s)\n", len(mail))
	for _, e := range mail {
		fmt.Fprintf(out, "  to %s: %q\n", e.Message.To, e.Message.Subject)
	}
	return nil
}

// waitEnded polls the delivery log until it holds want deliveries, none of
// them still to be sent, and returns them sorted by recipient and channel.
func waitEnded(ctx context.Context, n *notify.Notifier, want int) ([]notify.Delivery, error) {
	for {
		ds, err := n.Deliveries(ctx, notify.DeliveryFilter{})
		if err != nil {
			return nil, err
		}
		pending := slices.ContainsFunc(ds, func(d notify.Delivery) bool {
			return d.State == notify.Queued || d.State == notify.Deferred || d.State == notify.Sending
		})
		if len(ds) == want && !pending {
			slices.SortFunc(ds, func(a, b notify.Delivery) int {
				return cmp.Or(cmp.Compare(a.Recipient, b.Recipient), cmp.Compare(a.Channel, b.Channel))
			})
			return ds, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d deliveries, want %d ended: %w", len(ds), want, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// syncWriter serializes writes.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
