package heraldtest_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/template"
	"github.com/heraldhq/herald/store"
)

// A notification flow: orders notifies that an order was placed; the
// notifier of the notes service e-mails its buyer.
type placedMail struct {
	OrderID string `json:"order_id"`
	Buyer   string `json:"buyer"`
}

var placedNote = herald.Notification[placedMail]("shop.notify.placed", herald.Version(1))

// mailbox is an e-mail sender that keeps what it sent.
type mailbox struct {
	mu   sync.Mutex
	sent []notify.Message
}

func (m *mailbox) Send(_ context.Context, msg notify.Message) (notify.Receipt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, msg)
	return notify.Receipt{}, nil
}

// received is what a provider that honours idempotency keys keeps: the
// address of each message, once per key, sorted. A notifier sends at
// least once — a send whose outcome it could not record (its process
// stopped) is sent again — with the same key (notify.Message.Key).
func (m *mailbox) received() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]string{}
	for _, msg := range m.sent {
		seen[msg.Key] = msg.To
	}
	return slices.Sorted(maps.Values(seen))
}

func (m *mailbox) to() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, msg := range m.sent {
		out = append(out, msg.To)
	}
	return out
}

// newNotifying builds orders and notes, and the notifier of notes with its
// route and mailbox, and starts them.
func newNotifying(t *testing.T) (sys *heraldtest.System, orders *herald.Service, n *notify.Notifier, box *mailbox) {
	t.Helper()
	sys = heraldtest.New(t)
	orders, notes := sys.Service("orders"), sys.Service("notes")
	set, err := template.NewSet()
	must(t, err)
	must(t, set.Add(template.Spec{Name: "placed", Channel: notify.Email, Subject: "Order {{.Data.OrderID}}", Text: "Thank you."}))
	n, err = notify.NewNotifier(notes, notify.DirectoryFunc(func(_ context.Context, id string) (notify.Recipient, error) {
		return notify.Recipient{Addresses: map[string]string{notify.Email: id + "@example.com"}}, nil
	}), notify.WithRenderer(set))
	must(t, err)
	t.Cleanup(func() { n.Close() }) // before notes closes
	box = &mailbox{}
	must(t, n.Senders(notify.Email, notify.FuncSender(notify.Email, "mailbox", box.Send)))
	must(t, notify.Route(n, placedNote, notify.Spec[placedMail]{Category: "orders", Template: "placed", Channels: []string{notify.Email},
		Recipients: func(m placedMail) []string { return []string{m.Buyer} }}))
	must(t, orders.Register(placedNote))
	sys.Start()
	must(t, n.Start(context.Background()))
	return sys, orders, n, box
}

// notifyPlaced is the action: orders notifies in one transaction.
func notifyPlaced(orders *herald.Service, order, buyer string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return orders.Do(ctx, func(tx herald.Tx) error {
			return herald.Notify(tx, placedNote, placedMail{OrderID: order, Buyer: buyer})
		})
	}
}

// TestFlowSettlesAfterTheDelivery: a flow whose notification route sends
// one e-mail settles only once the notifier sent it — the mailbox has it
// when Run returns — and Deliveries reports it sent.
func TestFlowSettlesAfterTheDelivery(t *testing.T) {
	sys, orders, _, box := newNotifying(t)
	flow := sys.Run(t, notifyPlaced(orders, "o-1", "alice"))
	if got := box.to(); !slices.Equal(got, []string{"alice@example.com"}) {
		t.Fatalf("mailbox has %q when the flow settled, want alice's e-mail\n%s", got, flow)
	}
	ds := flow.Deliveries()
	if len(ds) != 1 || ds[0].Recipient != "alice" || ds[0].Channel != notify.Email || ds[0].Outcome != "sent" ||
		ds[0].Service != "notes" || ds[0].Type != placedNote.Name() || ds[0].Err != "" {
		t.Fatalf("deliveries %+v, want one e-mail to alice, sent\n%s", ds, flow)
	}
	if got := flow.Sent(notify.Email); len(got) != 1 || got[0] != ds[0] {
		t.Errorf("Sent(email) = %+v, want %+v", got, ds[0])
	}
	// The delivery hangs in the tree under its notification event.
	events := flow.Events(placedNote.Name())
	if len(events) != 2 || events[1].EventID != ds[0].ID || events[1].CausationID != events[0].EventID {
		t.Errorf("tree: the delivery is not under its event\n%s", flow)
	}
}

// TestFlowSettlesWithSuppressedDelivery: a notification its recipient
// turned off settles with the delivery suppressed, and nothing sent.
func TestFlowSettlesWithSuppressedDelivery(t *testing.T) {
	sys, orders, n, box := newNotifying(t)
	must(t, n.SetPreference(context.Background(), notify.Preference{Recipient: "bob", Category: "orders", Channel: notify.Email}))
	flow := sys.Run(t, notifyPlaced(orders, "o-2", "bob"))
	ds := flow.Deliveries()
	if len(ds) != 1 || ds[0].Recipient != "bob" || ds[0].Outcome != "suppressed" || ds[0].Err == "" {
		t.Fatalf("deliveries %+v, want bob's e-mail suppressed, with its reason\n%s", ds, flow)
	}
	if got := flow.Sent(""); len(got) != 0 {
		t.Errorf("Sent = %+v, want none", got)
	}
	if got := box.to(); len(got) != 0 {
		t.Errorf("mailbox has %q, want nothing", got)
	}
}

// A notification route keeps the guarantees: one e-mail per (event,
// recipient, channel) whatever is redelivered or retried.
func TestCheckNotificationRoute(t *testing.T) {
	var mu sync.Mutex
	boxes := map[*store.Store]*mailbox{}
	heraldtest.CheckHandler(t, heraldtest.Check[placedMail]{
		Event: placedNote, Subscription: "mail-buyer",
		Events: []placedMail{{OrderID: "o1", Buyer: "alice"}, {OrderID: "o2", Buyer: "bob"}},
		Service: func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
			mu.Lock()
			box := boxes[st]
			if box == nil {
				box = &mailbox{}
				boxes[st] = box
			}
			mu.Unlock()
			notes, err := herald.New("notes", append([]herald.Option{herald.WithStore(st)}, opts...)...)
			if err != nil {
				return nil, err
			}
			set, err := template.NewSet()
			if err != nil {
				return nil, err
			}
			n, err := notify.NewNotifier(notes, notify.DirectoryFunc(func(_ context.Context, id string) (notify.Recipient, error) {
				return notify.Recipient{Addresses: map[string]string{notify.Email: id + "@example.com"}}, nil
			}), notify.WithRenderer(set))
			if err != nil {
				return nil, err
			}
			return &notifying{Service: notes, n: n}, errors.Join(
				set.Add(template.Spec{Name: "placed", Channel: notify.Email, Subject: "Order {{.Data.OrderID}}", Text: "Thank you."}),
				n.Senders(notify.Email, notify.FuncSender(notify.Email, "mailbox", box.Send)),
				notify.Route(n, placedNote, notify.Spec[placedMail]{Name: "mail-buyer", Category: "orders", Template: "placed",
					Channels: []string{notify.Email}, Recipients: func(m placedMail) []string { return []string{m.Buyer} }}))
		},
		Effect: func(_ context.Context, st *store.Store) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			return boxes[st].received(), nil
		},
	})
}

// notifying is a service and its notifier, started and closed together.
type notifying struct {
	*herald.Service
	n *notify.Notifier
}

func (s *notifying) Start(ctx context.Context) error {
	return errors.Join(s.Service.Start(ctx), s.n.Start(ctx))
}

func (s *notifying) Close() error { return errors.Join(s.n.Close(), s.Service.Close()) }

// The delivery log answers admin requests through the broker: by
// recipient, by event; bad requests refused.
func TestDeliveriesOverTheBroker(t *testing.T) {
	sys, orders, _, _ := newNotifying(t)
	flow := sys.Run(t, func(ctx context.Context) error {
		return orders.Do(ctx, func(tx herald.Tx) error {
			return herald.Notify(tx, placedNote, placedMail{OrderID: "o1", Buyer: "alice"})
		})
	})
	ctx := context.Background()
	c := admin.NewClient(sys.Broker())
	got, err := c.Deliveries(ctx, "notes", admin.DeliveryQuery{Recipient: "alice"})
	must(t, err)
	if len(got.Deliveries) != 1 || got.Deliveries[0].State != "sent" || got.Deliveries[0].Channel != notify.Email || got.More {
		t.Fatalf("alice's deliveries %+v, want one e-mail sent", got)
	}
	byEvent, err := c.Deliveries(ctx, "notes", admin.DeliveryQuery{EventID: got.Deliveries[0].EventID})
	must(t, err)
	if len(byEvent.Deliveries) != 1 || byEvent.Deliveries[0].ID != got.Deliveries[0].ID || flow.Sent(notify.Email)[0].ID != got.Deliveries[0].ID {
		t.Fatalf("the event's deliveries %+v, want alice's", byEvent)
	}
	if none, err := c.Deliveries(ctx, "notes", admin.DeliveryQuery{Recipient: "bob"}); err != nil || len(none.Deliveries) != 0 {
		t.Fatalf("bob's deliveries %+v, %v: want none", none, err)
	}
	if _, err := c.Deliveries(ctx, "notes", admin.DeliveryQuery{Limit: admin.MaxList + 1}); err == nil || !strings.Contains(err.Error(), "limit 1001") {
		t.Fatalf("a limit past MaxList: %v", err)
	}
}
