package herald

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/adminhook"
	"github.com/heraldhq/herald/store"
)

// A started service answers admin requests (package admin) through its
// broker when the broker serves them (broker.AdminServer): its dead
// letters, stats and manifest, for herald's CLI and console.

// serveAdmin starts the admin endpoints of instance; the returned stop
// ends them (nil when the broker serves none). A failure is logged: the
// service runs without them.
func (s *Service) serveAdmin(instance string) func() error {
	as, ok := s.cfg.broker.(broker.AdminServer)
	if !ok {
		return nil
	}
	s.mu.RLock()
	extra := slices.Clone(s.adminExtra)
	s.mu.RUnlock()
	stop, err := as.ServeAdmin(broker.AdminService{
		Service: s.name, Instance: instance, Version: s.cfg.version,
		Description: "herald service " + s.name + ": dead letters, stats, manifest",
		Endpoints: append([]broker.AdminEndpoint{
			{Name: admin.EndpointManifest, Handle: adminHandler(s.adminManifest)},
			{Name: admin.EndpointStats, Handle: adminHandler(func(ctx context.Context, _ admin.Request) (admin.Stats, error) {
				return s.adminStats(ctx, instance)
			})},
			{Name: admin.EndpointList, Handle: adminHandler(s.adminList)},
			{Name: admin.EndpointShow, Handle: adminHandler(s.adminShow)},
			{Name: admin.EndpointReplay, Handle: adminHandler(s.adminReplay)},
			{Name: admin.EndpointPurge, Handle: adminHandler(s.adminPurge)},
		}, extra...),
	})
	if err != nil {
		s.log.Warn("admin endpoints not served", "err", err)
		return nil
	}
	return stop
}

// The notifier adds its delivery log's endpoint by the internal hook.
func init() {
	adminhook.Add = func(svc any, e broker.AdminEndpoint) {
		s := svc.(*Service)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.adminExtra = slices.DeleteFunc(s.adminExtra, func(x broker.AdminEndpoint) bool { return x.Name == e.Name })
		s.adminExtra = append(s.adminExtra, e)
	}
}

// adminHandler adapts fn to an endpoint: it decodes the request strictly
// (admin.DecodeRequest), bounds the time it may take, and encodes the
// reply, setting its version.
func adminHandler[Req, Resp any](fn func(ctx context.Context, req Req) (Resp, error)) func(ctx context.Context, body []byte) ([]byte, error) {
	return func(ctx context.Context, body []byte) ([]byte, error) {
		var req Req
		if err := admin.DecodeRequest(body, &req); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, adminTimeout)
		defer cancel()
		resp, err := fn(ctx, req)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &broker.AdminError{Code: 404, Message: err.Error()}
		}
		if err != nil {
			return nil, err
		}
		return json.Marshal(resp)
	}
}

// adminTimeout bounds one admin request's work.
const adminTimeout = 10 * time.Second

func (s *Service) adminManifest(context.Context, admin.Request) (admin.Manifest, error) {
	m, err := s.Manifest()
	return admin.Manifest{V: admin.Version, Manifest: m}, err
}

func (s *Service) adminStats(ctx context.Context, instance string) (admin.Stats, error) {
	st := admin.Stats{V: admin.Version, Service: s.name, Instance: instance, Subscriptions: []admin.SubscriptionLag{}}
	n, oldest, err := s.OutboxStats(ctx)
	if err != nil {
		return st, err
	}
	st.OutboxBacklog, st.OutboxOldest = n, oldest
	lags, err := s.Lags(ctx)
	if err != nil {
		return st, err
	}
	for _, l := range lags {
		st.Subscriptions = append(st.Subscriptions, admin.SubscriptionLag{Subscription: l.Subscription, Pending: l.Pending, AckPending: l.AckPending})
	}
	return st, nil
}

// filterOf is f as the store takes it, with its list bound.
func filterOf(f admin.Filter) (DeadLetterFilter, error) {
	if f.Limit < 0 || f.Limit > admin.MaxList {
		return DeadLetterFilter{}, &broker.AdminError{Code: 400, Message: fmt.Sprintf("limit %d: want 0 (default %d) to %d", f.Limit, admin.DefaultList, admin.MaxList)}
	}
	return DeadLetterFilter{Subscription: f.Subscription, Type: f.Type, Reason: f.Reason, IDs: f.IDs, ProducerSide: f.ProducerSide, Limit: f.Limit}, nil
}

func (s *Service) adminList(ctx context.Context, f admin.Filter) (admin.List, error) {
	df, err := filterOf(f)
	if err != nil {
		return admin.List{}, err
	}
	if df.Limit == 0 {
		df.Limit = admin.DefaultList
	}
	want := df.Limit
	df.Limit++ // one more: are there more?
	dls, err := s.DeadLetters(ctx, df)
	if err != nil {
		return admin.List{}, err
	}
	out := admin.List{V: admin.Version, DeadLetters: adminDeadLetters(dls, false)}
	if len(out.DeadLetters) > want {
		out.DeadLetters, out.More = out.DeadLetters[:want], true
	}
	return out, nil
}

func (s *Service) adminShow(ctx context.Context, req admin.Show) (admin.Shown, error) {
	d, err := s.DeadLetter(ctx, req.ID)
	if err != nil {
		return admin.Shown{}, err
	}
	return admin.Shown{V: admin.Version, DeadLetter: adminDeadLetter(d, true)}, nil
}

func (s *Service) adminReplay(ctx context.Context, req admin.Replay) (admin.Replayed, error) {
	df, err := filterOf(req.Filter)
	if err != nil {
		return admin.Replayed{}, err
	}
	var opts []ReplayOption
	if req.DryRun {
		opts = append(opts, DryRun())
	}
	dls, err := s.ReplayDeadLetters(ctx, df, opts...)
	if err != nil {
		if errors.Is(err, ErrNotReplayable) || errors.Is(err, ErrInvalidOption) {
			return admin.Replayed{}, &broker.AdminError{Code: 400, Message: err.Error()}
		}
		return admin.Replayed{}, err
	}
	out := admin.Replayed{V: admin.Version, DryRun: req.DryRun, DeadLetters: adminDeadLetters(dls, false), Subscriptions: map[string]int{}}
	for _, d := range dls {
		out.Subscriptions[d.Subscription]++
	}
	return out, nil
}

func (s *Service) adminPurge(ctx context.Context, req admin.Purge) (admin.Purged, error) {
	df, err := filterOf(req.Filter)
	if err != nil {
		return admin.Purged{}, err
	}
	if !req.All && df.Subscription == "" && df.Type == "" && df.Reason == "" && df.IDs == nil && !df.ProducerSide {
		return admin.Purged{}, &broker.AdminError{Code: 400, Message: "an empty filter purges every dead letter: set all to purge them all"}
	}
	n, err := s.PurgeDeadLetters(ctx, df)
	return admin.Purged{V: admin.Version, Purged: n}, err
}

// adminDeadLetters converts dead letters for a reply; with message, each
// carries its message's header and data.
func adminDeadLetters(dls []DeadLetter, message bool) []admin.DeadLetter {
	out := make([]admin.DeadLetter, len(dls))
	for i, d := range dls {
		out[i] = adminDeadLetter(d, message)
	}
	return out
}

func adminDeadLetter(d DeadLetter, message bool) admin.DeadLetter {
	a := admin.DeadLetter{ID: d.ID, Service: d.Service, Subscription: d.Subscription, EventID: d.EventID, Type: d.Type,
		Version: d.Version, Reason: d.Reason, LastError: d.LastError, Attempts: d.Attempts, Time: d.Time, Key: d.Key}
	if message {
		a.Header, a.Data = d.Header, d.Data
	}
	return a
}
