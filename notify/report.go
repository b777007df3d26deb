package notify

import (
	"container/list"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/observehook"
)

// DeliveryError is the Err of a deliver observation (herald.HopDeliver)
// whose delivery did not end sent or delivered: failed, suppressed,
// throttled, or waiting for a retry. Reason is the reason code (one of the
// Reason constants: ReasonNoAddress, ReasonPermanent, ReasonRetrying, …),
// so observers can count by it without parsing text; Err is the provider's
// error or, without one, the delivery's Reason.
type DeliveryError struct {
	Reason string
	Err    error
}

func (e *DeliveryError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *DeliveryError) Unwrap() error { return e.Err }

// reasonCodes is the fixed set of reason codes.
var reasonCodes = map[string]bool{}

func init() {
	for _, c := range []string{ReasonUnknownRecipient, ReasonNoAddress, ReasonInvalidAddress, ReasonOptedOut,
		ReasonSuppressedAddress, ReasonQuietHours, ReasonThrottled, ReasonDigest, ReasonFallback, ReasonFallbackNotNeeded,
		ReasonTemplate, ReasonPermanent, ReasonGone, ReasonBounced, ReasonExhausted, ReasonExpired, ReasonNoRoute, ReasonRetrying} {
		reasonCodes[c] = true
	}
}

// ReasonCode returns the reason code a delivery's Reason starts with —
// "no-address" for "no-address: bob has no sms address", and for
// "no-address" itself — or "" when it starts with none of the Reason
// constants. Its results are a fixed set, fit for a metric's label.
func ReasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	if reasonCodes[code] {
		return code
	}
	return ""
}

// deliveryError is the Err of a deliver observation: nil for sent and
// delivered, else a *DeliveryError with the code of reason (ReasonRetrying
// for a retry) wrapping lastErr, or reason when there is no provider error.
func deliveryError(state State, retry bool, reason, lastErr string) error {
	code := ReasonCode(reason)
	switch {
	case retry:
		code = ReasonRetrying
	case state == Sent || state == Delivered:
		return nil
	}
	switch {
	case lastErr != "":
		return &DeliveryError{Reason: code, Err: errors.New(lastErr)}
	case reason != "":
		return &DeliveryError{Reason: code, Err: errors.New(reason)}
	}
	return nil
}

// deliverObservation is the deliver hop of delivery d of the notifier's
// service: the event is the delivery (its id, caused by the notification
// event, in the event's flow); Reason is the channel, Recipient the
// recipient.
func (n *Notifier) deliverObservation(d *Delivery) herald.Observation {
	return herald.Observation{
		Hop: herald.HopDeliver,
		// The delivery log keeps the event's type, not its version.
		Event: envelope.Envelope{ID: d.ID, Type: d.EventType, Version: 1, Kind: envelope.KindNotification,
			Source: n.svc.Name(), Time: d.CreatedAt, CorrelationID: d.CorrelationID, CausationID: d.EventID},
		Reason:    d.Channel,
		Recipient: d.Recipient,
	}
}

// decideObservation is the decide hop of the row d a decision inserted
// (herald.HopDecide): as deliverObservation, with the state d was decided
// in as the Outcome and, for a delivery the decision ended, its
// *DeliveryError.
func (n *Notifier) decideObservation(d *row) herald.Observation {
	ob := n.deliverObservation(&d.Delivery)
	ob.Hop, ob.Start, ob.Outcome = herald.HopDecide, d.CreatedAt, herald.Outcome(d.State)
	if ends(d.State) {
		ob.Err = deliveryError(d.State, false, d.Reason, "")
	}
	return ob
}

// A decision that ends a delivery (failed: unknown recipient, no or an
// invalid address; suppressed: opted out, suppressed address; throttled)
// never reaches the worker, so the worker cannot report it. It is reported
// — a deliver observation, and for a missing address a log line — once the
// decision's transaction is seen committed: the decision runs inside the
// subscription's transaction, which may still roll back (a failing handler
// in the same consumer batch, the database), and then runs again with new
// delivery ids. So the decider only remembers the delivery (decided),
// and the worker, after each round, looks the remembered ids up in the
// delivery log (reportDecided): those found are reported and forgotten,
// those not found after decidedTTL are forgotten unreported (rolled back).
// The memory holds at most maxDecided deliveries; beyond, decisions go
// unreported (and that is logged once). Reports are made by the instance
// that decided, while it runs: decisions of an instance that stopped or
// crashed before seeing them committed go unreported.
const (
	maxDecided       = 4096
	decidedTTL       = 2 * time.Minute
	decidedBatch     = 256                   // ids looked up per query
	reportEvery      = 10 * time.Millisecond // at most one look-up per this, however busy the rounds
	maxNoAddressLogs = 4096                  // (recipient, channel) pairs remembered as logged
)

type decidedMemo struct {
	mu      sync.Mutex
	m       map[string]decidedEntry // by delivery id
	dropped bool                    // the memory overflowed (logged once)
}

type decidedEntry struct {
	d  Delivery
	at time.Time // wall clock: when it was decided
}

// ends reports whether a decision in state s ended the delivery.
func ends(s State) bool { return s == Failed || s == Suppressed || s == Throttled }

// add remembers d, decided at (wall clock) at. When the memory is full it
// drops d, and reports whether that is the first drop.
func (m *decidedMemo) add(d Delivery, at time.Time) (firstDrop bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[string]decidedEntry{}
	}
	if len(m.m) >= maxDecided {
		first := !m.dropped
		m.dropped = true
		return first
	}
	m.m[d.ID] = decidedEntry{d, at}
	return false
}

// some returns up to k remembered entries (any k, when there are more:
// those left out come in later calls), sorted by id, which is by decision
// time.
func (m *decidedMemo) some(k int) []decidedEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]decidedEntry, 0, min(k, len(m.m)))
	for _, e := range m.m {
		out = append(out, e)
		if len(out) == k {
			break
		}
	}
	slices.SortFunc(out, func(a, b decidedEntry) int { return strings.Compare(a.d.ID, b.d.ID) })
	return out
}

func (m *decidedMemo) forget(id string) {
	m.mu.Lock()
	delete(m.m, id)
	m.mu.Unlock()
}

// decided is called by the decider for every delivery row it inserted.
func (n *Notifier) decided(d *row) {
	if !ends(d.State) {
		return
	}
	if n.ended.add(d.Delivery, time.Now()) {
		n.log.Warn("too many decided deliveries wait to be seen committed (is the notifier started?); the excess is not reported to observers or logged",
			"limit", maxDecided)
	}
}

// reportDecided reports the remembered decisions whose transactions
// committed, and forgets those too old to be waiting for one.
func (n *Notifier) reportDecided(ctx context.Context) {
	batch := n.ended.some(decidedBatch)
	if len(batch) == 0 {
		return
	}
	q := "SELECT id FROM herald_notify_deliveries WHERE id IN (?" + strings.Repeat(", ?", len(batch)-1) + ")"
	args := make([]any, len(batch))
	for i, e := range batch {
		args[i] = e.d.ID
	}
	rows, err := n.st.DB().QueryContext(ctx, n.st.Rebind(q), args...)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("look up decided deliveries to report", "err", err)
		}
		return
	}
	found := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			break
		}
		found[id] = true
	}
	err = errors.Join(rows.Err(), rows.Close())
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("look up decided deliveries to report", "err", err)
		}
		return
	}
	for _, e := range batch {
		switch {
		case found[e.d.ID]:
			n.ended.forget(e.d.ID)
			n.reportEnded(ctx, e)
		case time.Since(e.at) > decidedTTL:
			n.ended.forget(e.d.ID) // rolled back; its retry decides anew
		}
	}
}

// reportEnded reports one committed decision that ended its delivery.
func (n *Notifier) reportEnded(ctx context.Context, e decidedEntry) {
	d := &e.d
	if ReasonCode(d.Reason) == ReasonNoAddress && n.noAddress.first(d.Recipient+"\x00"+d.Channel) {
		n.log.Warn("notification not delivered: the recipient has no address on the channel (logged once per recipient and channel)",
			"recipient", d.Recipient, "channel", d.Channel, "route", d.Route, "event_type", d.EventType,
			"event", d.EventID, "delivery", d.ID, "reason", d.Reason)
	}
	ob := n.deliverObservation(d)
	ob.Start, ob.Outcome = e.at, herald.Outcome(d.State)
	ob.Err = deliveryError(d.State, false, d.Reason, "")
	observehook.Observe(ctx, n.svc, ob)
}

// lru is a bounded memory of keys, least recently seen evicted first.
type lru struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of string, most recent at the front
	m   map[string]*list.Element
}

func newLRU(max int) *lru { return &lru{max: max, ll: list.New(), m: map[string]*list.Element{}} }

// first reports whether key is not in the memory, and puts it at the front.
func (l *lru) first(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[key]; ok {
		l.ll.MoveToFront(e)
		return false
	}
	l.m[key] = l.ll.PushFront(key)
	if l.ll.Len() > l.max {
		old := l.ll.Back()
		l.ll.Remove(old)
		delete(l.m, old.Value.(string))
	}
	return true
}
