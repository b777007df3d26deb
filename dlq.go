package herald

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// DeadLetterFilter selects dead letters of a service; empty fields match
// everything. It is store.DeadLetterFilter with the service set for you.
type DeadLetterFilter = store.DeadLetterFilter

// DeadLetter is an event a subscription gave up on, with the reason, the
// attempts, the last error and the message exactly as it arrived; or, with
// an empty Subscription (DeadLetter.ProducerSide), an event of the service's
// own outbox that its relay parked: one the broker refused for good
// (reason "refused"), or a later event of the same partition key held
// behind it (reason "held").
type DeadLetter = store.DeadLetter

// DeadLetters lists the service's dead letters matching f, oldest first.
func (s *Service) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	f.Service = s.name
	return s.cfg.store.DeadLetterList(ctx, f)
}

// DeadLetter returns one of the service's dead letters.
func (s *Service) DeadLetter(ctx context.Context, id int64) (DeadLetter, error) {
	d, err := s.cfg.store.DeadLetterGet(ctx, id)
	if err == nil && d.Service != s.name {
		return DeadLetter{}, fmt.Errorf("dead letter %d belongs to service %s, not %s: %w", id, d.Service, s.name, store.ErrNotFound)
	}
	return d, err
}

// PurgeDeadLetters deletes the service's dead letters matching f and
// returns how many. Purging the producer-side dead letters of a partition
// key discards those events and frees the key: the relay publishes its
// later events again once none of it is parked.
func (s *Service) PurgeDeadLetters(ctx context.Context, f DeadLetterFilter) (int64, error) {
	f.Service = s.name
	return s.cfg.store.DeadLetterDeleteMany(ctx, f)
}

// ErrNotReplayable is returned for a dead letter whose message could not be
// decoded: it can be inspected and purged, not replayed.
var ErrNotReplayable = errors.New("herald: dead letter cannot be replayed")

// ReplayDeadLetters re-delivers the service's dead letters matching f, each
// to the subscription that dead-lettered it and to no other, and removes
// them from the dead-letter table. With DryRun it only returns what it
// would replay. Replay runs the handler again: the event's inbox row is
// cleared first.
//
// Producer-side dead letters go back into the service's outbox instead, in
// the order they were parked, with the outbox rows still waiting for their
// keys behind them, and the relay publishes them again (a broker is needed
// only for the others). A key's parked events go back together: f selecting
// any of them (the refused one, say) replays every one of its key, since a
// part put back would be parked again behind the rest and come out of
// order; a dry run lists what f selects. One the broker refuses again is
// parked again.
func (s *Service) ReplayDeadLetters(ctx context.Context, f DeadLetterFilter, opts ...ReplayOption) ([]DeadLetter, error) {
	var rc replayConfig
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: service %s: ReplayDeadLetters: nil option", ErrInvalidOption, s.name)
		}
		if err := o.applyReplay(&rc); err != nil {
			return nil, fmt.Errorf("service %s: ReplayDeadLetters: %w", s.name, err)
		}
	}
	dls, err := s.DeadLetters(ctx, f)
	if err != nil || rc.dryRun {
		return dls, err
	}
	var parked []int64
	var others []DeadLetter
	for _, d := range dls {
		if d.ProducerSide() {
			parked = append(parked, d.ID)
		} else {
			others = append(others, d)
		}
	}
	if len(others) > 0 && s.cfg.broker == nil {
		return nil, fmt.Errorf("%w: service %s has no broker to replay through", ErrInvalidOption, s.name)
	}
	var done []DeadLetter
	if len(parked) > 0 {
		back, err := s.engine.OutboxReplayParked(ctx, s.name, DeadLetterFilter{IDs: parked})
		if err != nil {
			return nil, err
		}
		done = append(done, back...)
		s.signal()
	}
	var errs []error
	for _, d := range others {
		if err := s.replay(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("dead letter %d: %w", d.ID, err))
			continue
		}
		done = append(done, d)
	}
	return done, errors.Join(errs...)
}

// replay re-delivers d. The message is read as its subscription's
// consumer reads it (envelope.Decode); the event is published again in
// herald's binary mode, so an event of a producer that is not a herald
// service must match its contract's JSON Schema here, as it would have had
// to before its handler ran.
func (s *Service) replay(ctx context.Context, d DeadLetter) error {
	var kind Kind
	s.mu.RLock()
	for _, sub := range s.subs {
		if sub.name == d.Subscription {
			kind = sub.contract.Kind()
		}
	}
	s.mu.RUnlock()
	e, read, err := envelope.Decode(maps.All(d.Header), d.Data, kind)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotReplayable, err)
	}
	if read.Foreign {
		if err := s.checkForeign(e); err != nil {
			return fmt.Errorf("%w: %v", ErrNotReplayable, err)
		}
	}
	if err := s.engine.InboxRelease(ctx, s.name+"/"+d.Subscription, e.ID); err != nil {
		return err
	}
	ob := Observation{Hop: HopReplay, Subscription: d.Subscription, Event: *e, Start: time.Now(), Outcome: OutcomeOK}
	s.observe(ctx, ob) // before: its handle hop may come at once
	if err := s.cfg.broker.Replay(ctx, s.name, d.Subscription, e); err != nil {
		ob.Outcome, ob.Err = OutcomeError, err
		s.observe(ctx, ob)
		return err
	}
	_, err = s.cfg.store.DeadLetterDeleteMany(ctx, store.DeadLetterFilter{IDs: []int64{d.ID}})
	return err
}
