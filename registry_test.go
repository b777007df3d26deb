package herald_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestRegistryRefuses(t *testing.T) {
	t.Parallel()
	type payload struct{ ID string }
	first := herald.Integration[payload]("shop.order.confirmed", herald.Version(1))
	cases := []struct {
		name     string
		contract herald.Contract
		want     error
		naming   string
	}{
		{"empty name", herald.Domain[payload](""), herald.ErrInvalidContract, "empty name"},
		{"upper case", herald.Domain[payload]("Orders.Placed"), herald.ErrInvalidContract, `"Orders.Placed"`},
		{"space", herald.Domain[payload]("orders placed"), herald.ErrInvalidContract, `"orders placed"`},
		{"wildcard", herald.Integration[payload]("orders.*"), herald.ErrInvalidContract, `"orders.*"`},
		{"empty segment", herald.Integration[payload]("orders..placed"), herald.ErrInvalidContract, `"orders..placed"`},
		{"trailing dot", herald.Integration[payload]("orders."), herald.ErrInvalidContract, `"orders."`},
		{"too long", herald.Domain[payload](strings.Repeat("a", 201)), herald.ErrInvalidContract, "longer than"},
		{"version zero", herald.Integration[payload]("orders.v0", herald.Version(0)), herald.ErrInvalidContract, `"orders.v0"`},
		{"key of another type", herald.Integration[payload]("orders.keyed", herald.KeyBy(func(s string) string { return s })), herald.ErrInvalidContract, "KeyBy"},
		{"key on a domain event", herald.Domain[payload]("orders.dkey", herald.KeyBy(func(p payload) string { return p.ID })), herald.ErrInvalidContract, "only for integration"},
		{"nil codec", herald.Domain[payload]("orders.nocodec", herald.WithCodec(nil)), herald.ErrInvalidContract, "codec"},
		{"duplicate name and version", herald.Integration[payload]("shop.order.confirmed", herald.Version(1)), herald.ErrDuplicateContract, `"shop.order.confirmed" v1`},
		{"same name, another kind", herald.Domain[payload]("shop.order.confirmed"), herald.ErrKindMismatch, `"shop.order.confirmed"`},
		{"same name, notification", herald.Notification[payload]("shop.order.confirmed", herald.Version(3)), herald.ErrKindMismatch, "integration"},
		{"nil", nil, herald.ErrInvalidContract, "nil contract"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := herald.NewRegistry()
			if err := r.Register(first); err != nil {
				t.Fatal(err)
			}
			err := r.Register(c.contract)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.naming) {
				t.Fatalf("Register = %v, want %v naming %q", err, c.want, c.naming)
			}
		})
	}
}

func TestRegistryAccepts(t *testing.T) {
	t.Parallel()
	type payload struct{ ID string }
	v1 := herald.Integration[payload]("shop.order.confirmed", herald.KeyBy(func(p payload) string { return p.ID }))
	v2 := herald.Integration[payload]("shop.order.confirmed", herald.Version(2))
	r := herald.NewRegistry()
	for _, c := range []herald.Contract{v1, v2, v1, herald.Domain[int]("a"), herald.Notification[int]("a-b_c.d9")} {
		if err := r.Register(c); err != nil {
			t.Fatalf("Register(%v) = %v", c.Name(), err)
		}
	}
	if got := len(r.Contracts()); got != 4 {
		t.Fatalf("%d contracts, want 4", got)
	}
	if c, ok := r.Lookup("shop.order.confirmed", 2); !ok || c != herald.Contract(v2) {
		t.Fatalf("Lookup v2 = %v %v", c, ok)
	}
	if got := v1.Key(payload{ID: "k"}); got != "k" {
		t.Fatalf("Key = %q", got)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		svc  string
		opts []herald.Option
		text string
	}{
		{"no store", "orders", nil, "no store"},
		{"bad name", "Orders!", nil, `"Orders!"`},
		{"empty name", "", nil, `""`},
		{"nil store", "orders", []herald.Option{herald.WithStore(nil)}, "nil store"},
		{"negative retention", "orders", []herald.Option{herald.WithEventLogRetention(-1)}, "retention"},
		{"bad retry", "orders", []herald.Option{herald.Retry(herald.RetryPolicy{})}, "retry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := herald.New(c.svc, c.opts...)
			if !errors.Is(err, herald.ErrInvalidOption) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("New = %v, want ErrInvalidOption naming %q", err, c.text)
			}
		})
	}
}
