package notify

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/adminhook"
)

// serveAdmin adds the delivery log's endpoint (admin.EndpointDeliveries) to
// the admin endpoints of the notifier's service.
func (n *Notifier) serveAdmin() {
	adminhook.Add(n.svc, broker.AdminEndpoint{Name: admin.EndpointDeliveries, Handle: n.adminDeliveries})
}

// adminDeliveries answers an admin.DeliveryQuery with the log's rows.
func (n *Notifier) adminDeliveries(ctx context.Context, body []byte) ([]byte, error) {
	var q admin.DeliveryQuery
	if err := admin.DecodeRequest(body, &q); err != nil {
		return nil, err
	}
	switch {
	case q.Limit < 0 || q.Limit > admin.MaxList:
		return nil, &broker.AdminError{Code: 400, Message: fmt.Sprintf("limit %d: want 0 (default %d) to %d", q.Limit, admin.DefaultList, admin.MaxList)}
	case q.Limit == 0:
		q.Limit = admin.DefaultList
	}
	ds, err := n.Deliveries(ctx, DeliveryFilter{Recipient: q.Recipient, EventID: q.EventID, CorrelationID: q.CorrelationID,
		Channel: q.Channel, State: State(q.State), Limit: q.Limit + 1})
	if err != nil {
		return nil, err
	}
	out := admin.Deliveries{V: admin.Version, Deliveries: make([]admin.Delivery, 0, len(ds))}
	if len(ds) > q.Limit {
		ds, out.More = ds[:q.Limit], true
	}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, admin.Delivery{ID: d.ID, Route: d.Route, EventID: d.EventID, EventType: d.EventType,
			CorrelationID: d.CorrelationID, Recipient: d.Recipient, Channel: d.Channel, Category: d.Category, Template: d.Template,
			State: string(d.State), Reason: d.Reason, Attempts: d.Attempts, Provider: d.Provider, LastError: d.LastError,
			DigestID: d.DigestID, Created: d.CreatedAt, Updated: d.UpdatedAt, Sent: d.SentAt})
	}
	return json.Marshal(out)
}
