// Package notifications is the shop's notification service. It listens to
// the other services' integration events, remembers how to reach each
// customer, and emits notification events; its notifier turns them into
// e-mails and pushes: a confirmation e-mail per order, a digest of shipment
// updates, and an e-mail plus a push when the parcel leaves — with
// preferences, quiet hours and retries, never slowing the other services.
package notifications

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/contract"
	"github.com/heraldhq/herald/examples/shop/service/httpjson"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/template"
	"github.com/heraldhq/herald/store"
)

// The notification events of the shop, private to this service.
type (
	orderMail struct {
		CustomerID string          `json:"customer_id"`
		OrderID    string          `json:"order_id"`
		TotalCts   int             `json:"total_cents"`
		Items      []contract.Item `json:"items"`
	}
	shipmentUpdate struct {
		CustomerID string `json:"customer_id"`
		OrderID    string `json:"order_id"`
		ETA        string `json:"eta"`
	}
	shippedMail struct {
		CustomerID string `json:"customer_id"`
		OrderID    string `json:"order_id"`
		Carrier    string `json:"carrier"`
		Tracking   string `json:"tracking"`
	}
)

var (
	orderConfirmedNote = herald.Notification[orderMail]("shop.notify.order-confirmed", herald.Version(1))
	shipmentNote       = herald.Notification[shipmentUpdate]("shop.notify.shipment-update", herald.Version(1))
	shippedNote        = herald.Notification[shippedMail]("shop.notify.order-shipped", herald.Version(1))
)

// Templates of the shop's messages (English, with a German confirmation).
var templates = []template.Spec{
	{Name: "order.confirmed", Channel: notify.Email, Locale: "en",
		Subject: `Your order {{.Data.OrderID}} is confirmed`,
		HTML: `<p>Hello {{.Recipient.Name}},</p><p>thank you for your order <b>{{.Data.OrderID}}</b>:</p>
<ul>{{range .Data.Items}}<li>{{.Quantity}} × {{.ProductID}} at {{money .PriceCts}}</li>{{end}}</ul>
<p>Total: <b>{{money .Data.TotalCts}}</b></p>`},
	{Name: "order.confirmed", Channel: notify.Email, Locale: "de",
		Subject: `Ihre Bestellung {{.Data.OrderID}} ist bestätigt`,
		HTML:    `<p>Hallo {{.Recipient.Name}},</p><p>danke für Ihre Bestellung <b>{{.Data.OrderID}}</b>. Summe: {{money .Data.TotalCts}}</p>`},
	{Name: "shipment.updates", Channel: notify.Email, Locale: "en",
		Subject: `{{len .Items}} shipment update(s)`,
		Text: `Your shipments are on their way:{{range .Items}}
- order {{.Data.OrderID}}, expected {{.Data.ETA}}{{end}}`},
	{Name: "order.shipped", Channel: notify.Email, Locale: "en",
		Subject: `Order {{.Data.OrderID}} has shipped`,
		HTML:    `<p>Your order <b>{{.Data.OrderID}}</b> left our warehouse with {{.Data.Carrier}}; tracking number {{.Data.Tracking}}.</p>`},
	{Name: "order.shipped", Channel: notify.Push, Locale: "en",
		Subject: `Order shipped`, Text: `{{.Data.OrderID}} is on its way ({{.Data.Tracking}})`},
}

// Senders are the providers the service delivers through.
type Senders struct {
	Email notify.Sender // required
	Push  notify.Sender // optional: without it no pushes are sent
}

// Config tunes the service.
type Config struct {
	// DigestWindow is how long shipment updates collect into one e-mail
	// (default 2s, short for the demo).
	DigestWindow time.Duration
	// QuietHours, if set, apply in each customer's time zone.
	QuietHours *notify.QuietHours
	// NotifyOptions are passed to notify.NewNotifier.
	NotifyOptions []notify.Option
}

// Service is the notifications service.
type Service struct {
	*herald.Service
	Notifier *notify.Notifier
	st       *store.Store
}

// New builds the notifications service on st.
func New(ctx context.Context, st *store.Store, senders Senders, cfg Config, opts ...herald.Option) (*Service, error) {
	if senders.Email == nil {
		return nil, errors.New("notifications: an e-mail sender is required")
	}
	if cfg.DigestWindow == 0 {
		cfg.DigestWindow = 2 * time.Second
	}
	if _, err := st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, email TEXT NOT NULL,
		name TEXT NOT NULL, locale TEXT NOT NULL, time_zone TEXT NOT NULL, push TEXT NOT NULL)`); err != nil {
		return nil, fmt.Errorf("notifications: migrate: %w", err)
	}
	svc, err := herald.New("notifications", append([]herald.Option{herald.WithStore(st)}, opts...)...)
	if err != nil {
		return nil, err
	}
	s := &Service{Service: svc, st: st}
	set, err := template.NewSet(template.DefaultLocale("en"))
	if err != nil {
		return nil, err
	}
	for _, t := range templates {
		if err := set.Add(t); err != nil {
			return nil, err
		}
	}
	nopts := append([]notify.Option{notify.WithRenderer(set)}, cfg.NotifyOptions...)
	if cfg.QuietHours != nil {
		nopts = append(nopts, notify.WithQuietHours(*cfg.QuietHours))
	}
	n, err := notify.NewNotifier(svc, notify.DirectoryFunc(s.lookup), nopts...)
	if err != nil {
		return nil, err
	}
	s.Notifier = n
	shippedChannels := []string{notify.Email}
	if senders.Push != nil {
		shippedChannels = append(shippedChannels, notify.Push)
	}
	err = errors.Join(
		n.Senders(notify.Email, senders.Email),
		notify.Route(n, orderConfirmedNote, notify.Spec[orderMail]{Category: "orders", Template: "order.confirmed",
			Channels: []string{notify.Email}, Recipients: func(m orderMail) []string { return []string{m.CustomerID} }}),
		notify.Route(n, shipmentNote, notify.Spec[shipmentUpdate]{Category: "shipping-updates", Template: "shipment.updates",
			Channels: []string{notify.Email}, Recipients: func(m shipmentUpdate) []string { return []string{m.CustomerID} },
			Digest: &notify.Digest{Window: cfg.DigestWindow, MaxItems: 20}}),
		notify.Route(n, shippedNote, notify.Spec[shippedMail]{Category: "orders", Template: "order.shipped",
			Channels: shippedChannels, Recipients: func(m shippedMail) []string { return []string{m.CustomerID} }}),
		herald.Subscribe(svc, contract.OrderConfirmedV1, "confirmation", s.onConfirmed, herald.Emits(orderConfirmedNote)),
		herald.Subscribe(svc, contract.ShipmentScheduledV1, "shipment-updates", func(ctx context.Context, tx herald.Tx, e contract.ShipmentScheduled) error {
			if err := s.known(ctx, tx, e.CustomerID); err != nil {
				return err
			}
			return herald.Notify(tx, shipmentNote, shipmentUpdate{CustomerID: e.CustomerID, OrderID: e.OrderID, ETA: e.ETA})
		}, patient, herald.Emits(shipmentNote)),
		herald.Subscribe(svc, contract.ShipmentDispatchedV1, "shipped", func(ctx context.Context, tx herald.Tx, e contract.ShipmentDispatched) error {
			if err := s.known(ctx, tx, e.CustomerID); err != nil {
				return err
			}
			return herald.Notify(tx, shippedNote, shippedMail{CustomerID: e.CustomerID, OrderID: e.OrderID, Carrier: e.Carrier, Tracking: e.Tracking})
		}, patient, herald.Emits(shippedNote)),
	)
	if err == nil && senders.Push != nil {
		err = n.Senders(notify.Push, senders.Push)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// patient retries for a while: shipping's events can overtake the
// confirmation that tells this service how to reach the customer (they
// travel on different subscriptions), and the retry waits for it.
var patient = herald.Retry(herald.RetryPolicy{MaxAttempts: 20, BaseDelay: 100 * time.Millisecond, MaxDelay: 5 * time.Second})

// errNotYetKnown is retried until the customer's confirmation arrives.
var errNotYetKnown = errors.New("customer not known yet: waiting for the order confirmation")

// known fails (retryably) until the customer's contact is stored.
func (s *Service) known(ctx context.Context, tx herald.Tx, customer string) error {
	var n int
	if err := tx.SQL().QueryRowContext(ctx, s.st.Rebind(`SELECT COUNT(*) FROM customers WHERE id = ?`), customer).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", errNotYetKnown, customer)
	}
	return nil
}

// onConfirmed remembers how to reach the customer and asks for the
// confirmation e-mail, in one transaction.
func (s *Service) onConfirmed(ctx context.Context, tx herald.Tx, e contract.OrderConfirmed) error {
	if _, err := tx.SQL().ExecContext(ctx, s.st.Rebind(`INSERT INTO customers (id, email, name, locale, time_zone, push) VALUES (?, ?, ?, 'en', 'UTC', ?)
		ON CONFLICT (id) DO UPDATE SET email = excluded.email`), e.CustomerID, e.Email, e.CustomerID, "device:"+e.CustomerID); err != nil {
		return err
	}
	return herald.Notify(tx, orderConfirmedNote, orderMail{CustomerID: e.CustomerID, OrderID: e.OrderID, TotalCts: e.TotalCts, Items: e.Items})
}

// lookup is the notifier's Directory: the customers this service has seen.
func (s *Service) lookup(ctx context.Context, id string) (notify.Recipient, error) {
	var email, name, locale, tz, push string
	q := s.st.Rebind(`SELECT email, name, locale, time_zone, push FROM customers WHERE id = ?`)
	var row *sql.Row
	if tx, ok := herald.TxFrom(ctx); ok {
		row = tx.SQL().QueryRowContext(ctx, q, id) // inside the notifier's transaction
	} else {
		row = s.st.DB().QueryRowContext(ctx, q, id)
	}
	err := row.Scan(&email, &name, &locale, &tz, &push)
	if errors.Is(err, sql.ErrNoRows) {
		return notify.Recipient{}, fmt.Errorf("%w: customer %s", notify.ErrUnknownRecipient, id)
	}
	if err != nil {
		return notify.Recipient{}, err
	}
	return notify.Recipient{ID: id, Name: name, Locale: locale, TimeZone: tz,
		Addresses: map[string]string{notify.Email: email, notify.Push: push}}, nil
}

// Start runs the service and its notifier.
func (s *Service) Start(ctx context.Context) error {
	if err := s.Service.Start(ctx); err != nil {
		return err
	}
	return s.Notifier.Start(ctx)
}

// Close stops the notifier and the service.
func (s *Service) Close() error {
	return errors.Join(s.Notifier.Close(), s.Service.Close())
}

// Handler serves PUT /preferences/{customer} and GET /deliveries?customer=…,
// every answer in JSON (httpjson.Serve).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /preferences/{customer}", func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			Category string `json:"category"`
			Channel  string `json:"channel"`
			Enabled  bool   `json:"enabled"`
		}
		if err := httpjson.Decode(w, r, &p); err != nil {
			httpjson.FailErr(w, err)
			return
		}
		err := s.Notifier.SetPreference(r.Context(), notify.Preference{Recipient: r.PathValue("customer"), Category: p.Category, Channel: p.Channel, Enabled: p.Enabled})
		if errors.Is(err, notify.ErrInvalidOption) {
			httpjson.Fail(w, http.StatusBadRequest, err.Error())
			return
		} else if err != nil {
			httpjson.Fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		httpjson.Write(w, http.StatusOK, p)
	})
	mux.HandleFunc("GET /deliveries", func(w http.ResponseWriter, r *http.Request) {
		ds, err := s.Notifier.Deliveries(r.Context(), notify.DeliveryFilter{Recipient: r.URL.Query().Get("customer"), Limit: 500})
		if err != nil {
			httpjson.Fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		httpjson.Write(w, http.StatusOK, ds)
	})
	return httpjson.Serve(mux, nil)
}
