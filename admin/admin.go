// Package admin is the protocol herald services answer admin requests in,
// over the broker, and a client of it: herald's CLI and console use it to
// list, show, replay and purge dead letters, read a service's stats and
// its manifest, with nothing but the broker's URL — no database
// credentials on the operator's machine.
//
// Every running service instance serves the endpoints (package herald
// starts them when its broker implements broker.AdminServer, as NATS
// JetStream's does: a NATS micro service per instance, which `nats micro
// ls` lists). Requests and replies are JSON with a version, V (Version);
// a service refuses a request of a version it does not speak, and a field
// it does not know, with an error that names it.
//
// # Endpoints
//
//	manifest     the service's manifest (catalog.Manifest)
//	stats        outbox backlog and oldest age, each subscription's lag
//	dlq.list     dead letters matching a Filter, oldest first (at most MaxList)
//	dlq.show     one dead letter, with its message as it arrived
//	dlq.replay   replay the dead letters matching a Filter; DryRun: what it would do
//	dlq.purge    delete the dead letters matching a Filter (All for every one)
//	deliveries   the notification delivery log, by recipient, event or flow (a notifier's service)
package admin

import (
	"time"

	"github.com/heraldhq/herald/catalog"
)

// Version is the protocol's version: the V of every request and reply.
const Version = 1

// The endpoints.
const (
	EndpointManifest = "manifest"
	EndpointStats    = "stats"
	EndpointList     = "dlq.list"
	EndpointShow     = "dlq.show"
	EndpointReplay   = "dlq.replay"
	EndpointPurge    = "dlq.purge"
	// EndpointDeliveries is the notification delivery log, served by a
	// service that runs a notifier (package notify).
	EndpointDeliveries = "deliveries"
)

// MaxList bounds the dead letters one list returns; DefaultList is a
// list's size when its Limit is 0.
const (
	MaxList     = 1000
	DefaultList = 100
)

// Filter selects dead letters; empty fields match every one.
type Filter struct {
	V            int     `json:"v"`
	Subscription string  `json:"subscription,omitempty"`
	Type         string  `json:"type,omitempty"`
	Reason       string  `json:"reason,omitempty"`
	IDs          []int64 `json:"ids,omitempty"`
	// ProducerSide selects only dead letters the service's relay parked.
	ProducerSide bool `json:"producer_side,omitempty"`
	// Limit bounds a list (default DefaultList, at most MaxList).
	Limit int `json:"limit,omitempty"`
}

// DeadLetter is an event a subscription gave up on (or, with no
// Subscription, one the service's relay parked), with its message exactly
// as it arrived.
type DeadLetter struct {
	ID           int64             `json:"id"`
	Service      string            `json:"service"`
	Subscription string            `json:"subscription,omitempty"`
	EventID      string            `json:"event_id,omitempty"`
	Type         string            `json:"type"`
	Version      int               `json:"version"`
	Reason       string            `json:"reason"`
	LastError    string            `json:"last_error,omitempty"`
	Attempts     int               `json:"attempts"`
	Time         time.Time         `json:"time"`
	Key          string            `json:"partition_key,omitempty"`
	Header       map[string]string `json:"header,omitempty"`
	Data         []byte            `json:"data,omitempty"` // base64 in JSON
}

// List is dlq.list's reply.
type List struct {
	V           int          `json:"v"`
	DeadLetters []DeadLetter `json:"dead_letters"`
	// More reports that more dead letters match than the list holds.
	More bool `json:"more,omitempty"`
}

// Shown is dlq.show's reply.
type Shown struct {
	V          int        `json:"v"`
	DeadLetter DeadLetter `json:"dead_letter"`
}

// Show is dlq.show's request.
type Show struct {
	V  int   `json:"v"`
	ID int64 `json:"id"`
}

// Replay is dlq.replay's request.
type Replay struct {
	V      int    `json:"v"`
	Filter Filter `json:"filter"`
	// DryRun changes nothing: the reply says what a replay would do.
	DryRun bool `json:"dry_run,omitempty"`
}

// Replayed is dlq.replay's reply: the dead letters replayed (or, for a
// dry run, that would be), and the blast radius — how many events each
// subscription's handler runs again ("" for the relay's outbox).
type Replayed struct {
	V             int            `json:"v"`
	DryRun        bool           `json:"dry_run,omitempty"`
	DeadLetters   []DeadLetter   `json:"dead_letters"`
	Subscriptions map[string]int `json:"subscriptions"`
}

// Purge is dlq.purge's request. An empty Filter purges nothing unless All
// is set.
type Purge struct {
	V      int    `json:"v"`
	Filter Filter `json:"filter"`
	All    bool   `json:"all,omitempty"`
}

// Purged is dlq.purge's reply.
type Purged struct {
	V      int   `json:"v"`
	Purged int64 `json:"purged"`
}

// Stats is the stats endpoint's reply.
type Stats struct {
	V        int    `json:"v"`
	Service  string `json:"service"`
	Instance string `json:"instance"` // the instance that answered
	// OutboxBacklog counts the events committed and not yet published;
	// OutboxOldest is the age of the oldest (0 when none).
	OutboxBacklog int64             `json:"outbox_backlog"`
	OutboxOldest  time.Duration     `json:"outbox_oldest_ns"`
	Subscriptions []SubscriptionLag `json:"subscriptions"`
}

// SubscriptionLag is one subscription's lag at the broker.
type SubscriptionLag struct {
	Subscription string `json:"subscription"`
	Pending      int    `json:"pending"`     // not yet delivered
	AckPending   int    `json:"ack_pending"` // delivered, not yet acknowledged
}

// Manifest is the manifest endpoint's reply.
type Manifest struct {
	V        int              `json:"v"`
	Manifest catalog.Manifest `json:"manifest"`
}

// Request is what every endpoint without parameters takes.
type Request struct {
	V int `json:"v"`
}

// DeliveryQuery is the deliveries endpoint's request: the deliveries of a
// recipient, of an event, of a flow; empty fields match every one.
type DeliveryQuery struct {
	V             int    `json:"v"`
	Recipient     string `json:"recipient,omitempty"`
	EventID       string `json:"event_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Channel       string `json:"channel,omitempty"`
	State         string `json:"state,omitempty"`
	// Limit bounds the reply (default DefaultList, at most MaxList).
	Limit int `json:"limit,omitempty"`
}

// Delivery is one notification delivery in a notifier's log: a recipient
// on a channel, and what became of it.
type Delivery struct {
	ID            string `json:"id"`
	Route         string `json:"route"`
	EventID       string `json:"event_id"`
	EventType     string `json:"event_type"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Recipient     string `json:"recipient"`
	Channel       string `json:"channel"`
	Category      string `json:"category,omitempty"`
	Template      string `json:"template,omitempty"`
	State         string `json:"state"`
	// Reason says why it was suppressed, throttled, deferred or failed:
	// a preference, quiet hours, a suppression list, the provider's error.
	Reason    string    `json:"reason,omitempty"`
	Attempts  int       `json:"attempts"`
	Provider  string    `json:"provider,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	DigestID  string    `json:"digest_id,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	Sent      time.Time `json:"sent,omitzero"`
}

// Deliveries is the deliveries endpoint's reply, oldest first.
type Deliveries struct {
	V          int        `json:"v"`
	Deliveries []Delivery `json:"deliveries"`
	More       bool       `json:"more,omitempty"`
}
