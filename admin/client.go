package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/catalog"
)

// Client sends admin requests to herald services through a broker.
type Client struct {
	b broker.AdminClient
}

// NewClient returns a client that reaches services through b (a
// *natsjs.Broker, say).
func NewClient(b broker.AdminClient) *Client { return &Client{b: b} }

// call sends req to endpoint of service and decodes the reply into resp.
func call[Resp any](ctx context.Context, c *Client, service, endpoint string, req any) (Resp, error) {
	var resp Resp
	body, err := json.Marshal(req)
	if err != nil {
		return resp, fmt.Errorf("admin %s of %s: %w", endpoint, service, err)
	}
	reply, err := c.b.AdminRequest(ctx, service, endpoint, body)
	if err != nil {
		return resp, fmt.Errorf("admin %s of %s: %w", endpoint, service, err)
	}
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(reply, &v); err != nil {
		return resp, fmt.Errorf("admin %s of %s: reply: %w", endpoint, service, err)
	}
	if v.V != Version {
		return resp, fmt.Errorf("admin %s of %s: the reply is of protocol version %d; this client speaks %d", endpoint, service, v.V, Version)
	}
	if err := json.Unmarshal(reply, &resp); err != nil {
		return resp, fmt.Errorf("admin %s of %s: reply: %w", endpoint, service, err)
	}
	return resp, nil
}

// DeadLetters lists service's dead letters matching f, oldest first.
func (c *Client) DeadLetters(ctx context.Context, service string, f Filter) (List, error) {
	f.V = Version
	return call[List](ctx, c, service, EndpointList, f)
}

// DeadLetter returns one of service's dead letters.
func (c *Client) DeadLetter(ctx context.Context, service string, id int64) (DeadLetter, error) {
	d, err := call[Shown](ctx, c, service, EndpointShow, Show{V: Version, ID: id})
	return d.DeadLetter, err
}

// Replay replays service's dead letters matching r.Filter, or with
// r.DryRun says what it would replay.
func (c *Client) Replay(ctx context.Context, service string, r Replay) (Replayed, error) {
	r.V, r.Filter.V = Version, Version
	return call[Replayed](ctx, c, service, EndpointReplay, r)
}

// Purge deletes service's dead letters matching p.Filter (every one with
// p.All) and says how many.
func (c *Client) Purge(ctx context.Context, service string, p Purge) (Purged, error) {
	p.V, p.Filter.V = Version, Version
	return call[Purged](ctx, c, service, EndpointPurge, p)
}

// Stats returns service's outbox backlog and subscription lags, as one of
// its instances sees them.
func (c *Client) Stats(ctx context.Context, service string) (Stats, error) {
	return call[Stats](ctx, c, service, EndpointStats, Request{V: Version})
}

// Manifest returns service's manifest, from a running instance.
func (c *Client) Manifest(ctx context.Context, service string) (catalog.Manifest, error) {
	m, err := call[Manifest](ctx, c, service, EndpointManifest, Request{V: Version})
	return m.Manifest, err
}

// Deliveries returns the notification deliveries of service's notifier
// that q selects, oldest first.
func (c *Client) Deliveries(ctx context.Context, service string, q DeliveryQuery) (Deliveries, error) {
	q.V = Version
	return call[Deliveries](ctx, c, service, EndpointDeliveries, q)
}

// DecodeRequest decodes a request into v, strictly: a request of another
// protocol version than Version, a field v does not have, or JSON that is
// not one object is an *broker.AdminError (400) naming it. An empty
// request is {"v": Version}.
func DecodeRequest(req []byte, v any) error {
	if len(bytes.TrimSpace(req)) == 0 {
		req = []byte(fmt.Sprintf(`{"v":%d}`, Version))
	}
	var ver struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(req, &ver); err != nil {
		return &broker.AdminError{Code: 400, Message: fmt.Sprintf("the request is not a JSON object: %v", err)}
	}
	switch {
	case ver.V == nil:
		return &broker.AdminError{Code: 400, Message: fmt.Sprintf(`the request has no protocol version: send "v": %d`, Version)}
	case *ver.V != Version:
		return &broker.AdminError{Code: 400, Message: fmt.Sprintf("the request is of protocol version %d; this service speaks %d", *ver.V, Version)}
	}
	dec := json.NewDecoder(bytes.NewReader(req))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &broker.AdminError{Code: 400, Message: fmt.Sprintf("the request: %v", err)}
	}
	if dec.More() {
		return &broker.AdminError{Code: 400, Message: "the request holds more than one JSON value"}
	}
	return nil
}

// IsNotFound reports whether err is an admin error for something that
// does not exist (code 404).
func IsNotFound(err error) bool {
	var ae *broker.AdminError
	return errors.As(err, &ae) && ae.Code == 404
}
