// Package orders is the shop's order service: it places orders (recording
// the domain event OrderPlaced in the same transaction as the order rows,
// translated to the integration event shop.order.confirmed) and follows
// shipping's events to keep each order's status.
package orders

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/contract"
	"github.com/heraldhq/herald/examples/shop/service/httpjson"
	"github.com/heraldhq/herald/examples/shop/service/mailaddr"
	"github.com/heraldhq/herald/store"
)

// Order statuses, in the order an order goes through them.
const (
	StatusConfirmed = "confirmed"
	StatusScheduled = "scheduled"
	StatusShipped   = "shipped"
)

// Catalog is the products the shop sells, with their prices in cents.
var Catalog = map[string]int{
	"p-book": 1999, "p-mug": 899, "p-lamp": 4599, "p-pen": 249, "p-tea": 699,
	"p-desk": 24900, "p-chair": 15900, "p-cable": 999, "p-plant": 1299, "p-clock": 3499,
}

// placed is orders' private domain event.
type placed struct {
	OrderID    string          `json:"order_id"`
	CustomerID string          `json:"customer_id"`
	Email      string          `json:"email"`
	Items      []contract.Item `json:"items"`
	TotalCts   int             `json:"total_cents"`
}

// statusChanged is recorded when shipping's events move an order on.
type statusChanged struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
}

var (
	orderPlaced   = herald.Domain[placed]("orders.order-placed")
	statusChanges = herald.Domain[statusChanged]("orders.status-changed")
)

// Service is the orders service.
type Service struct {
	*herald.Service
	st *store.Store
}

// New builds the orders service on st and b's herald options.
func New(ctx context.Context, st *store.Store, opts ...herald.Option) (*Service, error) {
	if err := migrate(ctx, st); err != nil {
		return nil, err
	}
	svc, err := herald.New("orders", append([]herald.Option{herald.WithStore(st)}, opts...)...)
	if err != nil {
		return nil, err
	}
	s := &Service{Service: svc, st: st}
	if err := svc.Register(statusChanges); err != nil {
		return nil, err
	}
	err = herald.Translate(svc, orderPlaced, contract.OrderConfirmedV1, func(ctx context.Context, e placed) (contract.OrderConfirmed, error) {
		return contract.OrderConfirmed(e), nil
	})
	if err == nil {
		err = herald.Subscribe(svc, contract.ShipmentScheduledV1, "track-scheduled", func(ctx context.Context, tx herald.Tx, e contract.ShipmentScheduled) error {
			return s.advance(ctx, tx, e.OrderID, StatusScheduled)
		}, herald.Emits(statusChanges))
	}
	if err == nil {
		err = herald.Subscribe(svc, contract.ShipmentDispatchedV1, "track-dispatched", func(ctx context.Context, tx herald.Tx, e contract.ShipmentDispatched) error {
			return s.advance(ctx, tx, e.OrderID, StatusShipped)
		}, herald.Emits(statusChanges))
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

func migrate(ctx context.Context, st *store.Store) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, email TEXT NOT NULL,
			status TEXT NOT NULL, total_cents INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS order_items (order_id TEXT NOT NULL, product_id TEXT NOT NULL,
			quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL, PRIMARY KEY (order_id, product_id))`,
	} {
		if _, err := st.DB().ExecContext(ctx, q); err != nil {
			return fmt.Errorf("orders: migrate: %w", err)
		}
	}
	return nil
}

// rank orders the statuses so a late event never moves an order back.
var rank = map[string]int{StatusConfirmed: 1, StatusScheduled: 2, StatusShipped: 3}

func (s *Service) advance(ctx context.Context, tx herald.Tx, orderID, status string) error {
	// Move only forward, in one statement: shipping's events arrive on two
	// subscriptions whose transactions may run at once, and a read-then-write
	// would let the later one overwrite "shipped" with "scheduled".
	var earlier []any
	for st, r := range rank {
		if r < rank[status] {
			earlier = append(earlier, st)
		}
	}
	q := `UPDATE orders SET status = ? WHERE id = ? AND status IN (?` + strings.Repeat(", ?", len(earlier)-1) + `)`
	res, err := tx.SQL().ExecContext(ctx, s.st.Rebind(q), append([]any{status, orderID}, earlier...)...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var exists int
		if err := tx.SQL().QueryRowContext(ctx, s.st.Rebind(`SELECT COUNT(*) FROM orders WHERE id = ?`), orderID).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return herald.Permanent(fmt.Errorf("unknown order %s", orderID))
		}
		return nil // already at or past status
	}
	return herald.Record(tx, statusChanges, statusChanged{OrderID: orderID, Status: status})
}

// PlaceRequest is the body of POST /orders.
type PlaceRequest struct {
	CustomerID string `json:"customer_id"`
	Email      string `json:"email"`
	Items      []struct {
		ProductID string `json:"product_id"`
		Quantity  int    `json:"quantity"`
	} `json:"items"`
}

// Order is an order as the API shows it.
type Order struct {
	ID         string          `json:"id"`
	CustomerID string          `json:"customer_id"`
	Email      string          `json:"email"`
	Status     string          `json:"status"`
	TotalCts   int             `json:"total_cents"`
	Items      []contract.Item `json:"items"`
}

// ErrInvalid marks a request the service refuses (HTTP 400).
var ErrInvalid = errors.New("invalid order")

// Place validates req and places the order: the order rows, OrderPlaced and
// (through the translation) shop.order.confirmed in one transaction.
func (s *Service) Place(ctx context.Context, req PlaceRequest) (Order, error) {
	// The e-mail address is taken as it is, not trimmed: mailaddr.Check
	// accepts only one bare address, so that the confirmation goes to it and
	// nowhere else.
	o := Order{ID: herald.NewID(), CustomerID: strings.TrimSpace(req.CustomerID), Email: req.Email, Status: StatusConfirmed}
	if o.CustomerID == "" {
		return o, fmt.Errorf("%w: customer_id is required", ErrInvalid)
	}
	if err := mailaddr.Check(o.Email); err != nil {
		return o, fmt.Errorf("%w: %w", ErrInvalid, &httpjson.FieldError{Field: "email", Err: err})
	}
	if len(req.Items) == 0 {
		return o, fmt.Errorf("%w: an order needs at least one item", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, it := range req.Items {
		price, ok := Catalog[it.ProductID]
		switch {
		case !ok:
			return o, fmt.Errorf("%w: unknown product %q", ErrInvalid, it.ProductID)
		case it.Quantity <= 0:
			return o, fmt.Errorf("%w: quantity %d of %s must be positive", ErrInvalid, it.Quantity, it.ProductID)
		case it.Quantity > 1000:
			return o, fmt.Errorf("%w: quantity %d of %s is more than 1000", ErrInvalid, it.Quantity, it.ProductID)
		case seen[it.ProductID]:
			return o, fmt.Errorf("%w: product %s listed twice", ErrInvalid, it.ProductID)
		}
		seen[it.ProductID] = true
		o.Items = append(o.Items, contract.Item{ProductID: it.ProductID, Quantity: it.Quantity, PriceCts: price})
		o.TotalCts += price * it.Quantity
	}
	// The order's events, and every event they cause in other services, form
	// one flow named after the order: herald trace <order id> shows it.
	err := s.Do(herald.WithCorrelationID(ctx, o.ID), func(tx herald.Tx) error {
		q := tx.SQL()
		if _, err := q.ExecContext(ctx, s.st.Rebind(`INSERT INTO orders (id, customer_id, email, status, total_cents) VALUES (?, ?, ?, ?, ?)`),
			o.ID, o.CustomerID, o.Email, o.Status, o.TotalCts); err != nil {
			return err
		}
		for _, it := range o.Items {
			if _, err := q.ExecContext(ctx, s.st.Rebind(`INSERT INTO order_items (order_id, product_id, quantity, price_cents) VALUES (?, ?, ?, ?)`),
				o.ID, it.ProductID, it.Quantity, it.PriceCts); err != nil {
				return err
			}
		}
		return herald.Record(tx, orderPlaced, placed{OrderID: o.ID, CustomerID: o.CustomerID, Email: o.Email, Items: o.Items, TotalCts: o.TotalCts})
	})
	return o, err
}

// ErrNotFound is returned for an unknown order.
var ErrNotFound = errors.New("order not found")

// Get returns an order with its status.
func (s *Service) Get(ctx context.Context, id string) (Order, error) {
	o := Order{ID: id}
	err := s.st.DB().QueryRowContext(ctx, s.st.Rebind(`SELECT customer_id, email, status, total_cents FROM orders WHERE id = ?`), id).
		Scan(&o.CustomerID, &o.Email, &o.Status, &o.TotalCts)
	if errors.Is(err, sql.ErrNoRows) {
		return o, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return o, err
	}
	rows, err := s.st.DB().QueryContext(ctx, s.st.Rebind(`SELECT product_id, quantity, price_cents FROM order_items WHERE order_id = ? ORDER BY product_id`), id)
	if err != nil {
		return o, err
	}
	defer rows.Close()
	for rows.Next() {
		var it contract.Item
		if err := rows.Scan(&it.ProductID, &it.Quantity, &it.PriceCts); err != nil {
			return o, err
		}
		o.Items = append(o.Items, it)
	}
	return o, rows.Err()
}

// CountByStatus returns how many orders have each status.
func (s *Service) CountByStatus(ctx context.Context) (map[string]int, error) {
	rows, err := s.st.DB().QueryContext(ctx, `SELECT status, COUNT(*) FROM orders GROUP BY status`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// Handler serves POST /orders and GET /orders/{id}, every answer in JSON
// (httpjson.Serve).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var req PlaceRequest
		if err := httpjson.Decode(w, r, &req); err != nil {
			httpjson.FailErr(w, err)
			return
		}
		o, err := s.Place(r.Context(), req)
		// An order whose event the broker would refuse for its size is
		// refused here, and nothing of it is committed.
		httpjson.Respond(w, http.StatusCreated, o, err, httpjson.As{Err: ErrInvalid, Status: http.StatusBadRequest},
			httpjson.As{Err: herald.ErrEventTooLarge, Status: http.StatusRequestEntityTooLarge})
	})
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		o, err := s.Get(r.Context(), r.PathValue("id"))
		httpjson.Respond(w, http.StatusOK, o, err, httpjson.As{Err: ErrNotFound, Status: http.StatusNotFound})
	})
	return httpjson.Serve(mux, nil)
}
