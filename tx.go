package herald

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// ErrEventTooLarge: an integration or notification event is larger, encoded
// as the broker sends it, than the broker accepts. Record (through a
// translation) and Notify return an *EventTooLargeError wrapping it, and the
// transaction rolls back, so the caller can answer 413 and nothing is
// committed.
var ErrEventTooLarge = errors.New("herald: event too large for the broker")

// EventTooLargeError names the contract of an event the broker would refuse
// for its size, the size and the limit.
type EventTooLargeError struct {
	Contract string // e.g. `integration contract "shop.order.confirmed" v1`
	Type     string
	Version  int
	// Size is the event's data and headers as the broker encodes them
	// (broker.Limiter.EventSize); Limit is the most the broker accepts.
	Size, Limit int
}

func (e *EventTooLargeError) Error() string {
	return fmt.Sprintf("herald: event of %s is %d bytes as the broker sends it (data and headers), over the broker's limit of %d bytes",
		e.Contract, e.Size, e.Limit)
}

// Unwrap makes errors.Is(err, ErrEventTooLarge) true.
func (e *EventTooLargeError) Unwrap() error { return ErrEventTooLarge }

// Tx is one database transaction of a service. Inside Do (and inside
// integration handlers) the user changes their own tables through SQL and
// records events with Record and Notify; everything commits or rolls back
// together. A Tx is not safe for concurrent use and is dead once Do returns.
type Tx interface {
	// Context is the context of the transaction.
	Context() context.Context
	// SQL is the database transaction, for the user's own tables.
	SQL() *sql.Tx
	// Service is the name of the service the transaction belongs to.
	Service() string

	scope() *txScope
}

// txn is the state of one transaction, shared by every scope in it.
type txn struct {
	svc         *Service
	sql         *sql.Tx
	done        bool
	failed      error                // first error of a handler or translation
	log         []*envelope.Envelope // domain events → event log at commit
	outbox      []*envelope.Envelope // integration/notification events → outbox at commit
	onCommit    []Observation        // reported after the events once committed (observehook.OnCommit)
	correlation string
	// logPos places the events of log in aggregates' streams (a zero
	// StreamPos for the others); nil while the transaction appended to
	// no stream.
	logPos  []store.StreamPos
	appends []streamAppend // the Appends, in order
}

// txScope is a view of a txn with the event that caused what is recorded
// through it (nil at the root of Do).
type txScope struct {
	t     *txn
	ctx   context.Context
	cause *envelope.Envelope
	depth int
}

func (s *txScope) Context() context.Context { return s.ctx }
func (s *txScope) SQL() *sql.Tx             { return s.t.sql }
func (s *txScope) Service() string          { return s.t.svc.name }
func (s *txScope) scope() *txScope          { return s }

// Do runs fn in one database transaction. Events recorded in fn, the domain
// handlers they trigger, and the outbox rows of their translations commit
// with the user's changes, or not at all: an error or a panic in fn or in any
// handler rolls everything back, and Do returns it (a panic as a
// *PanicError carrying the stack). With RetryConflicts, a transaction that
// fails with ErrConcurrencyConflict runs again, fn included.
func (s *Service) Do(ctx context.Context, fn func(tx Tx) error, opts ...DoOption) (err error) {
	if ctx == nil {
		return fmt.Errorf("%w: service %s: Do", ErrNilContext, s.name)
	}
	var dc doConfig
	for _, o := range opts {
		if o == nil {
			return fmt.Errorf("%w: service %s: Do: nil option", ErrInvalidOption, s.name)
		}
		if err := o.applyDo(&dc); err != nil {
			return fmt.Errorf("service %s: Do: %w", s.name, err)
		}
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inDo.Done()
	for attempt := 0; ; attempt++ {
		err = s.doOnce(ctx, fn)
		if attempt >= dc.conflictRetries || !errors.Is(err, ErrConcurrencyConflict) || ctx.Err() != nil {
			return err
		}
		s.log.Debug("running Do again after a concurrency conflict", "attempt", attempt+2, "err", err)
	}
}

// doOnce is one attempt of Do.
func (s *Service) doOnce(ctx context.Context, fn func(tx Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("service %s: Do: %w", s.name, err)
	}
	sqlTx, err := s.engine.Begin(ctx)
	if err != nil {
		return fmt.Errorf("service %s: begin: %w", s.name, err)
	}
	t := &txn{svc: s, sql: sqlTx, correlation: CorrelationID(ctx)}
	return s.finish(ctx, t, runGuarded(func() error { return fn(&txScope{t: t, ctx: ctx}) }))
}

// runGuarded calls fn, turning a panic into a *PanicError.
func runGuarded(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = recovered(p)
		}
	}()
	return fn()
}

// finish commits t if err and every handler succeeded, else rolls back.
func (s *Service) finish(ctx context.Context, t *txn, err error) error {
	if err == nil && t.failed != nil {
		err = t.failed
	}
	if err == nil {
		err = s.flush(ctx, t)
	}
	t.done = true
	if err != nil {
		if rbErr := t.sql.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			s.log.Warn("rollback failed", "err", rbErr)
		}
		return err
	}
	if err := t.sql.Commit(); err != nil {
		return fmt.Errorf("service %s: commit: %w", s.name, err)
	}
	// Observers hear of the commit before the relay does, so they usually
	// see an event recorded before published (a relay already busy may
	// still read the rows first: observers get no order across services).
	s.observeCommit(ctx, t)
	if len(t.outbox) > 0 {
		s.signal()
	}
	return nil
}

// observeCommit reports the events a transaction committed.
func (s *Service) observeCommit(ctx context.Context, t *txn) {
	if !s.observing() {
		return
	}
	now := time.Now()
	for _, e := range t.log {
		s.observe(ctx, Observation{Hop: HopRecord, Event: *e, Start: e.Time, Duration: now.Sub(e.Time), Outcome: OutcomeOK})
	}
	for _, e := range t.outbox {
		hop := HopTranslate
		if e.Kind == KindNotification {
			hop = HopNotify
		}
		s.observe(ctx, Observation{Hop: hop, Event: *e, Start: e.Time, Duration: now.Sub(e.Time), Outcome: OutcomeOK})
	}
	for _, o := range t.onCommit {
		s.observe(ctx, o)
	}
}

// flush writes the transaction's events to the event log and the outbox,
// and the snapshots of the aggregates it appended to.
func (s *Service) flush(ctx context.Context, t *txn) error {
	p := store.EventAppendParams{Log: t.log, Outbox: t.outbox}
	if t.logPos != nil {
		p.Log = make([]*envelope.Envelope, 0, len(t.log))
		for i, e := range t.log {
			if pos := t.logPos[i]; pos.Aggregate != "" {
				p.Streams = append(p.Streams, store.StreamEvent{Pos: pos, Event: e})
			} else {
				p.Log = append(p.Log, e)
			}
		}
		snaps, err := t.snapshots(time.Now())
		if err != nil {
			return fmt.Errorf("service %s: %w", s.name, err)
		}
		p.Snapshots = snaps
	}
	if err := s.engine.EventAppend(ctx, t.sql, p); err != nil {
		if errors.Is(err, store.ErrStreamConflict) {
			return fmt.Errorf("%w: service %s: another transaction appended to %s first: %w",
				ErrConcurrencyConflict, s.name, t.streams(), err)
		}
		return fmt.Errorf("service %s: %w", s.name, err)
	}
	return nil
}

// streams names the aggregates' streams t appended to.
func (t *txn) streams() string {
	var names []string
	seen := map[rootKey]bool{}
	for _, a := range t.appends {
		if !seen[a.key] {
			seen[a.key] = true
			names = append(names, a.root.describe())
		}
	}
	return strings.Join(names, ", ")
}

// failIfOpen makes err the transaction's failure when tx is still open, so
// that Do rolls back even if the caller ignores the error: an event that could
// not be recorded must not leave its state change committed without it.
func failIfOpen(tx Tx, err error) error {
	if tx == nil || tx.scope().t.done {
		return err
	}
	return tx.scope().t.fail(err)
}

// check validates that tx can record an event of contract c.
func check(tx Tx, c Contract) (*txScope, error) {
	if tx == nil {
		return nil, fmt.Errorf("%w: recording %s needs the Tx of Service.Do or of a handler", ErrNoTx, describe(c))
	}
	sc := tx.scope()
	if sc.t.done {
		return nil, fmt.Errorf("%w: recording %s after its Do returned", ErrTxDone, describe(c))
	}
	if c == nil {
		return nil, fmt.Errorf("%w: nil contract", ErrInvalidContract)
	}
	if err := sc.ctx.Err(); err != nil {
		return nil, fmt.Errorf("recording %s: %w", describe(c), err)
	}
	if !sc.t.svc.reg.has(c) {
		return nil, fmt.Errorf("%w: %s on service %s (register it with Register, Handle, Translate or Subscribe)",
			ErrUnregistered, describe(c), sc.t.svc.name)
	}
	return sc, nil
}

func describe(c Contract) string {
	if c == nil {
		return "nil contract"
	}
	return c.base().String()
}

// newEnvelope builds the envelope of an event recorded through sc.
func (sc *txScope) newEnvelope(c Contract, v any, key string) (*envelope.Envelope, error) {
	b := c.base()
	data, err := b.codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrEncode, b, err)
	}
	if !headerSafe(key) {
		return nil, fmt.Errorf("%w: %s: partition key %q cannot travel in a message header (control character or surrounding space)", ErrEncode, b, key)
	}
	now := time.Now().UTC()
	e := &envelope.Envelope{
		ID:              envelope.NewID(now),
		Type:            b.name,
		Version:         b.version,
		Kind:            b.kind,
		Source:          sc.t.svc.name,
		Key:             key,
		Time:            now,
		DataContentType: b.codec.ContentType(),
		Data:            data,
	}
	if sc.cause != nil {
		e.CausationID = sc.cause.ID
		e.CorrelationID = sc.cause.CorrelationID
		e.TraceParent, e.TraceState = sc.cause.TraceParent, sc.cause.TraceState
	} else {
		if sc.t.correlation == "" {
			sc.t.correlation = e.ID
		}
		e.CorrelationID = sc.t.correlation
		e.TraceParent, e.TraceState = traceParent(sc.ctx)
	}
	if tc := sc.t.svc.cfg.traceContext; tc != nil {
		e.TraceParent, e.TraceState = tc(sc.ctx, *e)
	}
	if e.CorrelationID == "" {
		e.CorrelationID = e.ID
	}
	for _, v := range []string{e.CorrelationID, e.TraceParent, e.TraceState} {
		if !headerSafe(v) {
			return nil, fmt.Errorf("%w: %s: correlation or trace context %q cannot travel in a message header", ErrEncode, b, v)
		}
	}
	if b.kind != KindDomain {
		// What leaves the service must be a valid envelope (a key of at most
		// 4096 bytes of UTF-8, say), or the relay would have to park it.
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrEncode, b, err)
		}
		if err := sc.t.svc.checkSize(b, e); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// checkSize refuses an event for the outbox that the broker would refuse for
// its size, with the limit the broker announced (see broker.Limiter).
func (s *Service) checkSize(b *contractBase, e *envelope.Envelope) error {
	limit := int(s.maxEvent.Load())
	if limit <= 0 || s.limiter == nil {
		return nil
	}
	if size := s.limiter.EventSize(e); size > limit {
		return &EventTooLargeError{Contract: b.String(), Type: b.name, Version: b.version, Size: size, Limit: limit}
	}
	return nil
}

// learnLimit reads the largest event the broker accepts, as its server
// announced it: when the service is made, at Start, and after a failed
// publish (the connection may have moved to a server with another limit).
func (s *Service) learnLimit() {
	if s.limiter != nil {
		s.maxEvent.Store(int64(s.limiter.MaxEventSize()))
	}
}

// headerSafe reports whether v survives a message header unchanged: no
// control characters, no surrounding spaces or tabs.
func headerSafe(v string) bool {
	if v != strings.TrimSpace(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// fail remembers the first failure of a handler or translation, so that Do
// rolls back even if the caller ignores the error Record returned.
func (t *txn) fail(err error) error {
	if t.failed == nil {
		t.failed = err
	}
	return err
}

// Record records a domain event in tx: it is appended to the event log,
// the service's handlers of c run now, in registration order, inside the
// same transaction, and c's translations write their integration events to
// the outbox. Any failure fails the whole transaction.
func Record[T any](tx Tx, c *DomainEvent[T], v T) error {
	if c == nil {
		return fmt.Errorf("%w: nil domain contract", ErrInvalidContract)
	}
	sc, err := check(tx, c)
	if err != nil {
		return failIfOpen(tx, err)
	}
	return record(sc, c, v, nil)
}

// record is Record after its checks. place, if not nil, places the event
// in an aggregate's stream (Append) before the handlers run.
func record[T any](sc *txScope, c *DomainEvent[T], v T, place func(e *envelope.Envelope) (store.StreamPos, error)) error {
	t := sc.t
	if sc.depth >= t.svc.cfg.maxDepth {
		return t.fail(fmt.Errorf("%w: recording %s at depth %d", ErrTooDeep, describe(c), sc.depth))
	}
	e, err := sc.newEnvelope(c, v, "")
	if err != nil {
		return t.fail(err)
	}
	if place != nil {
		pos, err := place(e)
		if err != nil {
			return t.fail(err)
		}
		if t.logPos == nil {
			t.logPos = make([]store.StreamPos, len(t.log), len(t.log)+1)
		}
		t.logPos = append(t.logPos, pos)
	} else if t.logPos != nil {
		t.logPos = append(t.logPos, store.StreamPos{})
	}
	t.log = append(t.log, e)

	svc := t.svc
	svc.mu.RLock()
	hs, trs := svc.handlers[c], svc.translations[c]
	svc.mu.RUnlock()

	child := &txScope{t: t, cause: e, depth: sc.depth + 1}
	child.ctx = context.WithValue(withEvent(sc.ctx, e), txKey, Tx(child))
	for _, h := range hs {
		if err := runGuarded(func() error { return h.fn(child.ctx, child, v) }); err != nil {
			return t.fail(fmt.Errorf("service %s: handler %q of %s: %w", svc.name, h.name, describe(c), err))
		}
	}
	for _, tr := range trs {
		out, err := tr.fn(child, v)
		if err != nil {
			return t.fail(fmt.Errorf("service %s: translation %s → %s: %w", svc.name, describe(c), tr.to, err))
		}
		if out != nil {
			t.outbox = append(t.outbox, out)
		}
	}
	return nil
}

// Notify emits a notification event in tx. It leaves through the outbox
// after commit, so the business transaction never waits for a provider.
func Notify[T any](tx Tx, c *NotificationEvent[T], v T) error {
	if c == nil {
		return fmt.Errorf("%w: nil notification contract", ErrInvalidContract)
	}
	sc, err := check(tx, c)
	if err != nil {
		return failIfOpen(tx, err)
	}
	e, err := sc.newEnvelope(c, v, "")
	if err != nil {
		return sc.t.fail(err)
	}
	sc.t.outbox = append(sc.t.outbox, e)
	return nil
}

type domainHandler struct {
	name  string
	fn    func(ctx context.Context, tx Tx, v any) error
	emits []Contract // declared effects, for the manifest (Emits)
}

// Handle registers a domain handler: fn runs inside the transaction that
// records an event of c, after the handlers registered before it. Its
// error or panic rolls the transaction back. Emits declares what fn records
// and notifies, for the catalog.
func Handle[T any](svc *Service, c *DomainEvent[T], name string, fn func(ctx context.Context, tx Tx, e T) error, opts ...HandleOption) error {
	if err := svc.beforeStart("Handle"); err != nil {
		return err
	}
	if c == nil || fn == nil {
		return fmt.Errorf("%w: service %s: Handle %q needs a contract and a function", ErrInvalidOption, svc.name, name)
	}
	if name == "" {
		return fmt.Errorf("%w: service %s: handler of %s needs a name", ErrInvalidOption, svc.name, describe(c))
	}
	var hc handleConfig
	for _, o := range opts {
		if o == nil {
			return fmt.Errorf("%w: service %s: handler %q: nil option", ErrInvalidOption, svc.name, name)
		}
		if err := o.applyHandle(&hc); err != nil {
			return fmt.Errorf("service %s: handler %q: %w", svc.name, name, err)
		}
	}
	if err := svc.Register(append([]Contract{c}, hc.emits...)...); err != nil {
		return err
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	for _, h := range svc.handlers[c] {
		if h.name == name {
			return fmt.Errorf("%w: service %s: handler %q of %s registered twice", ErrInvalidOption, svc.name, name, describe(c))
		}
	}
	svc.handlers[c] = append(svc.handlers[c], domainHandler{name: name, emits: hc.emits, fn: func(ctx context.Context, tx Tx, v any) error {
		return fn(ctx, tx, v.(T))
	}})
	return nil
}

type translation struct {
	to     string
	target Contract // the integration contract, for the manifest
	fn     func(sc *txScope, v any) (*envelope.Envelope, error)
}

// ErrSkip, returned by a translation function, publishes nothing for this
// event without failing the transaction.
var ErrSkip = errors.New("herald: skip translation")

// Translate declares the only way a domain event leaves the service: each
// event of from is turned by fn into an integration event of to, written to
// the outbox in the same transaction. fn may return ErrSkip.
func Translate[D, I any](svc *Service, from *DomainEvent[D], to *IntegrationEvent[I], fn func(ctx context.Context, e D) (I, error)) error {
	if err := svc.beforeStart("Translate"); err != nil {
		return err
	}
	if from == nil || to == nil || fn == nil {
		return fmt.Errorf("%w: service %s: Translate needs two contracts and a function", ErrInvalidOption, svc.name)
	}
	if err := svc.Register(from, to); err != nil {
		return err
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	svc.translations[from] = append(svc.translations[from], translation{
		to:     describe(to),
		target: to,
		fn: func(sc *txScope, v any) (*envelope.Envelope, error) {
			out, err := fn(sc.ctx, v.(D))
			if errors.Is(err, ErrSkip) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			return sc.newEnvelope(to, out, to.key(out))
		},
	})
	return nil
}

// beforeStart refuses registrations on a started or closed service.
func (s *Service) beforeStart(what string) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return fmt.Errorf("%w: service %s: %s", ErrClosed, s.name, what)
	}
	if s.started {
		return fmt.Errorf("%w: service %s: %s must come before Start", ErrStarted, s.name, what)
	}
	return nil
}
