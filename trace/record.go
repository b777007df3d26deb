// Package trace keeps the causal trace of herald events: an observer
// (herald.WithObserver) that turns every hop — record, translate, notify,
// publish, consume, handle, dead-letter, deliver — into a compact Record and
// appends it, asynchronously and in batches, to a bounded stream on the
// broker; and the readers that rebuild one business flow as a tree of events
// by causation (Collect, Build) or follow records live (Follow).
//
// Recording never slows or fails the business flow: Observe copies the
// record into a bounded buffer and returns; when the buffer is full the record
// is dropped and counted (Recorder.Dropped). On NATS JetStream the stream is
// <PREFIX>_TRACE, in memory unless natsjs.WithTraceStorage(natsjs.TraceOnFile),
// bounded by age and bytes (natsjs.ProvisionTrace); a Recorder creates it
// again when it is lost.
//
//	rec, _ := trace.NewRecorder(broker, trace.Config{Source: "orders"})
//	svc, _ := herald.New("orders", herald.WithObserver(rec), …)
//	rec.Start(ctx); defer rec.Close()
//
//	t, _ := trace.Collect(ctx, broker, correlationOrEventID)
//	trace.Build(t).Format(os.Stdout)
package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
)

// Record is one hop of one event: what the trace keeps.
type Record struct {
	Hop           herald.Hop     `json:"hop"`
	Service       string         `json:"service"`                // the service where the hop happened
	Subscription  string         `json:"subscription,omitempty"` // consume, handle, dead-letter
	EventID       string         `json:"event_id"`               // for deliver: the delivery's id
	Type          string         `json:"type"`
	Kind          envelope.Kind  `json:"kind"`
	CausationID   string         `json:"causation_id,omitempty"` // for deliver: the notification event
	CorrelationID string         `json:"correlation_id"`
	Time          time.Time      `json:"time"`        // when the hop began
	Duration      time.Duration  `json:"duration_ns"` // how long it took
	Outcome       herald.Outcome `json:"outcome"`
	Reason        string         `json:"reason,omitempty"` // dead-letter reason, delivery channel
	Attempt       int            `json:"attempt,omitempty"`
	Error         string         `json:"error,omitempty"` // the error, cut to MaxErrorLen bytes
}

// MaxErrorLen bounds the error text a record keeps.
const MaxErrorLen = 256

// FromObservation makes the record of o.
func FromObservation(o herald.Observation) Record {
	r := Record{
		Hop: o.Hop, Service: o.Service, Subscription: o.Subscription,
		EventID: o.Event.ID, Type: o.Event.Type, Kind: o.Event.Kind,
		CausationID: o.Event.CausationID, CorrelationID: o.Event.CorrelationID,
		Time: o.Start, Duration: o.Duration, Outcome: o.Outcome, Reason: o.Reason, Attempt: o.Attempt,
	}
	if o.Err != nil {
		r.Error = o.Err.Error()
		if len(r.Error) > MaxErrorLen {
			r.Error = r.Error[:MaxErrorLen]
		}
	}
	return r
}

// ErrMalformed is wrapped by the errors of DecodeBatch.
var ErrMalformed = errors.New("herald/trace: malformed trace batch")

// batchVersion is the first byte of an encoded batch.
const batchVersion = 1

// AppendRecord appends the binary encoding of r to a batch (started with
// NewBatch) and returns the extended batch.
func AppendRecord(b []byte, r Record) []byte {
	for _, s := range [...]string{string(r.Hop), r.Service, r.Subscription, r.EventID, r.Type, string(r.Kind),
		r.CausationID, r.CorrelationID, string(r.Outcome), r.Reason, r.Error} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, r.Time.UnixNano())
	b = binary.AppendVarint(b, int64(r.Duration))
	b = binary.AppendVarint(b, int64(r.Attempt))
	return b
}

// NewBatch returns an empty batch with room for size bytes.
func NewBatch(size int) []byte { return append(make([]byte, 0, size), batchVersion) }

// DecodeBatch calls fn with each record of an encoded batch, in order.
func DecodeBatch(b []byte, fn func(Record) error) error {
	if len(b) == 0 || b[0] != batchVersion {
		return fmt.Errorf("%w: unknown version", ErrMalformed)
	}
	b = b[1:]
	for len(b) > 0 {
		var r Record
		var strs [11]string
		for i := range strs {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				return fmt.Errorf("%w: truncated field", ErrMalformed)
			}
			strs[i] = string(b[k : k+int(n)])
			b = b[k+int(n):]
		}
		var ints [3]int64
		for i := range ints {
			v, k := binary.Varint(b)
			if k <= 0 {
				return fmt.Errorf("%w: truncated number", ErrMalformed)
			}
			ints[i] = v
			b = b[k:]
		}
		r.Hop, r.Service, r.Subscription, r.EventID, r.Type = herald.Hop(strs[0]), strs[1], strs[2], strs[3], strs[4]
		r.Kind, r.CausationID, r.CorrelationID, r.Outcome, r.Reason, r.Error = envelope.Kind(strs[5]), strs[6], strs[7], herald.Outcome(strs[8]), strs[9], strs[10]
		r.Time, r.Duration, r.Attempt = time.Unix(0, ints[0]), time.Duration(ints[1]), int(ints[2])
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}
