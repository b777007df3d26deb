package catalog_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/internal/testdb"
)

// The payloads of a small billing system with two versions of a contract.
type (
	Money struct {
		Cents    int64  `json:"cents"`
		Currency string `json:"currency"`
	}
	Line struct {
		SKU   string `json:"sku"`
		Price Money  `json:"price"`
	}
	InvoiceV1 struct {
		ID    string `json:"id"`
		Total int64  `json:"total"`
	}
	InvoiceV2 struct {
		ID     string            `json:"id"`
		Total  Money             `json:"total"`
		Lines  []Line            `json:"lines"`
		Issued time.Time         `json:"issued"`
		Due    *time.Time        `json:"due,omitempty"`
		Labels map[string]string `json:"labels,omitempty"`
	}
	// InvoiceV2Archive is what the archive service was built with: it
	// expects a field billing's InvoiceV2 does not have.
	InvoiceV2Archive struct {
		ID       string `json:"id"`
		Total    Money  `json:"total"`
		Archived bool   `json:"archive_flag"`
	}
	Invoiced  struct{ ID string }
	Audited   struct{ ID string }
	Booked    struct{ ID string }
	LedgerOut struct {
		ID string `json:"id"`
	}
	Mail   struct{ To string }
	Refund struct{ ID string }
)

var (
	invoiceV1   = herald.Integration[InvoiceV1]("acme.invoice.issued", herald.Version(1))
	invoiceV2   = herald.Integration[InvoiceV2]("acme.invoice.issued", herald.Version(2))
	invoiceArch = herald.Integration[InvoiceV2Archive]("acme.invoice.issued", herald.Version(2))
	ledgerOut   = herald.Integration[LedgerOut]("acme.ledger.booked")
	refunded    = herald.Integration[Refund]("acme.refund.issued")
	invoiced    = herald.Domain[Invoiced]("billing.invoiced")
	audited     = herald.Domain[Audited]("billing.audited")
	booked      = herald.Domain[Booked]("ledger.booked")
	invoiceMail = herald.Notification[Mail]("acme.notify.invoice")
)

func newService(t *testing.T, name string) *herald.Service {
	t.Helper()
	svc, err := herald.New(name, herald.WithStore(testdb.SQLite(t)), herald.ServiceVersion("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func must(t *testing.T, errs ...error) {
	t.Helper()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// billingSystem returns the manifests of four services built with herald:
//
//	billing  records billing.invoiced, a handler records billing.audited,
//	         translated to acme.invoice.issued v2
//	ledger   subscribes to v2 (upcasting v1), records ledger.booked,
//	         translated to acme.ledger.booked (nobody subscribes)
//	mailer   subscribes to v1 only (billing publishes v2), notifies
//	         acme.notify.invoice and sends it by email; subscribes to
//	         acme.refund.issued (nobody publishes it)
//	archive  subscribes to v2 built from another Go type (a schema break)
func billingSystem(t *testing.T) []catalog.Manifest {
	noop := func(context.Context, herald.Tx, InvoiceV2) error { return nil }
	billing := newService(t, "billing")
	must(t,
		herald.Translate(billing, invoiced, invoiceV2, func(context.Context, Invoiced) (InvoiceV2, error) { return InvoiceV2{}, nil }),
		herald.Handle(billing, invoiced, "audit", func(context.Context, herald.Tx, Invoiced) error { return nil }, herald.Emits(audited)),
	)
	ledger := newService(t, "ledger")
	must(t,
		herald.Upcast(ledger, invoiceV1, invoiceV2, func(v InvoiceV1) (InvoiceV2, error) {
			return InvoiceV2{ID: v.ID, Total: Money{Cents: v.Total, Currency: "EUR"}}, nil
		}),
		herald.Subscribe(ledger, invoiceV2, "book", noop, herald.Emits(booked)),
		herald.Translate(ledger, booked, ledgerOut, func(context.Context, Booked) (LedgerOut, error) { return LedgerOut{}, nil }),
	)
	mailer := newService(t, "mailer")
	must(t,
		herald.Subscribe(mailer, invoiceV1, "mail", func(context.Context, herald.Tx, InvoiceV1) error { return nil }, herald.Emits(invoiceMail)),
		herald.Receive(mailer, invoiceMail, "send", func(context.Context, herald.Tx, Mail) error { return nil }, herald.Delivers("email")),
		herald.Subscribe(mailer, refunded, "refunds", func(context.Context, herald.Tx, Refund) error { return nil }),
	)
	archive := newService(t, "archive")
	must(t, herald.Subscribe(archive, invoiceArch, "keep", func(context.Context, herald.Tx, InvoiceV2Archive) error { return nil }))
	var ms []catalog.Manifest
	for _, svc := range []*herald.Service{billing, ledger, mailer, archive} {
		m, err := svc.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

func TestManifestFromRegistrations(t *testing.T) {
	ms := billingSystem(t)
	ledger := ms[1]
	if ledger.Service != "ledger" || ledger.Version != "1.2.3" {
		t.Fatalf("manifest of %q version %q", ledger.Service, ledger.Version)
	}
	if len(ledger.Subscriptions) != 1 || !slices.Equal(ledger.Subscriptions[0].Accepts, []int{1, 2}) {
		t.Fatalf("ledger's subscriptions: %+v, want book accepting v1 (upcast) and v2", ledger.Subscriptions)
	}
	if got := ledger.Subscriptions[0].Emits; !slices.Equal(got, []catalog.Ref{{Name: "ledger.booked", Version: 1}}) {
		t.Errorf("book emits %v", got)
	}
	for _, ref := range []catalog.Ref{{Name: "acme.invoice.issued", Version: 1}, {Name: "acme.invoice.issued", Version: 2}, {Name: "ledger.booked", Version: 1}} {
		c, ok := ledger.Contract(ref.Name, ref.Version)
		if !ok || len(c.Schema) == 0 {
			t.Errorf("ledger's manifest lacks %s with a schema", ref)
		}
	}
	billing := ms[0]
	if len(billing.Handlers) != 1 || billing.Handlers[0].Name != "audit" || !slices.Equal(billing.Handlers[0].Emits, []catalog.Ref{{Name: "billing.audited", Version: 1}}) {
		t.Errorf("billing's handlers: %+v", billing.Handlers)
	}
	mailer := ms[2]
	if !slices.Equal(mailer.Emits, []catalog.Ref{{Name: "acme.notify.invoice", Version: 1}}) {
		t.Errorf("mailer emits %v", mailer.Emits)
	}
	for _, s := range mailer.Subscriptions {
		if s.Name == "send" && !slices.Equal(s.Channels, []string{"email"}) {
			t.Errorf("mailer/send channels %v", s.Channels)
		}
	}
	// The JSON form round-trips.
	var buf strings.Builder
	g, err := catalog.Build(ms)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := catalog.ReadManifests(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	g2, err := catalog.Build(back)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.EdgeStrings(), g2.EdgeStrings()) {
		t.Errorf("edges after a JSON round trip differ:\n%v\n%v", g.EdgeStrings(), g2.EdgeStrings())
	}
}

func TestEmitsRefusesIntegrationEvents(t *testing.T) {
	svc := newService(t, "x")
	err := herald.Subscribe(svc, invoiceV1, "s", func(context.Context, herald.Tx, InvoiceV1) error { return nil }, herald.Emits(ledgerOut))
	if !errors.Is(err, herald.ErrInvalidOption) || !strings.Contains(err.Error(), "Translate") {
		t.Fatalf("Emits(integration event): %v, want ErrInvalidOption pointing to Translate", err)
	}
}

func TestWarnings(t *testing.T) {
	g, err := catalog.Build(billingSystem(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind  catalog.WarningKind
		parts []string
	}{
		{catalog.WarnUnconsumed, []string{"ledger publishes acme.ledger.booked", "no service subscribes"}},
		{catalog.WarnUnpublished, []string{"mailer/refunds", "acme.refund.issued", "no service publishes"}},
		{catalog.WarnVersion, []string{"billing publishes acme.invoice.issued v2", "mailer/mail", "v1"}},
		{catalog.WarnSchema, []string{"acme.invoice.issued v2", `"archive_flag"`, "archive/keep"}},
	}
	for _, w := range want {
		found := false
		for _, got := range g.Warnings {
			if got.Kind != w.kind {
				continue
			}
			ok := true
			for _, p := range w.parts {
				ok = ok && strings.Contains(got.Message, p)
			}
			found = found || ok
		}
		if !found {
			t.Errorf("no %s warning mentioning %q; warnings:\n%v", w.kind, w.parts, g.Warnings)
		}
	}
	if len(g.Warnings) != len(want) {
		t.Errorf("%d warnings, want %d:\n%v", len(g.Warnings), len(want), g.Warnings)
	}
}

func TestWhy(t *testing.T) {
	g, err := catalog.Build(billingSystem(t))
	if err != nil {
		t.Fatal(err)
	}
	why, err := g.Why("billing.invoiced")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"hdl:billing/billing.invoiced/audit", "dom:billing/billing.audited", "int:acme.invoice.issued",
		"sub:ledger/book", "dom:ledger/ledger.booked", "int:acme.ledger.booked", "sub:mailer/mail", "ntf:acme.notify.invoice",
		"sub:mailer/send", "chan:mailer/email", "sub:archive/keep"} {
		if !why.Reaches(id) {
			t.Errorf("why billing.invoiced does not reach %s", id)
		}
	}
	if why.Reaches("sub:mailer/refunds") {
		t.Errorf("why billing.invoiced reaches the refunds subscription")
	}
	if _, err := g.Why("invoice.issued"); err != nil {
		t.Errorf("why by a suffix: %v", err)
	}
	if _, err := g.Why("nope.nothing"); !errors.Is(err, catalog.ErrUnknownEvent) {
		t.Errorf("why of an unknown event: %v", err)
	}
	if _, err := g.Why("booked"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("why of an ambiguous suffix (ledger.booked, acme.ledger.booked): %v", err)
	}
}

func TestRenderings(t *testing.T) {
	g, err := catalog.Build(billingSystem(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ format, want string }{
		{"text", "└── subscribes acme.invoice.issued as \"book\" (accepts v1,v2) → records ledger.booked\nmailer 1.2.3\n"},
		{"mermaid", "flowchart LR"},
		{"dot", "digraph herald {"},
		{"json", `"kind": "translates"`},
		{"asyncapi", `"asyncapi": "3.0.0"`},
	} {
		var b strings.Builder
		if err := g.Render(&b, tc.format, catalog.AsyncAPIOptions{}); err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s rendering lacks %q:\n%s", tc.format, tc.want, b.String())
		}
		if tc.format == "text" || tc.format == "mermaid" || tc.format == "dot" {
			for _, name := range []string{"acme.invoice.issued", "ledger.booked", "acme.notify.invoice", "email"} {
				if !strings.Contains(b.String(), name) {
					t.Errorf("%s rendering lacks %s", tc.format, name)
				}
			}
		}
	}
	if err := g.Render(&strings.Builder{}, "svg", catalog.AsyncAPIOptions{}); err == nil || !strings.Contains(err.Error(), "svg") {
		t.Errorf("unknown format: %v", err)
	}
}

func TestDeliversChannelNames(t *testing.T) {
	for _, tc := range []struct {
		channel string
		ok      bool
	}{
		{"email", true}, {"Slack.alerts", true}, {"", false}, {"a/b", false}, {"*", false}, {"two words", false},
	} {
		svc := newService(t, "n")
		err := herald.Receive(svc, invoiceMail, "send", func(context.Context, herald.Tx, Mail) error { return nil }, herald.Delivers(tc.channel))
		if (err == nil) != tc.ok {
			t.Errorf("Delivers(%q): %v, want ok=%v", tc.channel, err, tc.ok)
		}
		if err != nil && !errors.Is(err, herald.ErrInvalidOption) {
			t.Errorf("Delivers(%q): %v, want ErrInvalidOption", tc.channel, err)
		}
	}
}
