// Package shipping is the shop's shipping service: on shop.order.confirmed
// it schedules a shipment (its own domain event, translated to
// shop.shipment.scheduled), and a dispatcher later dispatches it
// (shop.shipment.dispatched).
package shipping

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/contract"
	"github.com/heraldhq/herald/examples/shop/service/httpjson"
	"github.com/heraldhq/herald/store"
)

type scheduled struct {
	OrderID    string    `json:"order_id"`
	ShipmentID string    `json:"shipment_id"`
	CustomerID string    `json:"customer_id"`
	ETA        time.Time `json:"eta"`
}

type dispatched struct {
	OrderID    string `json:"order_id"`
	ShipmentID string `json:"shipment_id"`
	CustomerID string `json:"customer_id"`
	Carrier    string `json:"carrier"`
	Tracking   string `json:"tracking"`
}

var (
	shipmentScheduled  = herald.Domain[scheduled]("shipping.shipment-scheduled")
	shipmentDispatched = herald.Domain[dispatched]("shipping.shipment-dispatched")
)

// Service is the shipping service.
type Service struct {
	*herald.Service
	st       *store.Store
	delay    time.Duration
	log      *slog.Logger
	stop     context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// New builds the shipping service; shipments are dispatched delay after
// they are scheduled.
func New(ctx context.Context, st *store.Store, delay time.Duration, opts ...herald.Option) (*Service, error) {
	if _, err := st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS shipments (id TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE,
		customer_id TEXT NOT NULL, status TEXT NOT NULL, eta BIGINT NOT NULL)`); err != nil {
		return nil, fmt.Errorf("shipping: migrate: %w", err)
	}
	svc, err := herald.New("shipping", append([]herald.Option{herald.WithStore(st)}, opts...)...)
	if err != nil {
		return nil, err
	}
	s := &Service{Service: svc, st: st, delay: delay, log: slog.Default()}
	err = errors.Join(
		herald.Translate(svc, shipmentScheduled, contract.ShipmentScheduledV1, func(ctx context.Context, e scheduled) (contract.ShipmentScheduled, error) {
			return contract.ShipmentScheduled{OrderID: e.OrderID, ShipmentID: e.ShipmentID, CustomerID: e.CustomerID, ETA: e.ETA.Format(time.RFC3339)}, nil
		}),
		herald.Translate(svc, shipmentDispatched, contract.ShipmentDispatchedV1, func(ctx context.Context, e dispatched) (contract.ShipmentDispatched, error) {
			return contract.ShipmentDispatched(e), nil
		}),
		herald.Subscribe(svc, contract.OrderConfirmedV1, "schedule-shipment", s.schedule, herald.Emits(shipmentScheduled)),
	)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// schedule plans the shipment of a confirmed order.
func (s *Service) schedule(ctx context.Context, tx herald.Tx, e contract.OrderConfirmed) error {
	sh := scheduled{OrderID: e.OrderID, ShipmentID: herald.NewID(), CustomerID: e.CustomerID, ETA: time.Now().Add(s.delay).UTC()}
	if _, err := tx.SQL().ExecContext(ctx, s.st.Rebind(`INSERT INTO shipments (id, order_id, customer_id, status, eta) VALUES (?, ?, ?, 'scheduled', ?)`),
		sh.ShipmentID, sh.OrderID, sh.CustomerID, sh.ETA.UnixNano()); err != nil {
		return err
	}
	return herald.Record(tx, shipmentScheduled, sh)
}

// Start runs the service and its dispatcher.
func (s *Service) Start(ctx context.Context) error {
	if err := s.Service.Start(ctx); err != nil {
		return err
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	s.wg.Go(func() { s.dispatcher(dctx) })
	return nil
}

// Close stops the dispatcher and the service.
func (s *Service) Close() error {
	s.stopOnce.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		s.wg.Wait()
	})
	return s.Service.Close()
}

func (s *Service) dispatcher(ctx context.Context) {
	tick := time.NewTicker(max(s.delay/4, 20*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := s.DispatchDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("shipping: dispatch", "err", err)
		}
	}
}

// DispatchDue dispatches every scheduled shipment whose ETA has come, one
// transaction each, and returns how many it dispatched.
func (s *Service) DispatchDue(ctx context.Context) (int, error) {
	rows, err := s.st.DB().QueryContext(ctx, s.st.Rebind(`SELECT id, order_id, customer_id FROM shipments WHERE status = 'scheduled' AND eta <= ? ORDER BY eta LIMIT 500`),
		time.Now().UnixNano())
	if err != nil {
		return 0, err
	}
	var due []dispatched
	for rows.Next() {
		var d dispatched
		if err := rows.Scan(&d.ShipmentID, &d.OrderID, &d.CustomerID); err != nil {
			rows.Close()
			return 0, err
		}
		due = append(due, d)
	}
	rows.Close()
	n := 0
	for _, d := range due {
		d.Carrier, d.Tracking = "herald-post", "HP"+d.ShipmentID[len(d.ShipmentID)-10:]
		// The dispatch belongs to the order's flow (orders names it after the
		// order), though no event of it causes the dispatch: time does.
		err := s.Do(herald.WithCorrelationID(ctx, d.OrderID), func(tx herald.Tx) error {
			res, err := tx.SQL().ExecContext(ctx, s.st.Rebind(`UPDATE shipments SET status = 'dispatched' WHERE id = ? AND status = 'scheduled'`), d.ShipmentID)
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); k == 0 {
				return nil // another instance dispatched it
			}
			return herald.Record(tx, shipmentDispatched, d)
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Shipment is a shipment as the API shows it.
type Shipment struct {
	ID         string `json:"id"`
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
}

// Count returns how many shipments have status (all when empty).
func (s *Service) Count(ctx context.Context, status string) (int, error) {
	var n int
	err := s.st.DB().QueryRowContext(ctx, s.st.Rebind(`SELECT COUNT(*) FROM shipments WHERE status = ? OR ? = ''`), status, status).Scan(&n)
	return n, err
}

// Handler serves GET /shipments/{order_id}, every answer in JSON
// (httpjson.Serve).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /shipments/{order}", func(w http.ResponseWriter, r *http.Request) {
		var sh Shipment
		err := s.st.DB().QueryRowContext(r.Context(), s.st.Rebind(`SELECT id, order_id, customer_id, status FROM shipments WHERE order_id = ?`), r.PathValue("order")).
			Scan(&sh.ID, &sh.OrderID, &sh.CustomerID, &sh.Status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			httpjson.Fail(w, http.StatusNotFound, "no shipment for order "+r.PathValue("order"))
		case err != nil:
			httpjson.Fail(w, http.StatusInternalServerError, err.Error())
		default:
			httpjson.Write(w, http.StatusOK, sh)
		}
	})
	return httpjson.Serve(mux, s.log)
}
