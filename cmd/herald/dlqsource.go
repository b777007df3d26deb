package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/broker/natsjs"
)

// dlqSource is where herald dlq finds a service's dead letters: a running
// instance, asked through the broker (the default), or the service's
// database (--db, --postgres), for a service that is down.
type dlqSource interface {
	DeadLetters(ctx context.Context, f herald.DeadLetterFilter) ([]herald.DeadLetter, error)
	DeadLetter(ctx context.Context, id int64) (herald.DeadLetter, error)
	// Replay replays the dead letters f selects; dry: only says which.
	Replay(ctx context.Context, f herald.DeadLetterFilter, dry bool) ([]herald.DeadLetter, error)
	Purge(ctx context.Context, f herald.DeadLetterFilter) (int64, error)
	Close()
}

// openSource opens the source the flags name: the database with --db or
// --postgres, else the service's running instances through the broker.
// replay says the caller replays, which from the database needs the
// broker too.
func openSource(ctx context.Context, sf *storeFlags, replay bool) (dlqSource, error) {
	if sf.db != "" || sf.postgres != "" {
		return &dbSource{ctx: ctx, sf: sf, replay: replay}, nil
	}
	if sf.service == "" {
		return nil, usageErrorf("which service? pass --service NAME (or set HERALD_SERVICE)")
	}
	b, err := connectNATS(ctx, sf.nats)
	if err != nil {
		return nil, fmt.Errorf("%w (for a service that is down, pass its database: --db FILE or --postgres URL)", err)
	}
	return &natsSource{b: b, c: admin.NewClient(b), service: sf.service, url: sf.nats}, nil
}

// dbSource reads the service's database; replaying subscribers' dead
// letters connects to the broker as well.
type dbSource struct {
	ctx    context.Context
	sf     *storeFlags
	replay bool
	svc    *herald.Service
	close  func()
}

func (s *dbSource) open(withBroker bool) (*herald.Service, error) {
	if s.svc != nil {
		return s.svc, nil
	}
	svc, closeFn, err := openService(s.ctx, s.sf, withBroker)
	if err != nil {
		return nil, err
	}
	s.svc, s.close = svc, closeFn
	return svc, nil
}

func (s *dbSource) DeadLetters(ctx context.Context, f herald.DeadLetterFilter) ([]herald.DeadLetter, error) {
	svc, err := s.open(false)
	if err != nil {
		return nil, err
	}
	return svc.DeadLetters(ctx, f)
}

func (s *dbSource) DeadLetter(ctx context.Context, id int64) (herald.DeadLetter, error) {
	svc, err := s.open(false)
	if err != nil {
		return herald.DeadLetter{}, err
	}
	return svc.DeadLetter(ctx, id)
}

func (s *dbSource) Replay(ctx context.Context, f herald.DeadLetterFilter, dry bool) ([]herald.DeadLetter, error) {
	dls, err := s.DeadLetters(ctx, f)
	if err != nil || dry {
		return dls, err
	}
	if !allProducerSide(dls) {
		// Those go through the broker; producer-side ones only back into
		// the outbox.
		s.Close()
		if _, err := s.open(true); err != nil {
			return nil, err
		}
	}
	return s.svc.ReplayDeadLetters(ctx, f)
}

func (s *dbSource) Purge(ctx context.Context, f herald.DeadLetterFilter) (int64, error) {
	svc, err := s.open(false)
	if err != nil {
		return 0, err
	}
	return svc.PurgeDeadLetters(ctx, f)
}

func (s *dbSource) Close() {
	if s.close != nil {
		s.close()
		s.svc, s.close = nil, nil
	}
}

// natsSource asks a running instance of the service through the broker.
type natsSource struct {
	b       *natsjs.Broker
	c       *admin.Client
	service string
	url     string
}

// errOf explains an admin failure: no instance answers, most often.
func (s *natsSource) errOf(err error) error {
	if errors.Is(err, natsjs.ErrNoAdmin) {
		return fmt.Errorf("no instance of service %s answers on %s: is it running? For a service that is down, pass its database: --db FILE or --postgres URL",
			s.service, redactURLs(s.url))
	}
	return err
}

// filterOf is f as the admin protocol takes it; no limit is admin's most.
func adminFilter(f herald.DeadLetterFilter) admin.Filter {
	af := admin.Filter{Subscription: f.Subscription, Type: f.Type, Reason: f.Reason, IDs: f.IDs, ProducerSide: f.ProducerSide, Limit: f.Limit}
	if af.Limit == 0 || af.Limit > admin.MaxList {
		af.Limit = admin.MaxList
	}
	return af
}

func fromAdmin(ds []admin.DeadLetter) []herald.DeadLetter {
	out := make([]herald.DeadLetter, len(ds))
	for i, d := range ds {
		out[i] = herald.DeadLetter{ID: d.ID, Service: d.Service, Subscription: d.Subscription, EventID: d.EventID, Type: d.Type,
			Version: d.Version, Reason: d.Reason, LastError: d.LastError, Attempts: d.Attempts, Header: d.Header, Data: d.Data,
			Time: d.Time, Key: d.Key}
	}
	return out
}

func (s *natsSource) DeadLetters(ctx context.Context, f herald.DeadLetterFilter) ([]herald.DeadLetter, error) {
	l, err := s.c.DeadLetters(ctx, s.service, adminFilter(f))
	if err != nil {
		return nil, s.errOf(err)
	}
	if l.More && f.Limit == 0 {
		return nil, fmt.Errorf("more than %d dead letters match: narrow the filter, or pass --limit", admin.MaxList)
	}
	return fromAdmin(l.DeadLetters), nil
}

func (s *natsSource) DeadLetter(ctx context.Context, id int64) (herald.DeadLetter, error) {
	d, err := s.c.DeadLetter(ctx, s.service, id)
	if err != nil {
		return herald.DeadLetter{}, s.errOf(err)
	}
	return fromAdmin([]admin.DeadLetter{d})[0], nil
}

func (s *natsSource) Replay(ctx context.Context, f herald.DeadLetterFilter, dry bool) ([]herald.DeadLetter, error) {
	r, err := s.c.Replay(ctx, s.service, admin.Replay{Filter: adminFilter(f), DryRun: dry})
	if err != nil {
		return nil, s.errOf(err)
	}
	return fromAdmin(r.DeadLetters), nil
}

func (s *natsSource) Purge(ctx context.Context, f herald.DeadLetterFilter) (int64, error) {
	af := adminFilter(f)
	af.Limit = 0 // a purge takes every match
	p, err := s.c.Purge(ctx, s.service, admin.Purge{Filter: af, All: true})
	if err != nil {
		return 0, s.errOf(err)
	}
	return p.Purged, nil
}

func (s *natsSource) Close() { _ = s.b.Close() }
