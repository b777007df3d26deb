package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// Publish sends every envelope asynchronously, with at most WithMaxInFlight
// unacknowledged publishes (over all concurrent calls), then waits for each
// acknowledgement. errs[i] is nil once events[i] is stored. Events are
// deduplicated by ID within the duplicate window. Failures worth retrying
// (timeouts, a full in-flight window, a disconnected or restarting server)
// wrap broker.ErrTransient; a missing stream wraps broker.ErrNotProvisioned;
// a connection closed for good wraps broker.ErrClosed. A domain event, a
// malformed type, a header value that NATS cannot carry unchanged, and an
// event over the server's max payload (see EventSize) wrap
// broker.ErrRejected: sending them again cannot succeed. (The events a
// failure stops from being sent wrap its error too.)
//
// In a cluster, the events awaiting the acknowledgement of a stream's leader
// that dies fail (transient) when the stream elects its next leader, not
// after the publish timeout; after such a failure Publish sends the first
// event of the stream alone, waiting up to the publish timeout for a leader
// to store it, before it pipelines the rest (see the package documentation,
// Clusters).
//
// With WithAtomicBatches each run of events bound for one stream goes as one
// atomic batch (all stored or none, one fsync on a server that syncs always);
// a batch the server refuses as a batch is sent again event by event.
func (b *Broker) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	errs := make([]error, len(events))
	if err := b.enter(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer b.active.Done()
	if b.cfg.atomicBatches {
		b.publishAtomic(ctx, events, errs)
	} else {
		b.publishEach(ctx, events, errs)
	}
	return errs
}

// publishEach publishes events one message each, pipelined, and sets errs.
func (b *Broker) publishEach(ctx context.Context, events []*envelope.Envelope, errs []error) {
	// Order: the server stores what one connection sends in order, so the
	// stored events of a batch are a prefix of it — unless the connection
	// drops and comes back mid-batch: then events on the wire are lost and
	// later ones would be stored after the reconnect. So after the first
	// failure, or once the connection has reconnected since the batch began,
	// nothing more of the batch is sent; the caller retries the rest, in order.
	// Any failure stops the batch, not only transient ones: sending later
	// events of the failed one's key would store them before it. A stream
	// that failed a publish or elected a new leader takes one event alone
	// first (see probe).
	reconnects := b.nc.Stats().Reconnects
	var stopped error
	futures := make([]jetstream.PubAckFuture, len(events))
	elected := make([]<-chan struct{}, len(events)) // closed when the event's stream elects a leader
	streams := make([]string, len(events))
	missing := map[string]bool{} // streamMissing's answers in this call
	for i, e := range events {
		if stopped == nil && b.nc.Stats().Reconnects != reconnects {
			stopped = fmt.Errorf("herald/natsjs: %w: the connection was re-established during the batch", broker.ErrTransient)
		}
		if stopped != nil {
			errs[i] = fmt.Errorf("herald/natsjs: publish %s: not sent after an earlier failure: %w", eventID(e), stopped)
			continue
		}
		if err := ctx.Err(); err != nil {
			errs[i] = ctxErr("publish", eventID(e), err)
			continue
		}
		m, err := b.eventMsg(e, "", "")
		if err != nil {
			errs[i] = fmt.Errorf("herald/natsjs: publish %s: %w: %w", eventID(e), broker.ErrRejected, err)
			stopped = errs[i]
			continue
		}
		streams[i] = b.eventStream(e)
		w := b.watch(streams[i])
		if w != nil && w.isUnsettled() {
			if err := b.probe(ctx, w, streams[i], eventID(e), m); err != nil {
				errs[i] = err
				stopped = err
			}
			continue
		}
		if w != nil {
			elected[i], _ = w.current()
		}
		f, err := b.publishAsync(ctx, m)
		if err != nil {
			errs[i] = b.publishErrIn(ctx, eventID(e), streams[i], err, missing)
			stopped = errs[i]
			b.unsettle(streams[i], errs[i])
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = b.publishErrIn(ctx, eventID(events[i]), streams[i], err, missing)
		case <-elected[i]:
			select {
			case <-f.Ok(): // stored just before
			default:
				errs[i] = leaderErr(eventID(events[i]), streams[i])
			}
		case <-ctx.Done():
			errs[i] = ctxErr("publish", eventID(events[i]), ctx.Err())
		}
		b.unsettle(streams[i], errs[i])
	}
}

// unsettle marks stream for a probe after a transient failure of one of
// its publishes.
func (b *Broker) unsettle(stream string, err error) {
	if err != nil && errors.Is(err, broker.ErrTransient) {
		if w := b.watch(stream); w != nil {
			w.unsettle()
		}
	}
}

// probePause is how long a probe waits before it sends its event again to
// a stream that has no leader, unless the stream elects one first.
const probePause = 250 * time.Millisecond

// probe sends m (event id) alone to stream and waits until the stream
// stores it. While the stream has no leader (no responders, no answer, a
// leader elected before it answered, the cluster temporarily unavailable)
// it sends it again when the stream elects a leader or after probePause,
// for at most the publish timeout; other failures — the connection down, a
// permanent error — return at once, as any publish's.
func (b *Broker) probe(ctx context.Context, w *streamWatch, stream, id string, m *nats.Msg) error {
	deadline := time.Now().Add(b.cfg.publishTimeout)
	var missing chan bool // streamMissing's answer, asked once
	for {
		elected, epoch := w.current()
		f, err := b.publishAsync(ctx, m)
		if err == nil {
			t := time.NewTimer(max(time.Until(deadline), time.Millisecond))
			select {
			case <-f.Ok():
				t.Stop()
				w.settle(epoch)
				return nil
			case err = <-f.Err():
			case <-elected:
				select {
				case <-f.Ok():
					t.Stop()
					_, now := w.current()
					w.settle(now)
					return nil
				default:
					err = errLeaderChanged
				}
			case <-t.C:
				err = jetstream.ErrAsyncPublishTimeout
			case <-ctx.Done():
				t.Stop()
				return ctxErr("publish", id, ctx.Err())
			}
			t.Stop()
		}
		if !leaderless(err) {
			return b.publishErr(ctx, id, stream, err)
		}
		if missing == nil && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) {
			// Ask once, without holding the probe up: a cluster without a
			// meta leader does not answer for seconds.
			missing = make(chan bool, 1)
			go func() { missing <- b.streamMissing(ctx, stream) }()
		}
		if time.Now().After(deadline) {
			if errors.Is(err, errLeaderChanged) {
				return leaderErr(id, stream)
			}
			return b.publishErr(ctx, id, stream, err)
		}
		next, _ := w.current()
		t := time.NewTimer(probePause)
		select {
		case <-next:
		case <-t.C:
		case gone := <-missing:
			if gone {
				t.Stop()
				return fmt.Errorf("herald/natsjs: publish %s: %w: no stream %s (%w)", id, broker.ErrNotProvisioned, stream, err)
			}
		case <-ctx.Done():
			t.Stop()
			return ctxErr("publish", id, ctx.Err())
		case <-b.closed:
			t.Stop()
			return fmt.Errorf("herald/natsjs: publish %s: %w", id, broker.ErrClosed)
		}
		t.Stop()
	}
}

// leaderless reports whether a publish that failed with err found its
// stream without a leader, for the while a cluster elects one.
func leaderless(err error) bool {
	switch {
	case errors.Is(err, errLeaderChanged),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}

// Headers of JetStream's atomic batch publishing (ADR-50).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// maxAtomicBatch is the most events a NATS server takes in one atomic batch
// by default.
const maxAtomicBatch = 1000

// publishAtomic publishes events as atomic batches, one per run of events
// bound for the same stream, one after the other: a batch is sent only once
// the one before it is stored, so a failure stops what follows it, as in
// publishEach.
func (b *Broker) publishAtomic(ctx context.Context, events []*envelope.Envelope, errs []error) {
	msgs := make([]*nats.Msg, len(events))
	streams := make([]string, len(events))
	n := len(events)
	for i, e := range events {
		m, err := b.eventMsg(e, "", "")
		if err != nil {
			errs[i] = fmt.Errorf("herald/natsjs: publish %s: %w: %w", eventID(e), broker.ErrRejected, err)
			n = i
			break
		}
		msgs[i] = m
		streams[i] = b.eventStream(e)
	}
	stop := func(from int, cause error) {
		for j := from; j < len(events); j++ {
			if errs[j] == nil {
				errs[j] = fmt.Errorf("herald/natsjs: publish %s: not sent after an earlier failure: %w", eventID(events[j]), cause)
			}
		}
	}
	for start := 0; start < n; {
		end := start + 1
		for end < n && end-start < maxAtomicBatch && streams[end] == streams[start] {
			end++
		}
		err := b.commitBatch(ctx, streams[start], msgs[start:end])
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
		case errors.As(err, &apiErr), errors.Is(err, nats.ErrMaxPayload):
			// Refused as a batch (an event already stored, atomic
			// publishing off, a server limit, one event too large to
			// send): nothing of it is stored, so send it event by event,
			// which drops duplicates and tells which event failed.
			b.log.Debug("herald/natsjs: atomic batch refused, publishing its events one by one", "events", end-start, "err", err)
			b.publishEach(ctx, events[start:end], errs[start:end])
			for j := start; j < end; j++ {
				if errs[j] != nil {
					stop(j, errs[j])
					return
				}
			}
		default:
			for j := start; j < end; j++ {
				errs[j] = b.eventErr(ctx, events[j], err)
			}
			stop(end, errs[start])
			return
		}
		start = end
	}
	if n < len(events) {
		stop(n, errs[n])
	}
}

// commitBatch sends msgs as one atomic batch and waits until the server
// stored all of them (nil) or none.
func (b *Broker) commitBatch(ctx context.Context, stream string, msgs []*nats.Msg) error {
	id := nuid.Next()
	reconnects := b.nc.Stats().Reconnects
	for i, m := range msgs {
		m.Header[hdrBatchID] = []string{id}
		m.Header[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
		if i < len(msgs)-1 {
			// No reply: the commit's answer covers the whole batch.
			if err := b.nc.PublishMsg(m); err != nil {
				return err
			}
			continue
		}
		m.Header[hdrBatchCommit] = []string{"1"}
		if b.nc.Stats().Reconnects != reconnects {
			return fmt.Errorf("%w: the connection was re-established during the batch", nats.ErrDisconnected)
		}
		var elected <-chan struct{} // a commit lost with the stream's leader fails at its election
		if w := b.watch(stream); w != nil {
			elected, _ = w.current()
		}
		f, err := b.publishAsync(ctx, m)
		if err != nil {
			return err
		}
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-elected:
			select {
			case <-f.Ok():
				return nil
			default:
				return fmt.Errorf("%w: %w", nats.ErrTimeout, errLeaderChanged)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

var noRetry = jetstream.WithRetryAttempts(0)

// publishAsync hands m to the asynchronous publisher, waiting (up to the
// publish timeout, and while ctx lives) for room in the in-flight window.
func (b *Broker) publishAsync(ctx context.Context, m *nats.Msg) (jetstream.PubAckFuture, error) {
	var deadline time.Time
	for {
		// No retry of nats.go's own after "no responders": it would send
		// each event of a pipelined batch again on its own timer, out of
		// the batch's order; probe does it in order.
		f, err := b.js.PublishMsgAsync(m, noRetry)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return f, err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(b.cfg.publishTimeout)
		}
		if ctx.Err() != nil || time.Now().After(deadline) || b.isClosed.Load() {
			return nil, err
		}
	}
}

func eventID(e *envelope.Envelope) string {
	if e == nil {
		return "<nil>"
	}
	return e.ID
}

func ctxErr(op, id string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("herald/natsjs: %s %s: %w: %w", op, id, broker.ErrTransient, err)
	}
	return fmt.Errorf("herald/natsjs: %s %s: %w", op, id, err)
}

// publishErr classifies the failure of a publish of id to stream.
func (b *Broker) publishErr(ctx context.Context, id, stream string, err error) error {
	return b.publishErrIn(ctx, id, stream, err, nil)
}

// publishErrIn is publishErr remembering in missing (if not nil) whether
// each stream it asked about is missing, so that a batch asks once.
func (b *Broker) publishErrIn(ctx context.Context, id, stream string, err error, missing map[string]bool) error {
	switch {
	case b.isClosed.Load() && (errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, jetstream.ErrJetStreamPublisherClosed)):
		return fmt.Errorf("herald/natsjs: publish %s: %w: %w", id, broker.ErrClosed, err)
	case reconnecting(err):
		return fmt.Errorf("herald/natsjs: publish %s: %w: %w", id, broker.ErrTransient, unreachable(err))
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		if stream != "" && b.streamMissingIn(ctx, stream, missing) {
			return fmt.Errorf("herald/natsjs: publish %s: %w: no stream %s (%w)", id, broker.ErrNotProvisioned, stream, err)
		}
		return fmt.Errorf("herald/natsjs: publish %s: %w: %w", id, broker.ErrTransient, err)
	case rejected(err):
		// Before transient: the file store's "message too large" comes as a
		// 503, which would otherwise read as the server being unavailable.
		return fmt.Errorf("herald/natsjs: publish %s: %w: %w", id, broker.ErrRejected, err)
	case transient(b.nc, err):
		return fmt.Errorf("herald/natsjs: publish %s: %w: %w", id, broker.ErrTransient, err)
	case b.nc.IsClosed():
		// The connection is gone for good (an embedded server that shut
		// down), whatever err says (nats.go does not always wrap
		// nats.ErrConnectionClosed): no fault of this event's.
		return fmt.Errorf("herald/natsjs: publish %s: %w: %w", id, broker.ErrClosed, err)
	default:
		return fmt.Errorf("herald/natsjs: publish %s: %w", id, err)
	}
}

// eventStream returns the stream of e ("" for a kind that has none): of its
// partition, for an integration event.
func (b *Broker) eventStream(e *envelope.Envelope) string {
	s, _ := b.names.stream(e.Kind, b.names.partitionOf(e.Kind, e.Key))
	return s
}

// eventErr classifies the failure of a publish of e to its stream.
func (b *Broker) eventErr(ctx context.Context, e *envelope.Envelope, err error) error {
	stream := ""
	if e != nil {
		stream = b.eventStream(e)
	}
	return b.publishErr(ctx, eventID(e), stream, err)
}

// reconnecting reports whether a call failed with err because the
// connection is down and reconnecting. Without a reconnect buffer (the
// default, WithReconnectBuffer) nats.go refuses every publish meanwhile
// with "nats: outbound buffer limit exceeded", which names neither cause.
func reconnecting(err error) bool {
	return errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// unreachableError replaces nats.go's message for a call made while the
// connection is reconnecting; it unwraps to nats.go's error.
type unreachableError struct{ cause error }

func (e *unreachableError) Error() string {
	return "the NATS server is unreachable: disconnected, reconnecting"
}

func (e *unreachableError) Unwrap() error { return e.cause }

func unreachable(err error) error { return &unreachableError{cause: err} }

// transient reports whether a publish that failed with err is worth retrying.
func transient(nc *nats.Conn, err error) bool {
	switch {
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrSlowConsumer),
		errors.Is(err, nats.ErrStaleConnection):
		return true
	case errors.Is(err, nats.ErrConnectionClosed):
		// Closed by a failed reconnect attempt but still reconnecting.
		return nc != nil && !nc.IsClosed()
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.Code >= 500:
			return true // e.g. "JetStream system temporarily unavailable", no quorum
		case apiErr.ErrorCode == jsErrCodeStreamSealed:
			// Every event would meet it, not this one only: an operator's
			// decision to undo, never a reason to park the outbox row by row.
			return true
		}
	}
	return false
}

// jsErrCodeStreamSealed is the server's "invalid operation on sealed
// stream" (nats.go has no constant for it).
const jsErrCodeStreamSealed jetstream.ErrorCode = 10109

// streamMissingIn is streamMissing asking once per stream of missing (if
// not nil).
func (b *Broker) streamMissingIn(ctx context.Context, stream string, missing map[string]bool) bool {
	if missing == nil {
		return b.streamMissing(ctx, stream)
	}
	gone, ok := missing[stream]
	if !ok {
		gone = b.streamMissing(ctx, stream)
		missing[stream] = gone
	}
	return gone
}

// streamMissing reports whether stream does not exist. The meta leader
// answers at once for a missing stream; a stream that exists but is
// electing a leader may get no answer, so the wait is short.
func (b *Broker) streamMissing(ctx context.Context, stream string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, err := b.js.Stream(ctx, stream)
	return errors.Is(err, jetstream.ErrStreamNotFound)
}

// eventMsg maps e onto a NATS message in CloudEvents binary mode: the
// attributes as headers, Data as the body, and the envelope ID (or msgID) as
// the Nats-Msg-Id deduplication header. subject "" means the event's own
// subject.
func (b *Broker) eventMsg(e *envelope.Envelope, subject, msgID string) (*nats.Msg, error) {
	if e == nil {
		return nil, errors.New("nil envelope")
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	if subject == "" {
		s, err := b.names.eventSubject(e.Kind, e.Type, b.names.partitionOf(e.Kind, e.Key))
		if err != nil {
			return nil, err
		}
		subject = s
	} else if err := validType(e.Type); err != nil {
		return nil, err
	}
	if msgID == "" {
		msgID = e.ID
	}
	// The values share one backing array; each header's slice is capped so
	// that an append to one cannot overwrite the next.
	vals := make([]string, 0, maxHeaders)
	hdr := make(nats.Header, maxHeaders)
	for k, v := range envelope.BinaryHeaders(e) {
		if err := wireSafe(v); err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		vals = append(vals, v)
		hdr[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	vals = append(vals, msgID)
	hdr[jetstream.MsgIDHeader] = vals[len(vals)-1:]
	return &nats.Msg{Subject: subject, Header: hdr, Data: e.Data}, nil
}

// maxHeaders is the most headers an event message carries: the envelope's
// attributes and Nats-Msg-Id.
const maxHeaders = 14

// wireSafe rejects header values NATS would alter: it trims surrounding
// spaces and turns CR and LF into spaces. envelope.BinaryHeaders
// percent-encodes such characters, so this is a guard, not a rule users
// meet.
func wireSafe(v string) error {
	if v == "" {
		return nil
	}
	if strings.ContainsAny(v, "\r\n") {
		return errors.New("value contains CR or LF, which NATS headers cannot carry")
	}
	if c := v[0]; c == ' ' || c == '\t' {
		return fmt.Errorf("value %q starts with white space, which NATS headers drop", v)
	}
	if c := v[len(v)-1]; c == ' ' || c == '\t' {
		return fmt.Errorf("value %q ends with white space, which NATS headers drop", v)
	}
	return nil
}

// Replay publishes e on the replay subject of the subscription, which only
// that subscription's consumer reads. The message gets a fresh Nats-Msg-Id
// (the envelope ID plus ":replay:" and a unique suffix) so the duplicate
// window does not drop it; the envelope itself is unchanged. e.Kind selects
// the stream and, for an integration event, the partition of e.Key the
// partition's stream and consumer (Consume of that partition receives it); a
// subscription that Provision did not create on it fails with an error
// wrapping broker.ErrNotProvisioned.
func (b *Broker) Replay(ctx context.Context, service, subscription string, e *envelope.Envelope) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	ctx, stop := b.bind(ctx)
	defer stop()

	if err := validName("service", service); err != nil {
		return fmt.Errorf("herald/natsjs: replay: %w", err)
	}
	if err := validName("subscription", subscription); err != nil {
		return fmt.Errorf("herald/natsjs: replay: %w", err)
	}
	if e == nil {
		return errors.New("herald/natsjs: replay: nil envelope")
	}
	p := b.names.partitionOf(e.Kind, e.Key)
	stream, err := b.names.stream(e.Kind, p)
	if err != nil {
		return fmt.Errorf("herald/natsjs: replay %s: %w", e.ID, err)
	}
	durable := b.names.durable(e.Kind, service, subscription, p)
	key := stream + "/" + durable
	if _, ok := b.replayTargets.Load(key); !ok {
		if _, err := b.consumer(ctx, stream, durable); err != nil {
			return fmt.Errorf("herald/natsjs: replay %s to %s/%s: %w", e.ID, service, subscription, err)
		}
		b.replayTargets.Store(key, struct{}{})
	}
	subj, err := b.names.replaySubject(e.Kind, ConsumerName(service, subscription), p)
	if err != nil {
		return err
	}
	m, err := b.eventMsg(e, subj, e.ID+":replay:"+nuid.Next())
	if err != nil {
		return fmt.Errorf("herald/natsjs: replay %s: %w", e.ID, err)
	}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		return b.eventErr(ctx, e, err)
	}
	return nil
}

// deadLetterDoc is the JSON body of a dead letter.
type deadLetterDoc struct {
	Service      string            `json:"service"`
	Subscription string            `json:"subscription"`
	Reason       string            `json:"reason"`
	LastError    string            `json:"last_error,omitempty"`
	Attempts     int               `json:"attempts"`
	Time         time.Time         `json:"time"`
	Event        *eventDoc         `json:"event,omitempty"`
	RawHeader    map[string]string `json:"raw_header"`
	RawData      []byte            `json:"raw_data"` // base64
}

// eventDoc lists the attributes of a dead-lettered event (its data is in
// RawData).
type eventDoc struct {
	ID              string    `json:"id"`
	Type            string    `json:"type"`
	Version         int       `json:"version"`
	Kind            string    `json:"kind"`
	Source          string    `json:"source"`
	Key             string    `json:"partitionkey,omitempty"`
	Time            time.Time `json:"time"`
	CorrelationID   string    `json:"correlationid,omitempty"`
	CausationID     string    `json:"causationid,omitempty"`
	TraceParent     string    `json:"traceparent,omitempty"`
	TraceState      string    `json:"tracestate,omitempty"`
	DataContentType string    `json:"datacontenttype,omitempty"`
}

// Headers added to a dead letter, besides the original ones.
const (
	HeaderDLQReason       = "herald-dlq-reason"
	HeaderDLQService      = "herald-dlq-service"
	HeaderDLQSubscription = "herald-dlq-subscription"
	HeaderDLQAttempts     = "herald-dlq-attempts"
)

// PublishDeadLetter stores d on <prefix>.dlq.<service>.<subscription> as a
// JSON document (service, subscription, reason, last_error, attempts, time,
// the event's attributes when it was decoded, raw_header, and raw_data in
// base64). The original headers are copied onto the message too, except
// content-type, which is application/json; herald-dlq-* headers carry
// reason, service, subscription and attempts. Re-publishing the same
// DeadLetter within the duplicate window is deduplicated.
func (b *Broker) PublishDeadLetter(ctx context.Context, d broker.DeadLetter) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	ctx, stop := b.bind(ctx)
	defer stop()

	if err := validName("service", d.Service); err != nil {
		return fmt.Errorf("herald/natsjs: dead letter: %w", err)
	}
	if err := validName("subscription", d.Subscription); err != nil {
		return fmt.Errorf("herald/natsjs: dead letter: %w", err)
	}
	if d.Time.IsZero() {
		d.Time = time.Now()
	}
	doc := deadLetterDoc{
		Service: d.Service, Subscription: d.Subscription, Reason: d.Reason, LastError: d.LastError,
		Attempts: d.Attempts, Time: d.Time.UTC(), RawHeader: d.RawHeader, RawData: d.RawData,
	}
	if doc.RawHeader == nil {
		doc.RawHeader = map[string]string{}
	}
	id := d.RawHeader[envelope.HeaderID]
	if e := d.Event; e != nil {
		id = e.ID
		doc.Event = &eventDoc{
			ID: e.ID, Type: e.Type, Version: e.Version, Kind: string(e.Kind), Source: e.Source, Key: e.Key,
			Time: e.Time.UTC(), CorrelationID: e.CorrelationID, CausationID: e.CausationID,
			TraceParent: e.TraceParent, TraceState: e.TraceState, DataContentType: e.DataContentType,
		}
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("herald/natsjs: dead letter: %w", err)
	}
	hdr := make(nats.Header, len(d.RawHeader)+6)
	for k, v := range d.RawHeader {
		if validHeaderKey(k) {
			hdr[k] = []string{v}
		}
	}
	hdr[envelope.HeaderContentType] = []string{"application/json"}
	hdr[HeaderDLQReason] = []string{d.Reason}
	hdr[HeaderDLQService] = []string{d.Service}
	hdr[HeaderDLQSubscription] = []string{d.Subscription}
	hdr[HeaderDLQAttempts] = []string{strconv.Itoa(d.Attempts)}
	hdr[jetstream.MsgIDHeader] = []string{"dlq:" + ConsumerName(d.Service, d.Subscription) + ":" + id + ":" +
		strconv.FormatInt(d.Time.UnixNano(), 10)}
	m := &nats.Msg{Subject: b.names.dlqSubject(d.Service, d.Subscription), Header: hdr, Data: body}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		return b.publishErr(ctx, "dead letter of "+id, b.names.dlqStream, err)
	}
	return nil
}

// validHeaderKey mirrors the header keys nats.go accepts.
func validHeaderKey(k string) bool {
	if k == "" || strings.EqualFold(k, jetstream.MsgIDHeader) {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c < 33 || c > 126 || strings.IndexByte("\"()/,:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
