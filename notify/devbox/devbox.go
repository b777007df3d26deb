// Package devbox is a development mailbox: a notify.Sender that delivers
// nowhere but keeps the last messages in memory, for the demo, the console
// and tests.
//
// One Box backs any number of channels (box.Sender(notify.Email),
// box.Sender(notify.SMS), …). It keeps the newest N messages in a ring,
// lists and counts them, lets a test wait for them, serves them over HTTP
// as JSON and as a small HTML page, and can be told to fail (FailNext, Down)
// so a demo can show the pipeline's retries and failover.
package devbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Sentinel errors of the package.
var (
	// ErrInvalidOption marks an invalid option passed to New.
	ErrInvalidOption = errors.New("herald/notify/devbox: invalid option")
	// ErrInjected is the retryable failure FailNext injects when given no
	// error of its own.
	ErrInjected = errors.New("herald/notify/devbox: injected failure")
	// ErrDown is the retryable failure of every Send while the box is Down.
	ErrDown = errors.New("herald/notify/devbox: provider down")
)

// DefaultCapacity is how many messages a Box keeps unless told otherwise.
const DefaultCapacity = 100

// MaxCapacity bounds Capacity: a devbox is for people and tests, not a
// store.
const MaxCapacity = 100_000

// Option configures a Box.
type Option func(*config) error

type config struct {
	capacity int
	name     string
	now      func() time.Time
}

// Capacity sets how many messages the box keeps (default 100, at most
// 100000); when full, a new message evicts the oldest.
func Capacity(n int) Option {
	return func(c *config) error {
		if n < 1 || n > MaxCapacity {
			return fmt.Errorf("%w: capacity %d not in [1, %d]", ErrInvalidOption, n, MaxCapacity)
		}
		c.capacity = n
		return nil
	}
}

// Name sets the provider name its senders report in Name and
// Receipt.Provider (default "devbox"). Two boxes with different names can
// stand for a primary and a fallback provider of one channel.
func Name(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: empty name", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}

// Clock sets the function the box reads the time from (default time.Now).
func Clock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		c.now = now
		return nil
	}
}

// Entry is one message the box accepted.
type Entry struct {
	// Seq numbers the box's messages from 1 in the order they arrived.
	Seq uint64
	// At is when the box accepted the message.
	At time.Time
	// Provider is the Name of the box.
	Provider string
	// Message is the message as sent (its Payload copied).
	Message notify.Message
}

// Stats counts what a box saw.
type Stats struct {
	Accepted uint64 // messages accepted since New
	Failed   uint64 // Sends refused: injected failures, invalid messages, cancelled contexts
	Held     int    // messages in the ring now
	Capacity int
}

// Box is an in-memory mailbox. It is safe for concurrent use.
type Box struct {
	name     string
	now      func() time.Time
	capacity int

	mu       sync.Mutex
	ring     []Entry // len ≤ capacity; ring[(head+i)%capacity] is the i-th oldest
	head     int
	seq      uint64 // accepted so far; the last entry's Seq
	failed   uint64
	changed  chan struct{} // closed and replaced on every accepted message
	down     bool
	failLeft int
	failErr  error
}

// New returns an empty Box.
func New(opts ...Option) (*Box, error) {
	c := config{capacity: DefaultCapacity, name: "devbox", now: time.Now}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	return &Box{
		name:     c.name,
		now:      c.now,
		capacity: c.capacity,
		ring:     make([]Entry, 0, min(c.capacity, 1024)),
		changed:  make(chan struct{}),
	}, nil
}

// Name returns the provider name of the box.
func (b *Box) Name() string { return b.name }

// Sender returns a notify.Sender for channel that delivers into the box.
func (b *Box) Sender(channel string) *Sender {
	return &Sender{box: b, channel: channel}
}

// Sender delivers messages of one channel into its Box.
type Sender struct {
	box     *Box
	channel string
}

var _ notify.Sender = (*Sender)(nil)

// Name returns the box's provider name.
func (s *Sender) Name() string { return s.box.name }

// Channel returns the channel the sender serves.
func (s *Sender) Channel() string { return s.channel }

// Send stores m in the box. It fails with a permanent error for a message
// without recipient or of another channel, with ErrDown while the box is
// down, and with the injected error while FailNext has failures left; a
// message is stored only when Send returns no error. The receipt says
// Delivered: the box is the recipient.
func (s *Sender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	b := s.box
	if err := ctx.Err(); err != nil {
		b.countFailure()
		return notify.Receipt{}, fmt.Errorf("devbox %s: send: %w", b.name, err)
	}
	if s.channel == "" {
		b.countFailure()
		return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("devbox %s: sender has no channel", b.name))
	}
	if m.Channel != "" && m.Channel != s.channel {
		b.countFailure()
		return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("devbox %s: %s sender got a %s message", b.name, s.channel, m.Channel))
	}
	if strings.TrimSpace(m.To) == "" {
		b.countFailure()
		return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("devbox %s: message has no recipient", b.name))
	}
	m.Channel = s.channel
	m.Payload = append([]byte(nil), m.Payload...)
	if len(m.Payload) == 0 {
		m.Payload = nil
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		b.failed++
		return notify.Receipt{}, fmt.Errorf("devbox %s: %w", b.name, ErrDown)
	}
	if b.failLeft > 0 {
		b.failLeft--
		b.failed++
		return notify.Receipt{}, fmt.Errorf("devbox %s: %w", b.name, b.failErr)
	}
	b.seq++
	e := Entry{Seq: b.seq, At: b.now(), Provider: b.name, Message: m}
	if len(b.ring) < b.capacity {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.head] = e
		b.head = (b.head + 1) % b.capacity
	}
	close(b.changed)
	b.changed = make(chan struct{})
	return notify.Receipt{
		Provider:   b.name,
		ProviderID: b.name + "-" + strconv.FormatUint(e.Seq, 10),
		Delivered:  true,
	}, nil
}

func (b *Box) countFailure() {
	b.mu.Lock()
	b.failed++
	b.mu.Unlock()
}

// FailNext makes the next n Sends of any of the box's senders fail with
// err, or with ErrInjected when err is nil. Wrap err with
// notify.PermanentFailure or use notify.ErrGone to show permanent failures;
// a plain error is retried, a *notify.RetryAfterError asks for a pause. It
// replaces what an earlier FailNext left; n ≤ 0 cancels it.
func (b *Box) FailNext(n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failLeft, b.failErr = max(n, 0), err
}

// Down switches the box down: every Send fails with the retryable ErrDown
// until Up.
func (b *Box) Down() { b.setDown(true) }

// Up switches the box back up after Down.
func (b *Box) Up() { b.setDown(false) }

func (b *Box) setDown(down bool) {
	b.mu.Lock()
	b.down = down
	b.mu.Unlock()
}

// IsDown reports whether the box is down.
func (b *Box) IsDown() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.down
}

// Filter selects messages for List and WaitFor. Empty fields match
// everything.
type Filter struct {
	Channel       string // the sender's channel
	To            string // Message.To, exactly
	Key           string // Message.Key
	EventID       string // Message.EventID
	EventType     string // Message.EventType
	CorrelationID string // Message.CorrelationID
	// After keeps only messages whose Seq is greater.
	After uint64
	// Limit keeps only the newest Limit matches (0: all).
	Limit int
}

func (f Filter) match(e *Entry) bool {
	m := &e.Message
	return (f.Channel == "" || m.Channel == f.Channel) &&
		(f.To == "" || m.To == f.To) &&
		(f.Key == "" || m.Key == f.Key) &&
		(f.EventID == "" || m.EventID == f.EventID) &&
		(f.EventType == "" || m.EventType == f.EventType) &&
		(f.CorrelationID == "" || m.CorrelationID == f.CorrelationID) &&
		e.Seq > f.After
}

// List returns the held messages that match f, oldest first.
func (b *Box) List(f Filter) []Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.listLocked(f)
}

func (b *Box) listLocked(f Filter) []Entry {
	var out []Entry
	n := len(b.ring)
	for i := range n {
		e := &b.ring[(b.head+i)%n]
		if f.match(e) {
			out = append(out, *e)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}

// Get returns the message numbered seq, if the box still holds it.
func (b *Box) Get(seq uint64) (Entry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.ring)
	if n == 0 || seq == 0 || seq > b.seq || b.seq-seq >= uint64(n) {
		return Entry{}, false
	}
	// The newest is at (head+n-1)%n; seq is b.seq-seq places before it.
	i := (b.head + n - 1 - int(b.seq-seq)) % n
	return b.ring[i], true
}

// Last returns the newest message, if any.
func (b *Box) Last() (Entry, bool) {
	b.mu.Lock()
	seq := b.seq
	b.mu.Unlock()
	return b.Get(seq)
}

// Count returns how many messages the box has accepted since New,
// including those the ring has evicted and those Clear dropped.
func (b *Box) Count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int(b.seq)
}

// Stats returns the box's counters.
func (b *Box) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Accepted: b.seq, Failed: b.failed, Held: len(b.ring), Capacity: b.capacity}
}

// Clear drops the held messages. Count and Seq numbers go on.
func (b *Box) Clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.ring)
	b.ring = b.ring[:0]
	b.head = 0
}

// Wait blocks until the box has accepted at least n messages since New
// (see Count) or ctx ends, whose error it then returns, wrapped.
func (b *Box) Wait(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		got, ch := int(b.seq), b.changed
		b.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("devbox %s: waiting for %d messages, have %d: %w", b.name, n, got, context.Cause(ctx))
		}
	}
}

// WaitFor blocks until the box holds at least n messages matching f (f's
// Limit is ignored) and returns them, oldest first, or until ctx ends,
// whose error it then returns, wrapped.
func (b *Box) WaitFor(ctx context.Context, f Filter, n int) ([]Entry, error) {
	f.Limit = 0
	for {
		b.mu.Lock()
		got, ch := b.listLocked(f), b.changed
		b.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return got, fmt.Errorf("devbox %s: waiting for %d matching messages, have %d: %w", b.name, n, len(got), context.Cause(ctx))
		}
	}
}
