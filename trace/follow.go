package trace

import (
	"context"
	"fmt"
	"io"
	"slices"
)

// Filter selects records; an empty list matches everything.
type Filter struct {
	Types    []string
	Services []string
	Kinds    []string
	Hops     []string
}

// Match reports whether r passes the filter.
func (f Filter) Match(r Record) bool {
	in := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	return in(f.Types, r.Type) && in(f.Services, r.Service) && in(f.Kinds, string(r.Kind)) && in(f.Hops, string(r.Hop))
}

// Follow calls fn with every record stored from now on that f matches, until
// ctx ends (it then returns nil) or fn returns an error.
func Follow(ctx context.Context, src Source, f Filter, fn func(Record) error) error {
	return src.FollowTrace(ctx, func(b []byte) error {
		return DecodeBatch(b, func(r Record) error {
			if !f.Match(r) {
				return nil
			}
			return fn(r)
		})
	})
}

// FormatLine writes r as one line: time, hop, where, event, outcome, timing.
func FormatLine(w io.Writer, r Record) error {
	where := r.Service
	if r.Subscription != "" {
		where += "/" + r.Subscription
	}
	line := fmt.Sprintf("%s %-11s %-34s %-12s %-28s %s %s flow=%s %s", r.Time.UTC().Format("15:04:05.000000"), r.Hop, where,
		r.Kind, r.Type, r.EventID, r.Outcome, r.CorrelationID, dur(r.Duration))
	if r.Reason != "" {
		line += " " + r.Reason
	}
	if r.Error != "" {
		line += " err: " + r.Error
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
