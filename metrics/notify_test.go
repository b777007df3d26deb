package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
	"github.com/heraldhq/herald/notify/template"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type signup struct {
	User string `json:"user"`
}

// TestNotificationReasons: herald_notifications_total counts the
// notifier's deliveries by channel, outcome and reason code, including
// those the decision ended — a recipient without an SMS number counts as
// failed, reason no-address, once per delivery.
func TestNotificationReasons(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	note := herald.Notification[signup]("accounts.signed-up")
	svc, err := herald.New("accounts", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithObserver(m), herald.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	set, err := template.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{notify.Email, notify.SMS} {
		if err := set.Add(template.Spec{Name: "welcome", Channel: ch, Subject: "Welcome", Text: "Hello {{.Recipient.Name}}"}); err != nil {
			t.Fatal(err)
		}
	}
	dir := notify.MapDirectory{"ann": {Name: "Ann", Addresses: map[string]string{notify.Email: "ann@example.com"}}}
	n, err := notify.NewNotifier(svc, dir, notify.WithRenderer(set), notify.WithLogger(quiet), notify.WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	box, _ := devbox.New()
	if err := errors.Join(
		n.Senders(notify.Email, box.Sender(notify.Email)),
		n.Senders(notify.SMS, box.Sender(notify.SMS)),
		notify.Route(n, note, notify.Spec[signup]{Category: "accounts", Template: "welcome", Channels: []string{notify.Email, notify.SMS},
			Recipients: func(s signup) []string { return []string{s.User} }}),
		svc.Start(ctx),
		n.Start(ctx),
	); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	defer n.Close()
	for range 2 {
		if err := svc.Do(ctx, func(tx herald.Tx) error { return herald.Notify(tx, note, signup{User: "ann"}) }); err != nil {
			t.Fatal(err)
		}
	}
	noAddress := map[string]string{"service": "accounts", "channel": "sms", "outcome": "failed", "reason": notify.ReasonNoAddress}
	delivered := map[string]string{"service": "accounts", "channel": "email", "outcome": "delivered", "reason": ""}
	var fams map[string]*dto.MetricFamily
	testwait.UntilReport(t, 20*time.Second, func() bool {
		fams = gather(t, reg)
		return value(fams, "herald_notifications_total", noAddress) >= 2 && value(fams, "herald_notifications_total", delivered) >= 2
	}, func() string {
		return fmt.Sprintf("no-address %v, delivered %v", value(fams, "herald_notifications_total", noAddress),
			value(fams, "herald_notifications_total", delivered))
	})
	if got := value(fams, "herald_notifications_total", noAddress); got != 2 {
		t.Errorf("herald_notifications_total%v = %v, want 2", noAddress, got)
	}
	if got := value(fams, "herald_notifications_total", delivered); got != 2 {
		t.Errorf("herald_notifications_total%v = %v, want 2", delivered, got)
	}
	if got := value(fams, "herald_notifications_total", map[string]string{"service": "accounts"}); got != 4 {
		t.Errorf("herald_notifications_total{service=accounts} = %v, want 4", got)
	}
}

// TestNotificationReasonIsBounded: a reason code outside notify's fixed set
// counts as "other".
func TestNotificationReasonIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{"made-up-1", "made-up-2", notify.ReasonPermanent} {
		m.Observe(context.Background(), herald.Observation{Hop: herald.HopDeliver, Service: "n", Reason: notify.Email,
			Outcome: "failed", Err: &notify.DeliveryError{Reason: code, Err: errors.New("x")}})
	}
	fams := gather(t, reg)
	for reason, want := range map[string]float64{metrics.OtherLabel: 2, notify.ReasonPermanent: 1} {
		if got := value(fams, "herald_notifications_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("reason %q: %v, want %v", reason, got, want)
		}
	}
	if got := len(fams["herald_notifications_total"].GetMetric()); got != 2 {
		t.Errorf("%d series, want 2", got)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fs {
		out[f.GetName()] = f
	}
	return out
}
