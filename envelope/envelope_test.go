package envelope

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// validEnvelope returns a fresh envelope with every attribute set.
func validEnvelope() *Envelope {
	return &Envelope{
		ID:              "01HXZ3N0P0ABCDEFGHJKMNPQRS",
		Type:            "shop.order.confirmed",
		Version:         2,
		Kind:            KindIntegration,
		Source:          "orders",
		Key:             "customer-42",
		Time:            time.Date(2024, 5, 17, 9, 30, 15, 123456789, time.UTC),
		CorrelationID:   "01HXZ3MZZZ0000000000000000",
		CausationID:     "01HXZ3N0000000000000000000",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "vendor=opaque",
		DataContentType: "application/json",
		Data:            []byte(`{"order":"A-1"}`),
	}
}

func TestKindValid(t *testing.T) {
	tests := []struct {
		kind Kind
		want bool
	}{
		{KindDomain, true},
		{KindIntegration, true},
		{KindNotification, true},
		{"", false},
		{"Domain", false},
		{"command", false},
		{"domain ", false},
	}
	for _, tc := range tests {
		if got := tc.kind.Valid(); got != tc.want {
			t.Errorf("Kind(%q).Valid() = %v, want %v", tc.kind, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := validEnvelope().Validate(); err != nil {
		t.Fatalf("valid envelope: %v", err)
	}
	minimal := &Envelope{ID: "x", Type: "t", Version: 1, Kind: KindDomain, Source: "s", Time: time.Unix(0, 1)}
	if err := minimal.Validate(); err != nil {
		t.Fatalf("minimal envelope: %v", err)
	}

	long := strings.Repeat("x", maxHeaderValue+1)
	tests := []struct {
		name   string
		modify func(*Envelope)
		want   string // text naming the bad attribute
	}{
		{"empty id", func(e *Envelope) { e.ID = "" }, "empty id"},
		{"empty type", func(e *Envelope) { e.Type = "" }, "empty type"},
		{"version 0", func(e *Envelope) { e.Version = 0 }, "version 0"},
		{"negative version", func(e *Envelope) { e.Version = -1 }, "version -1"},
		{"empty kind", func(e *Envelope) { e.Kind = "" }, "kind"},
		{"unknown kind", func(e *Envelope) { e.Kind = "command" }, `kind "command"`},
		{"empty source", func(e *Envelope) { e.Source = "" }, "empty source"},
		{"zero time", func(e *Envelope) { e.Time = time.Time{} }, "zero time"},
		{"time after year 9999", func(e *Envelope) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "time"},
		{"time after year 9999 in UTC", func(e *Envelope) {
			e.Time = time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -2*3600))
		}, "time"},
		{"time before year 0", func(e *Envelope) { e.Time = time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC) }, "time"},
		{"long id", func(e *Envelope) { e.ID = long }, "id"},
		{"long type", func(e *Envelope) { e.Type = long }, "type"},
		{"long source", func(e *Envelope) { e.Source = long }, "source"},
		{"long key", func(e *Envelope) { e.Key = long }, "partitionkey"},
		{"long correlation id", func(e *Envelope) { e.CorrelationID = long }, "correlationid"},
		{"long causation id", func(e *Envelope) { e.CausationID = long }, "causationid"},
		{"long traceparent", func(e *Envelope) { e.TraceParent = long }, "traceparent"},
		{"long tracestate", func(e *Envelope) { e.TraceState = long }, "tracestate"},
		{"long content type", func(e *Envelope) { e.DataContentType = long }, "datacontenttype"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := validEnvelope()
			tc.modify(e)
			err := e.Validate()
			if err == nil {
				t.Fatal("Validate accepted the envelope")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			// Strip the prefix so "invalid" does not count as naming "id".
			msg := strings.TrimPrefix(err.Error(), ErrInvalid.Error())
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			if len(msg) > 2*maxHeaderValue {
				t.Errorf("error message is %d bytes long", len(msg))
			}
		})
	}
}

func TestValidateFirstAttribute(t *testing.T) {
	// With several bad attributes the first one in field order is reported.
	e := &Envelope{ID: "x", Version: 0}
	err := e.Validate()
	if err == nil || !strings.Contains(err.Error(), "empty type") {
		t.Fatalf("Validate() = %v, want the empty type reported first", err)
	}
}

func TestNewIDStrictlyIncreasing(t *testing.T) {
	tests := []struct {
		name string
		step time.Duration // how far t advances between calls
	}{
		{"same time", 0},
		{"microsecond steps", time.Microsecond},
		{"millisecond steps", time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := time.Date(2024, 5, 17, 9, 30, 15, 0, time.UTC)
			prev := NewID(ts)
			for i := range 10_000 {
				ts = ts.Add(tc.step)
				id := NewID(ts)
				if id <= prev {
					t.Fatalf("call %d: NewID = %s, not greater than %s", i, id, prev)
				}
				prev = id
			}
		})
	}
}

func TestNewIDConcurrent(t *testing.T) {
	const goroutines, perG = 8, 1000
	ts := time.Date(2024, 5, 17, 9, 30, 15, 0, time.UTC)
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			out := make([]string, perG)
			for i := range out {
				out[i] = NewID(ts)
			}
			ids[g] = out
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*perG)
	for g, out := range ids {
		for i, id := range out {
			if seen[id] {
				t.Fatalf("duplicate id %s", id)
			}
			seen[id] = true
			if i > 0 && id <= out[i-1] {
				t.Fatalf("goroutine %d: id %s not greater than its previous %s", g, id, out[i-1])
			}
		}
	}
}

func TestNewIDParsesAsULID(t *testing.T) {
	tests := []time.Time{
		time.Unix(0, 0),
		time.Date(2024, 5, 17, 9, 30, 15, 123456789, time.UTC),
		time.Date(2024, 5, 17, 9, 30, 15, 999999999, time.UTC),
		time.Date(2024, 5, 17, 11, 30, 15, 1000000, time.FixedZone("CEST", 2*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		ulid.Time(ulid.MaxTime()).Add(999 * time.Microsecond),
	}
	for _, ts := range tests {
		id := NewID(ts)
		if len(id) != ulid.EncodedSize {
			t.Errorf("NewID(%s) = %q: length %d, want %d", ts, id, len(id), ulid.EncodedSize)
		}
		u, err := ulid.ParseStrict(id)
		if err != nil {
			t.Errorf("NewID(%s) = %q: %v", ts, id, err)
			continue
		}
		if got, want := u.Time(), uint64(ts.UnixMilli()); got != want {
			t.Errorf("NewID(%s) timestamp = %d ms, want %d", ts, got, want)
		}
		if u.String() != id {
			t.Errorf("NewID(%s) = %q, not canonical (%q)", ts, id, u.String())
		}
	}
}

func TestNewIDPanicsOutOfRangeWithoutDeadlock(t *testing.T) {
	// newID calls NewID in its own goroutine so that a deadlocked generator
	// fails the test instead of hanging it.
	newID := func(ts time.Time) (panicked bool) {
		done := make(chan bool, 1)
		go func() {
			defer func() { done <- recover() != nil }()
			NewID(ts)
		}()
		select {
		case panicked = <-done:
			return panicked
		case <-time.After(2 * time.Second):
			t.Fatalf("NewID(%s) deadlocked", ts)
			return false
		}
	}
	for _, ts := range []time.Time{
		time.Unix(-1, 0),
		time.Unix(0, 0).Add(-time.Nanosecond),
		{},
		time.Unix(-18446744073709551, 0), // Unix ms wraps around to 616 as uint64
		ulid.Time(ulid.MaxTime()).Add(time.Millisecond),
		time.Date(10890, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		if !newID(ts) {
			t.Errorf("NewID(%s) did not panic", ts)
		}
		// A recovered panic must not leave the generator locked.
		if newID(time.Unix(1, 0)) {
			t.Errorf("NewID(1970-01-01T00:00:01Z) panicked")
		}
	}
}

func TestMinID(t *testing.T) {
	for _, ts := range []time.Time{
		time.Unix(0, 0),
		time.Date(2024, 5, 17, 9, 30, 15, 0, time.UTC),
		time.Date(2024, 5, 17, 9, 30, 15, 999999999, time.UTC),
	} {
		lo := MinID(ts)
		if id := NewID(ts); id < lo {
			t.Errorf("NewID(%s) = %s sorts below MinID = %s", ts, id, lo)
		}
		if ms := ts.Truncate(time.Millisecond); ms.After(time.Unix(0, 0)) {
			if id := NewID(ms.Add(-time.Nanosecond)); id >= lo {
				t.Errorf("NewID of the previous millisecond = %s, not below MinID(%s) = %s", id, ts, lo)
			}
		}
	}
	if got, want := MinID(time.Unix(-1, 0)), "00000000000000000000000000"; got != want {
		t.Errorf("MinID(before epoch) = %s, want %s", got, want)
	}
}
