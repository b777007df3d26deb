// Package envelope defines herald's wire envelope: the attributes every event
// carries (CloudEvents 1.0 plus correlation and causation), the codecs that turn
// a Go value into its data, and the lossless mapping onto CloudEvents binary
// mode (headers + body) that every transport uses.
package envelope

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

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

// Validate reports the first attribute that makes e unusable on the wire.
func (e *Envelope) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalid)
	case e.Type == "":
		return fmt.Errorf("%w: event %s: empty type", ErrInvalid, e.ID)
	case e.Version < 1:
		return fmt.Errorf("%w: event %s (%s): version %d < 1", ErrInvalid, e.ID, e.Type, e.Version)
	case !e.Kind.Valid():
		return fmt.Errorf("%w: event %s (%s): unknown kind %q", ErrInvalid, e.ID, e.Type, e.Kind)
	case e.Source == "":
		return fmt.Errorf("%w: event %s (%s): empty source", ErrInvalid, e.ID, e.Type)
	case e.Time.IsZero():
		return fmt.Errorf("%w: event %s (%s): zero time", ErrInvalid, e.ID, e.Type)
	}
	return nil
}

// entropy is a monotonic ULID source shared by all goroutines; ulid's
// monotonic reader is not safe for concurrent use, hence the mutex.
var (
	entropyMu sync.Mutex
	entropy   = ulid.Monotonic(rand.Reader, 0)
)

// NewID returns a new ULID string for t. IDs from one process are strictly
// increasing, so they sort by creation time.
func NewID(t time.Time) string {
	entropyMu.Lock()
	id := ulid.MustNew(ulid.Timestamp(t), entropy)
	entropyMu.Unlock()
	return id.String()
}

// MinID returns the smallest ID NewID can return for a time in t's
// millisecond: every ID of an earlier millisecond sorts below it.
func MinID(t time.Time) string {
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(t)); err != nil {
		return ulid.ULID{}.String()
	}
	return id.String()
}
