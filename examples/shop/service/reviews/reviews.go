// Package reviews is the shop's review service, added after the others
// without any change to them: it listens to shop.order.confirmed to mark
// customers verified buyers of what they ordered, and shows a "verified"
// badge on their reviews. It also listens to shop.product.trending, which the
// analytics service (in JavaScript, examples/shop/analytics) publishes, to
// show a "trending" badge on products.
package reviews

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/contract"
	"github.com/heraldhq/herald/examples/shop/service/httpjson"
	"github.com/heraldhq/herald/store"
)

type buyerVerified struct {
	CustomerID string `json:"customer_id"`
	ProductID  string `json:"product_id"`
}

type reviewPosted struct {
	ReviewID   string `json:"review_id"`
	CustomerID string `json:"customer_id"`
	ProductID  string `json:"product_id"`
	Rating     int    `json:"rating"`
	Verified   bool   `json:"verified"`
}

var (
	verifiedBuyer = herald.Domain[buyerVerified]("reviews.buyer-verified")
	posted        = herald.Domain[reviewPosted]("reviews.review-posted")
)

// Service is the reviews service.
type Service struct {
	*herald.Service
	st *store.Store
}

// New builds the reviews service on st.
func New(ctx context.Context, st *store.Store, opts ...herald.Option) (*Service, error) {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS verified_buyers (customer_id TEXT NOT NULL, product_id TEXT NOT NULL, PRIMARY KEY (customer_id, product_id))`,
		`CREATE TABLE IF NOT EXISTS reviews (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, product_id TEXT NOT NULL,
			rating INTEGER NOT NULL, body TEXT NOT NULL, verified INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS trending_products (product_id TEXT PRIMARY KEY, orders INTEGER NOT NULL, event_id TEXT NOT NULL)`,
	} {
		if _, err := st.DB().ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("reviews: migrate: %w", err)
		}
	}
	svc, err := herald.New("reviews", append([]herald.Option{herald.WithStore(st)}, opts...)...)
	if err != nil {
		return nil, err
	}
	s := &Service{Service: svc, st: st}
	if err := errors.Join(svc.Register(verifiedBuyer, posted),
		herald.Subscribe(svc, contract.OrderConfirmedV1, "verify-buyers", s.verify, herald.Emits(verifiedBuyer)),
		herald.Subscribe(svc, contract.ProductTrendingV1, "mark-trending", s.markTrending)); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) verify(ctx context.Context, tx herald.Tx, e contract.OrderConfirmed) error {
	for _, it := range e.Items {
		res, err := tx.SQL().ExecContext(ctx, s.st.Rebind(`INSERT INTO verified_buyers (customer_id, product_id) VALUES (?, ?) ON CONFLICT DO NOTHING`),
			e.CustomerID, it.ProductID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := herald.Record(tx, verifiedBuyer, buyerVerified{CustomerID: e.CustomerID, ProductID: it.ProductID}); err != nil {
				return err
			}
		}
	}
	return nil
}

// markTrending records a product as trending. The event comes from a
// service that is not herald's (analytics, in JavaScript); herald's inbox
// makes its effect exactly-once all the same.
func (s *Service) markTrending(ctx context.Context, tx herald.Tx, e contract.ProductTrending) error {
	if strings.TrimSpace(e.ProductID) == "" {
		return herald.Permanent(errors.New("shop.product.trending without a product_id"))
	}
	ev, _ := herald.EventFrom(ctx)
	_, err := tx.SQL().ExecContext(ctx, s.st.Rebind(`INSERT INTO trending_products (product_id, orders, event_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
		e.ProductID, e.Orders, ev.ID)
	return err
}

// Trending is a product the analytics service found trending.
type Trending struct {
	ProductID string `json:"product_id"`
	Orders    int    `json:"orders"`   // the confirmed orders it had then
	EventID   string `json:"event_id"` // the ce-id of the shop.product.trending event
}

// Trending returns the trending products, by product id.
func (s *Service) Trending(ctx context.Context) ([]Trending, error) {
	rows, err := s.st.DB().QueryContext(ctx, `SELECT product_id, orders, event_id FROM trending_products ORDER BY product_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Trending{}
	for rows.Next() {
		var t Trending
		if err := rows.Scan(&t.ProductID, &t.Orders, &t.EventID); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// IsVerified reports whether customer bought product.
func (s *Service) IsVerified(ctx context.Context, customer, product string) (bool, error) {
	var n int
	err := s.st.DB().QueryRowContext(ctx, s.st.Rebind(`SELECT COUNT(*) FROM verified_buyers WHERE customer_id = ? AND product_id = ?`), customer, product).Scan(&n)
	return n > 0, err
}

// Review is a review as the API shows it.
type Review struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	ProductID  string `json:"product_id"`
	Rating     int    `json:"rating"`
	Body       string `json:"body"`
	Verified   bool   `json:"verified"`
}

// ErrInvalid marks a review the service refuses (HTTP 400).
var ErrInvalid = errors.New("invalid review")

// Post stores a review, verified when the customer bought the product.
func (s *Service) Post(ctx context.Context, r Review) (Review, error) {
	r.CustomerID, r.ProductID, r.Body = strings.TrimSpace(r.CustomerID), strings.TrimSpace(r.ProductID), strings.TrimSpace(r.Body)
	switch {
	case r.CustomerID == "" || r.ProductID == "":
		return r, fmt.Errorf("%w: customer_id and product_id are required", ErrInvalid)
	case r.Rating < 1 || r.Rating > 5:
		return r, fmt.Errorf("%w: rating %d is not between 1 and 5", ErrInvalid, r.Rating)
	}
	r.ID = herald.NewID()
	err := s.Do(ctx, func(tx herald.Tx) error {
		var n int
		if err := tx.SQL().QueryRowContext(ctx, s.st.Rebind(`SELECT COUNT(*) FROM verified_buyers WHERE customer_id = ? AND product_id = ?`),
			r.CustomerID, r.ProductID).Scan(&n); err != nil {
			return err
		}
		r.Verified = n > 0
		if _, err := tx.SQL().ExecContext(ctx, s.st.Rebind(`INSERT INTO reviews (id, customer_id, product_id, rating, body, verified) VALUES (?, ?, ?, ?, ?, ?)`),
			r.ID, r.CustomerID, r.ProductID, r.Rating, r.Body, boolInt(r.Verified)); err != nil {
			return err
		}
		return herald.Record(tx, posted, reviewPosted{ReviewID: r.ID, CustomerID: r.CustomerID, ProductID: r.ProductID, Rating: r.Rating, Verified: r.Verified})
	})
	return r, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Handler serves POST /reviews, GET /products/{id}/reviews,
// GET /verified/{customer}/{product} and GET /trending, every answer in JSON (httpjson.Serve).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reviews", func(w http.ResponseWriter, r *http.Request) {
		var rv Review
		if err := httpjson.Decode(w, r, &rv); err != nil {
			httpjson.FailErr(w, err)
			return
		}
		rv, err := s.Post(r.Context(), rv)
		httpjson.Respond(w, http.StatusCreated, rv, err, httpjson.As{Err: ErrInvalid, Status: http.StatusBadRequest})
	})
	mux.HandleFunc("GET /products/{id}/reviews", func(w http.ResponseWriter, r *http.Request) {
		rows, err := s.st.DB().QueryContext(r.Context(), s.st.Rebind(`SELECT id, customer_id, product_id, rating, body, verified FROM reviews WHERE product_id = ? ORDER BY id`), r.PathValue("id"))
		if err != nil {
			httpjson.Fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		defer rows.Close()
		out := []Review{}
		for rows.Next() {
			var rv Review
			var verified int
			if err := rows.Scan(&rv.ID, &rv.CustomerID, &rv.ProductID, &rv.Rating, &rv.Body, &verified); err != nil {
				httpjson.Fail(w, http.StatusInternalServerError, err.Error())
				return
			}
			rv.Verified = verified == 1
			out = append(out, rv)
		}
		httpjson.Write(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /verified/{customer}/{product}", func(w http.ResponseWriter, r *http.Request) {
		ok, err := s.IsVerified(r.Context(), r.PathValue("customer"), r.PathValue("product"))
		if err != nil {
			httpjson.Fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		httpjson.Write(w, http.StatusOK, map[string]bool{"verified": ok})
	})
	mux.HandleFunc("GET /trending", func(w http.ResponseWriter, r *http.Request) {
		ts, err := s.Trending(r.Context())
		if err != nil {
			httpjson.Fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		httpjson.Write(w, http.StatusOK, ts)
	})
	return httpjson.Serve(mux, nil)
}
