package herald

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// EventSourced is what every aggregate declaration has, whatever its state
// type: Service.RegisterAggregate takes it.
type EventSourced interface {
	// Name is the aggregate type, e.g. "inventory.stock".
	Name() string
	// StateType is the Go type of the aggregate's state.
	StateType() reflect.Type

	aggregate() *aggBase
}

// aggBase is what aggregates of every state type share.
type aggBase struct {
	name   string
	every  int // snapshot every this many events (0: never)
	schema int // the snapshots' schema version
	state  reflect.Type

	mu        sync.Mutex
	err       error // the first declaration error, reported at registration
	frozen    bool  // registered on a service: no more Apply
	contracts []Contract
}

func (a *aggBase) Name() string            { return a.name }
func (a *aggBase) StateType() reflect.Type { return a.state }
func (a *aggBase) aggregate() *aggBase     { return a }
func (a *aggBase) String() string          { return fmt.Sprintf("aggregate %q", a.name) }

// AggregateType is the declaration of an event-sourced aggregate with state
// S: its name, its snapshot policy and, added with Apply, the domain events
// of its streams with the function each one applies to the state.
type AggregateType[S any] struct {
	aggBase
	applies map[string]aggApply[S] // by event type
}

// aggApply applies the events of one domain contract to an aggregate's state.
type aggApply[S any] struct {
	c      Contract
	apply  func(s *S, v any)
	decode func(data []byte) (any, error)
}

// AggregateOption configures an aggregate: Aggregate takes it.
type AggregateOption interface {
	applyAggregate(*aggBase) error
}

type aggregateOption func(*aggBase) error

func (f aggregateOption) applyAggregate(a *aggBase) error { return f(a) }

// Snapshot makes an aggregate write a snapshot of its state (JSON) every n
// events of a stream, in the transaction that appends the n-th one; Load
// then reads the newest snapshot and the events after it. Without it, Load
// replays the whole stream.
func Snapshot(n int) AggregateOption {
	return aggregateOption(func(a *aggBase) error {
		if n < 1 {
			return fmt.Errorf("snapshot every %d events: want at least 1", n)
		}
		a.every = n
		return nil
	})
}

// SnapshotSchema sets the schema version of an aggregate's snapshots
// (default 1). Bump it when the state type changes in a way its JSON does
// not survive: Load ignores snapshots of another schema version and replays
// the stream instead, and the next snapshot is written in the new one.
func SnapshotSchema(v int) AggregateOption {
	return aggregateOption(func(a *aggBase) error {
		if v < 1 {
			return fmt.Errorf("snapshot schema version %d < 1", v)
		}
		a.schema = v
		return nil
	})
}

// Aggregate declares an event-sourced aggregate type named name (like a
// contract's name: dot-separated lower-case words) with state S, rebuilt
// from the domain events of its streams (one per aggregate instance). It
// never fails: a malformed name or option is reported when the aggregate is
// registered on a service (Service.RegisterAggregate).
//
//	inv := herald.Aggregate[Stock]("inventory.stock", herald.Snapshot(100))
//	herald.Apply(inv, stockReceived, func(s *Stock, e StockReceived) { s.OnHand += e.Qty })
func Aggregate[S any](name string, opts ...AggregateOption) *AggregateType[S] {
	a := &AggregateType[S]{aggBase: aggBase{name: name, schema: 1, state: reflect.TypeFor[S]()},
		applies: map[string]aggApply[S]{}}
	for _, o := range opts {
		if o == nil {
			a.declError(fmt.Errorf("nil option"))
			continue
		}
		if err := o.applyAggregate(&a.aggBase); err != nil {
			a.declError(err)
		}
	}
	return a
}

// declError remembers the first error of a declaration.
func (a *aggBase) declError(err error) {
	if a.err == nil {
		a.err = err
	}
}

// Apply declares that events of c belong to a's streams, and fn is how each
// one changes the state. fn must be deterministic and change nothing but
// the state: Load runs it again for every event it replays. Apply comes
// before the aggregate is registered on a service; an error (a nil
// argument, a second function for one contract, a registered aggregate) is
// returned and, unless the aggregate is registered already, reported again
// by the registration.
func Apply[S, T any](a *AggregateType[S], c *DomainEvent[T], fn func(s *S, e T)) error {
	if a == nil {
		return fmt.Errorf("%w: Apply to a nil aggregate", ErrInvalidAggregate)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	switch {
	case a.frozen:
		return fmt.Errorf("%w: %s: Apply after the aggregate was registered on a service", ErrInvalidAggregate, &a.aggBase)
	case c == nil || fn == nil:
		err = fmt.Errorf("Apply needs a domain contract and a function")
	default:
		if _, dup := a.applies[c.name]; dup {
			err = fmt.Errorf("Apply of %s declared twice", describe(c))
		}
	}
	if err != nil {
		a.declError(err)
		return fmt.Errorf("%w: %s: %v", ErrInvalidAggregate, &a.aggBase, err)
	}
	codec := c.codec
	a.applies[c.name] = aggApply[S]{
		c:     c,
		apply: func(s *S, v any) { fn(s, v.(T)) },
		decode: func(data []byte) (any, error) {
			var v T
			err := codec.Unmarshal(data, &v)
			return v, err
		},
	}
	a.contracts = append(a.contracts, c)
	return nil
}

// RegisterAggregate registers event-sourced aggregates on the service, with
// the domain contracts of their events, before Start. It refuses an
// aggregate with a malformed name or option, one without events (Apply),
// and a second aggregate of the same name; the error names it.
func (s *Service) RegisterAggregate(as ...EventSourced) error {
	if err := s.beforeStart("RegisterAggregate"); err != nil {
		return err
	}
	for _, x := range as {
		if x == nil || reflect.ValueOf(x).IsNil() {
			return fmt.Errorf("%w: service %s: RegisterAggregate of a nil aggregate", ErrInvalidAggregate, s.name)
		}
		if err := s.registerAggregate(x.aggregate()); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) registerAggregate(a *aggBase) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.name == "" || len(a.name) > maxNameLen || !namePattern.MatchString(a.name):
		return fmt.Errorf("%w: service %s: %s: name must be dot-separated lower-case words (a-z, 0-9, '-', '_'), at most %d bytes",
			ErrInvalidAggregate, s.name, a, maxNameLen)
	case a.err != nil:
		return fmt.Errorf("%w: service %s: %s: %v", ErrInvalidAggregate, s.name, a, a.err)
	case len(a.contracts) == 0:
		return fmt.Errorf("%w: service %s: %s has no events: declare them with herald.Apply", ErrInvalidAggregate, s.name, a)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.aggregates[a.name]; ok && other != a {
		return fmt.Errorf("%w: service %s: %s is already registered (another declaration with the same name)",
			ErrInvalidAggregate, s.name, a)
	}
	if err := s.Register(a.contracts...); err != nil {
		return fmt.Errorf("%w: %s", err, a)
	}
	s.aggregates[a.name] = a
	a.frozen = true
	return nil
}

// Root is an aggregate loaded in a transaction: its stream id, its version
// (how many events its stream has, counting those appended in the
// transaction) and its state. It belongs to the transaction that loaded it.
type Root[S any] struct {
	typ     *AggregateType[S]
	t       *txn
	id      string
	version int64 // of the state
	state   S
}

// ID is the aggregate's stream id.
func (r *Root[S]) ID() string { return r.id }

// Version is the number of events in the aggregate's stream, counting
// those appended in this transaction; 0 for a stream without events.
func (r *Root[S]) Version() int64 { return r.version }

// State is the aggregate's state after every event of its stream. It is a
// copy of the state's value: its maps and slices are the aggregate's own,
// not to be changed.
func (r *Root[S]) State() S { return r.state }

// rootKey names a stream in a transaction.
type rootKey struct{ aggregate, id string }

// streamAppend is one Append of a transaction: the stream, the version the
// event took, and the aggregate it was applied to. A consumer's savepoint
// rollback cuts them with the events.
type streamAppend struct {
	key     rootKey
	version int64
	root    appendedRoot
}

// appendedRoot is a loaded aggregate that events were appended to.
type appendedRoot interface {
	// snapshot returns the snapshot of the state as of now, if the
	// aggregate takes them every n events and the stream went from base
	// past a multiple of n.
	snapshot(service string, base int64, now time.Time) (*store.Snapshot, error)
	// current reports the aggregate's version.
	current() int64
	describe() string
}

func (r *Root[S]) current() int64   { return r.version }
func (r *Root[S]) describe() string { return fmt.Sprintf("%s stream %q", &r.typ.aggBase, r.id) }

func (r *Root[S]) snapshot(service string, base int64, now time.Time) (*store.Snapshot, error) {
	n := int64(r.typ.every)
	if n == 0 || r.version/n == base/n {
		return nil, nil
	}
	data, err := json.Marshal(r.state)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot of %s at version %d: %v", ErrEncode, r.describe(), r.version, err)
	}
	return &store.Snapshot{Service: service, Pos: store.StreamPos{Aggregate: r.typ.name, Stream: r.id, Version: r.version},
		Schema: r.typ.schema, State: data, Created: now}, nil
}

// lastAppend returns the version of the last event appended to the stream
// of key in t, or 0.
func (t *txn) lastAppend(key rootKey) int64 {
	for i := len(t.appends) - 1; i >= 0; i-- {
		if t.appends[i].key == key {
			return t.appends[i].version
		}
	}
	return 0
}

// snapshots returns the snapshots to write at commit: for each stream
// appended to, of the aggregate that took its last event, unless a rolled
// back savepoint left that aggregate's state ahead of the stream.
func (t *txn) snapshots(now time.Time) ([]store.Snapshot, error) {
	var out []store.Snapshot
	seen := map[rootKey]bool{}
	for i := len(t.appends) - 1; i >= 0; i-- {
		a := t.appends[i]
		if seen[a.key] {
			continue
		}
		seen[a.key] = true
		if a.root.current() != a.version {
			continue
		}
		base := a.version - 1
		for _, b := range t.appends[:i] {
			if b.key == a.key {
				base = b.version - 1
				break
			}
		}
		sn, err := a.root.snapshot(t.svc.name, base, now)
		if err != nil {
			return nil, err
		}
		if sn != nil {
			out = append(out, *sn)
		}
	}
	return out, nil
}

// maxStreamID bounds a stream id, which is part of an index key.
const maxStreamID = 512

// checkAggregate validates that tx can load a stream of a.
func checkAggregate(tx Tx, a *aggBase, id string) (*txScope, error) {
	if tx == nil {
		return nil, fmt.Errorf("%w: loading %s needs the Tx of Service.Do or of a handler", ErrNoTx, a)
	}
	sc := tx.scope()
	if sc.t.done {
		return nil, fmt.Errorf("%w: loading %s after its Do returned", ErrTxDone, a)
	}
	if err := sc.ctx.Err(); err != nil {
		return nil, fmt.Errorf("loading %s: %w", a, err)
	}
	svc := sc.t.svc
	svc.mu.RLock()
	registered := svc.aggregates[a.name] == a
	svc.mu.RUnlock()
	if !registered {
		return nil, fmt.Errorf("%w: %s on service %s (register it with RegisterAggregate)", ErrUnregistered, a, svc.name)
	}
	if id == "" || len(id) > maxStreamID || !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return nil, fmt.Errorf("%w: %s: stream id %q: want 1 to %d bytes of UTF-8 without NUL", ErrInvalidAggregate, a, id, maxStreamID)
	}
	return sc, nil
}

// Load returns the aggregate of a with stream id id as of tx: its state
// rebuilt from its newest snapshot (with Snapshot) and the events of its
// stream after it, in order, including those appended in tx. A stream
// without events is version 0 with the zero state. An event of the stream
// that a has no Apply for fails with ErrNoApply, a snapshot that does not
// decode with ErrCorruptSnapshot; either fails the transaction.
func Load[S any](tx Tx, a *AggregateType[S], id string) (*Root[S], error) {
	if a == nil {
		return nil, failIfOpen(tx, fmt.Errorf("%w: Load of a nil aggregate", ErrInvalidAggregate))
	}
	sc, err := checkAggregate(tx, &a.aggBase, id)
	if err != nil {
		return nil, failIfOpen(tx, err)
	}
	t := sc.t
	r := &Root[S]{typ: a, t: t, id: id}
	if err := runGuarded(func() error { return r.rehydrate(sc) }); err != nil {
		return nil, t.fail(fmt.Errorf("service %s: load %s: %w", t.svc.name, r.describe(), err))
	}
	return r, nil
}

// rehydrate rebuilds r's state from its snapshot and stream.
func (r *Root[S]) rehydrate(sc *txScope) error {
	a, t := r.typ, sc.t
	eng := t.svc.engine
	if a.every > 0 {
		sn, err := eng.SnapshotGet(sc.ctx, t.sql, t.svc.name, a.name, r.id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case sn.Schema != a.schema:
			// Another schema: rebuilt from the events, and replaced by
			// the next snapshot.
		default:
			var st S
			if err := json.Unmarshal(sn.State, &st); err != nil {
				return fmt.Errorf("%w: snapshot at version %d (schema version %d) does not decode into %v: %v",
					ErrCorruptSnapshot, sn.Pos.Version, sn.Schema, a.state, err)
			}
			r.state, r.version = st, sn.Pos.Version
		}
	}
	err := eng.StreamRead(sc.ctx, t.sql, store.StreamReadParams{Service: t.svc.name, Aggregate: a.name, Stream: r.id, After: r.version},
		func(se store.StreamEvent) error {
			if se.Pos.Version != r.version+1 {
				return fmt.Errorf("%w: version %d follows version %d", ErrCorruptStream, se.Pos.Version, r.version)
			}
			return r.replay(se.Event, se.Pos.Version)
		})
	if err != nil || t.logPos == nil {
		return err
	}
	// The events appended in this transaction, not written yet.
	for i, pos := range t.logPos {
		if pos.Aggregate != a.name || pos.Stream != r.id {
			continue
		}
		if pos.Version != r.version+1 {
			return fmt.Errorf("%w: another transaction appended version %d after this one loaded version %d",
				ErrConcurrencyConflict, r.version, pos.Version-1)
		}
		if err := r.replay(t.log[i], pos.Version); err != nil {
			return err
		}
	}
	return nil
}

// replay applies e, the event at version v of r's stream.
func (r *Root[S]) replay(e *envelope.Envelope, v int64) error {
	ap, ok := r.typ.applies[e.Type]
	if !ok || ap.c.Version() != e.Version {
		return noApply(&r.typ.aggBase, e.Type, e.Version, v)
	}
	x, err := ap.decode(e.Data)
	if err != nil {
		return fmt.Errorf("%w: event %s (%s v%d) at version %d: %v", ErrCorruptStream, e.ID, e.Type, e.Version, v, err)
	}
	ap.apply(&r.state, x)
	r.version++
	return nil
}

func noApply(a *aggBase, typ string, version int, at int64) error {
	return fmt.Errorf("%w: event type %q v%d (stream version %d) has no apply function in %s: declare it with herald.Apply",
		ErrNoApply, typ, version, at, a)
}

// Append records the domain event v of c in tx as the next event of r's
// stream, exactly as Record does (event log, domain handlers, translations,
// outbox), and applies it to r's state. The event takes version
// r.Version()+1 of the stream: if another transaction appended that version
// first, the transaction fails with ErrConcurrencyConflict when it commits
// (Do can run it again: RetryConflicts). c must have an Apply in r's
// aggregate (else ErrNoApply), and r must come from Load in tx.
func Append[S, T any](tx Tx, r *Root[S], c *DomainEvent[T], v T) error {
	if c == nil {
		return failIfOpen(tx, fmt.Errorf("%w: nil domain contract", ErrInvalidContract))
	}
	if r == nil {
		return failIfOpen(tx, fmt.Errorf("%w: Append of %s to a nil aggregate", ErrInvalidAggregate, describe(c)))
	}
	sc, err := check(tx, c)
	if err != nil {
		return failIfOpen(tx, err)
	}
	t := sc.t
	if r.t != t {
		return t.fail(fmt.Errorf("%w: appending %s to %s loaded in another transaction: Load it in this one",
			ErrTxDone, describe(c), r.describe()))
	}
	ap, ok := r.typ.applies[c.name]
	if !ok || ap.c != Contract(c) {
		return t.fail(fmt.Errorf("service %s: %s: %w", t.svc.name, r.describe(), noApply(&r.typ.aggBase, c.name, c.version, r.version+1)))
	}
	key := rootKey{r.typ.name, r.id}
	if last := t.lastAppend(key); last != 0 && last != r.version {
		return t.fail(fmt.Errorf("%w: service %s: appending %s to %s at version %d: this transaction appended version %d through another Load",
			ErrConcurrencyConflict, t.svc.name, describe(c), r.describe(), r.version+1, last))
	}
	return record(sc, c, v, func(e *envelope.Envelope) (store.StreamPos, error) {
		// Apply the event as the stream holds it — decoded from its data,
		// as Load's replay does — not v: a field its codec drops would
		// make this transaction's state, and a snapshot taken from it,
		// differ from a replay.
		x, err := ap.decode(e.Data)
		if err != nil {
			return store.StreamPos{}, fmt.Errorf("service %s: %s: decoding %s as the stream holds it: %w", t.svc.name, r.describe(), describe(c), err)
		}
		if err := runGuarded(func() error { ap.apply(&r.state, x); return nil }); err != nil {
			return store.StreamPos{}, fmt.Errorf("service %s: %s: applying %s: %w", t.svc.name, r.describe(), describe(c), err)
		}
		r.version++
		t.appends = append(t.appends, streamAppend{key: key, version: r.version, root: r})
		return store.StreamPos{Aggregate: r.typ.name, Stream: r.id, Version: r.version}, nil
	})
}
