// Package envelope defines herald's wire envelope: the attributes every event
// carries (CloudEvents 1.0 plus correlation and causation), the codecs that turn
// a Go value into its data, the lossless mapping onto CloudEvents binary
// mode (headers + body) that every transport uses, and Decode, which also
// reads what other CloudEvents producers send (binary mode without herald's
// extensions, structured mode).
package envelope

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Kind is the tier an event belongs to.
type Kind string

// The three kinds of events.
const (
	KindDomain       Kind = "domain"
	KindIntegration  Kind = "integration"
	KindNotification Kind = "notification"
)

// Valid reports whether k is one of the three kinds.
func (k Kind) Valid() bool {
	return k == KindDomain || k == KindIntegration || k == KindNotification
}

// ErrInvalid is wrapped by every error that reports a malformed envelope.
var ErrInvalid = errors.New("herald/envelope: invalid envelope")

// Envelope is one event with all its attributes. Data holds the encoded
// payload; DataContentType names its codec (application/json by default).
type Envelope struct {
	ID              string    // ULID, time-sortable, unique per event
	Type            string    // contract name, e.g. "shop.order.confirmed"
	Version         int       // contract version (>= 1)
	Kind            Kind      // domain, integration or notification
	Source          string    // the service that recorded the event
	Key             string    // partition key (may be empty); CloudEvents "partitionkey"
	Time            time.Time // when the event was recorded (UTC)
	CorrelationID   string    // the business flow the event belongs to
	CausationID     string    // the event that caused this one (empty for a root)
	TraceParent     string    // W3C traceparent captured when recorded
	TraceState      string    // W3C tracestate, optional
	DataContentType string    // media type of Data
	Data            []byte    // the encoded payload
}

// Validate reports the first attribute that makes e unusable on the wire: an
// empty ID, Type or Source, a Version below 1, an unknown Kind, a zero Time or
// one whose UTC year is outside 0000-9999 (RFC 3339 cannot express it), or an
// attribute longer than 4096 bytes. The error wraps ErrInvalid and names the
// attribute. Every envelope that Validates survives ToBinary and FromBinary
// unchanged.
func (e *Envelope) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalid)
	case len(e.ID) > maxHeaderValue:
		return fmt.Errorf("%w: id is %d bytes, longer than %d", ErrInvalid, len(e.ID), maxHeaderValue)
	case e.Type == "":
		return fmt.Errorf("%w: event %s: empty type", ErrInvalid, e.ID)
	case len(e.Type) > maxHeaderValue:
		return fmt.Errorf("%w: event %s: type is %d bytes, longer than %d", ErrInvalid, e.ID, len(e.Type), maxHeaderValue)
	case !utf8.ValidString(e.ID):
		return fmt.Errorf("%w: id %q is not valid UTF-8", ErrInvalid, e.ID)
	case !utf8.ValidString(e.Type):
		return fmt.Errorf("%w: event %s: type %q is not valid UTF-8", ErrInvalid, e.ID, e.Type)
	case e.Version < 1:
		return fmt.Errorf("%w: event %s (%s): version %d < 1", ErrInvalid, e.ID, e.Type, e.Version)
	case !e.Kind.Valid():
		return fmt.Errorf("%w: event %s (%s): unknown kind %q", ErrInvalid, e.ID, e.Type, e.Kind)
	case e.Source == "":
		return fmt.Errorf("%w: event %s (%s): empty source", ErrInvalid, e.ID, e.Type)
	case e.Time.IsZero():
		return fmt.Errorf("%w: event %s (%s): zero time", ErrInvalid, e.ID, e.Type)
	}
	if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%w: event %s (%s): time %s is outside years 0000-9999 UTC", ErrInvalid, e.ID, e.Type, e.Time.UTC())
	}
	for _, a := range [...]struct{ name, value string }{
		{"source", e.Source},
		{"partitionkey", e.Key},
		{"correlationid", e.CorrelationID},
		{"causationid", e.CausationID},
		{"traceparent", e.TraceParent},
		{"tracestate", e.TraceState},
		{"datacontenttype", e.DataContentType},
	} {
		if len(a.value) > maxHeaderValue {
			return fmt.Errorf("%w: event %s (%s): %s is %d bytes, longer than %d", ErrInvalid, e.ID, e.Type, a.name, len(a.value), maxHeaderValue)
		}
		if !utf8.ValidString(a.value) {
			return fmt.Errorf("%w: event %s (%s): %s is not valid UTF-8", ErrInvalid, e.ID, e.Type, a.name)
		}
	}
	return nil
}

// entropy is a monotonic ULID source shared by all goroutines; ulid's
// monotonic reader is not safe for concurrent use, hence the mutex.
var (
	entropyMu sync.Mutex
	entropy   = ulid.Monotonic(rand.Reader, 0)
)

// The times a ULID can hold: [unixEpoch, ulidEnd).
var (
	unixEpoch = time.Unix(0, 0)
	ulidEnd   = ulid.Time(ulid.MaxTime()).Add(time.Millisecond)
)

// NewID returns a new ULID string (26 characters, Crockford base32) whose
// timestamp is t in Unix milliseconds. It is safe for concurrent use. IDs
// returned for the same or increasing times are strictly increasing, so they
// sort by creation time; an ID for an earlier t sorts before those already
// returned for later times. NewID panics if t is before the Unix epoch or
// after ulid.MaxTime (year 10889).
func NewID(t time.Time) string {
	// ulid.Timestamp wraps around for times before 1970, which could turn an
	// absurd time into a plausible one; reject the range explicitly.
	if t.Before(unixEpoch) || !t.Before(ulidEnd) {
		panic(fmt.Errorf("herald/envelope: NewID(%s): %w", t, ulid.ErrBigTime))
	}
	entropyMu.Lock()
	defer entropyMu.Unlock()
	return ulid.MustNew(ulid.Timestamp(t), entropy).String()
}
