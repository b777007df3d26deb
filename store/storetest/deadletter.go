package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/store"
)

func deadLetter(service, sub, typ, reason string, i int) store.DeadLetter {
	return store.DeadLetter{
		Service:      service,
		Subscription: sub,
		EventID:      fmt.Sprintf("ev-%d", i),
		Type:         typ,
		Version:      2,
		Reason:       reason,
		LastError:    fmt.Sprintf("attempt %d:\n\tboom 'quoted' \"twice\"", i),
		Attempts:     i + 1,
		Header:       map[string]string{"ce-id": fmt.Sprintf("ev-%d", i), "ce-type": typ, "x-ünï": "✓"},
		Data:         []byte{0x00, 0xff, byte(i), 0x80, 0x00},
		Time:         t0.Add(time.Duration(i) * time.Second),
	}
}

func addDeadLetter(t *testing.T, s *store.Store, tx *sql.Tx, d store.DeadLetter) int64 {
	eng := store.EngineOf(s)
	t.Helper()
	id, err := eng.DeadLetterInsert(context.Background(), tx, d)
	if err != nil {
		t.Fatalf("AddDeadLetter: %v", err)
	}
	return id
}

func dlIDs(ds []store.DeadLetter) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func checkDeadLetter(t *testing.T, want, got store.DeadLetter) {
	t.Helper()
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("dead letter %d: Time %v, want %v in UTC", want.ID, got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dead letter %d:\n\tgot  %#v\n\twant %#v", want.ID, got, want)
	}
}

func (h *harness) deadLetterAdd(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	d1 := addDeadLetter(t, s, nil, deadLetter("orders", "sub", "t", store.ReasonExhausted, 1))
	var d2 int64
	commit(t, s, func(tx *sql.Tx) {
		d2 = addDeadLetter(t, s, tx, deadLetter("orders", "sub", "t", store.ReasonExhausted, 2))
		claim(t, s, tx, "sub", "ev-2", true) // settled together with its inbox row
	})
	rollback(t, s, func(tx *sql.Tx) {
		addDeadLetter(t, s, tx, deadLetter("orders", "sub", "t", store.ReasonExhausted, 3))
	})
	d4 := addDeadLetter(t, s, nil, deadLetter("orders", "sub", "t", store.ReasonExhausted, 4))
	if !(d1 < d2 && d2 < d4) {
		t.Errorf("ids %d, %d, %d: not increasing", d1, d2, d4)
	}
	all, err := s.DeadLetterList(ctx, store.DeadLetterFilter{})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if got, want := dlIDs(all), []int64{d1, d2, d4}; !slices.Equal(got, want) {
		t.Fatalf("DeadLetters ids %v, want %v (the rolled-back one must not be stored)", got, want)
	}
	for i, d := range all {
		if want := []string{"ev-1", "ev-2", "ev-4"}[i]; d.EventID != want {
			t.Errorf("dead letter %d: event %s, want %s", d.ID, d.EventID, want)
		}
	}
}

func (h *harness) deadLetterRoundTrip(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	full := deadLetter("orders", "billing.orders", "shop.order.confirmed", store.ReasonMalformed, 7)
	full.Time = full.Time.In(time.FixedZone("UTC-3", -3*3600)).Add(time.Nanosecond)
	full.Data = make([]byte, 4096)
	for i := range full.Data {
		full.Data[i] = byte(255 - i)
	}
	bare := store.DeadLetter{Service: "orders", Subscription: "s", Reason: store.ReasonUnknownType, Time: t0}
	empty := store.DeadLetter{Service: "orders", Subscription: "s", Reason: store.ReasonVersion, Time: t0,
		Header: map[string]string{}, Data: []byte{}}
	for _, want := range []store.DeadLetter{full, bare, empty} {
		id := addDeadLetter(t, s, nil, want)
		got, err := s.DeadLetterGet(ctx, id)
		if err != nil {
			t.Fatalf("DeadLetter(%d): %v", id, err)
		}
		want.ID = id
		if len(want.Data) == 0 {
			want.Data = nil // empty data reads back as nil
		}
		checkDeadLetter(t, want, got)
	}
	// A zero Time is stamped with the current time.
	before := time.Now()
	id := addDeadLetter(t, s, nil, store.DeadLetter{Service: "orders", Subscription: "s", Reason: store.ReasonPermanent})
	after := time.Now()
	got, err := s.DeadLetterGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Time.Before(before.Truncate(time.Microsecond)) || got.Time.After(after.Add(time.Microsecond)) {
		t.Errorf("zero Time stored as %v, want between %v and %v", got.Time, before, after)
	}
}

func (h *harness) addDeadLetterSet(t *testing.T, s *store.Store) []store.DeadLetter {
	t.Helper()
	var all []store.DeadLetter
	i := 0
	for _, service := range []string{"orders", "billing"} {
		for _, sub := range []string{"a", "b", ""} { // "": producer side
			for _, typ := range []string{"t1", "t2"} {
				reason := []string{store.ReasonExhausted, store.ReasonPermanent, store.ReasonMalformed}[i%3]
				d := deadLetter(service, sub, typ, reason, i)
				if sub == "" {
					d.Key = fmt.Sprintf("key-%d", i%2)
				}
				d.ID = addDeadLetter(t, s, nil, d)
				all = append(all, d)
				i++
			}
		}
	}
	return all
}

// match is the reference implementation of DeadLetterFilter.
func match(all []store.DeadLetter, f store.DeadLetterFilter) []int64 {
	var out []int64
	for _, d := range all {
		if (f.Service == "" || d.Service == f.Service) &&
			(f.Subscription == "" || d.Subscription == f.Subscription) &&
			(f.Type == "" || d.Type == f.Type) &&
			(f.Reason == "" || d.Reason == f.Reason) &&
			(!f.ProducerSide || d.Subscription == "") &&
			(len(f.IDs) == 0 || slices.Contains(f.IDs, d.ID)) {
			out = append(out, d.ID)
		}
	}
	slices.Sort(out)
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

func filters(all []store.DeadLetter) map[string]store.DeadLetterFilter {
	return map[string]store.DeadLetterFilter{
		"all":                    {},
		"service":                {Service: "billing"},
		"subscription":           {Subscription: "b"},
		"type":                   {Type: "t2"},
		"reason":                 {Reason: store.ReasonPermanent},
		"ids":                    {IDs: []int64{all[5].ID, all[1].ID, all[6].ID, 1 << 50}},
		"limit":                  {Limit: 3},
		"service+subscription":   {Service: "orders", Subscription: "b"},
		"service+type+reason":    {Service: "billing", Type: "t1", Reason: store.ReasonExhausted},
		"ids+service":            {IDs: []int64{all[0].ID, all[4].ID, all[7].ID}, Service: "billing"},
		"subscription+limit":     {Subscription: "a", Limit: 2},
		"no match":               {Service: "nobody"},
		"unknown reason":         {Reason: "no-such-reason"},
		"limit beyond the count": {Limit: 100},
		"producer side":          {ProducerSide: true},
		"producer side+service":  {ProducerSide: true, Service: "orders", Limit: 1},
		"producer side+reason":   {ProducerSide: true, Reason: store.ReasonExhausted},
	}
}

func (h *harness) deadLetterFilter(t *testing.T) {
	s := h.open(t)
	all := h.addDeadLetterSet(t, s)
	fs := filters(all)
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		f := fs[name]
		got, err := s.DeadLetterList(context.Background(), f)
		if err != nil {
			t.Fatalf("%s: DeadLetters: %v", name, err)
		}
		if g, w := dlIDs(got), match(all, f); !slices.Equal(g, w) {
			t.Errorf("%s: DeadLetters(%+v) ids %v, want %v", name, f, g, w)
		}
	}
	// The listed dead letters are complete.
	got, err := s.DeadLetterList(context.Background(), store.DeadLetterFilter{IDs: []int64{all[3].ID}})
	if err != nil || len(got) != 1 {
		t.Fatalf("DeadLetters(one id) = %d, %v", len(got), err)
	}
	checkDeadLetter(t, all[3], got[0])
}

func (h *harness) deadLetterDelete(t *testing.T) {
	fs := filters(make([]store.DeadLetter, 8))
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			s := h.open(t)
			ctx := context.Background()
			all := h.addDeadLetterSet(t, s)
			f := filters(all)[name]
			gone := match(all, f)
			n, err := s.DeadLetterDeleteMany(ctx, f)
			if err != nil {
				t.Fatalf("DeleteDeadLetters: %v", err)
			}
			if n != int64(len(gone)) {
				t.Errorf("DeleteDeadLetters(%+v) = %d, want %d", f, n, len(gone))
			}
			left, err := s.DeadLetterList(ctx, store.DeadLetterFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for _, d := range all {
				if !slices.Contains(gone, d.ID) {
					want = append(want, d.ID)
				}
			}
			if g := dlIDs(left); !slices.Equal(g, want) {
				t.Errorf("left after DeleteDeadLetters(%+v): %v, want %v", f, g, want)
			}
		})
	}
}

func (h *harness) deadLetterNotFound(t *testing.T) {
	s := h.open(t)
	if _, err := s.DeadLetterGet(context.Background(), 12345); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeadLetter(unknown): err = %v, want ErrNotFound", err)
	}
	id := addDeadLetter(t, s, nil, deadLetter("orders", "s", "t", store.ReasonExhausted, 1))
	if _, err := s.DeadLetterDeleteMany(context.Background(), store.DeadLetterFilter{IDs: []int64{id}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeadLetterGet(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeadLetter(deleted): err = %v, want ErrNotFound", err)
	}
}
