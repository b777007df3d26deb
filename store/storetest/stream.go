package storetest

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// streamEvent is an event of an aggregate's stream, recorded at t0-2h (so
// that retention as of t0 would prune it, were it not in a stream).
func streamEvent(service, aggregate, stream string, version int64) store.StreamEvent {
	at := t0.Add(-2*time.Hour + time.Duration(version)*time.Millisecond)
	e := event(service, envelope.NewID(at), at)
	e.Kind, e.Key = envelope.KindDomain, ""
	return store.StreamEvent{Pos: store.StreamPos{Aggregate: aggregate, Stream: stream, Version: version}, Event: e}
}

// appendStreams writes events of streams and snapshots in one transaction.
func appendStreams(ctx context.Context, s *store.Store, p store.EventAppendParams) error {
	eng := store.EngineOf(s)
	tx, err := eng.Begin(ctx)
	if err != nil {
		return err
	}
	if err := eng.EventAppend(ctx, tx, p); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// readStream returns a stream's events after after, and its snapshot (or
// ErrNotFound), in one transaction.
func readStream(t *testing.T, s *store.Store, service, aggregate, stream string, after int64) ([]store.StreamEvent, store.Snapshot, error) {
	t.Helper()
	ctx := context.Background()
	eng := store.EngineOf(s)
	var out []store.StreamEvent
	var sn store.Snapshot
	var snErr error
	commit(t, s, func(tx *sql.Tx) {
		err := eng.StreamRead(ctx, tx, store.StreamReadParams{Service: service, Aggregate: aggregate, Stream: stream, After: after},
			func(e store.StreamEvent) error { out = append(out, e); return nil })
		if err != nil {
			t.Fatalf("StreamRead: %v", err)
		}
		sn, snErr = eng.SnapshotGet(ctx, tx, service, aggregate, stream)
	})
	return out, sn, snErr
}

// streamVersions: a stream reads back in version order, whatever the
// order of its appends, with every attribute; the same version in another
// stream, aggregate or service is another place; one version of one stream
// is taken once (ErrStreamConflict), and the failed transaction leaves
// nothing.
func (h *harness) streamVersions(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	v2, v1, v3 := streamEvent("inv", "stock", "p", 2), streamEvent("inv", "stock", "p", 1), streamEvent("inv", "stock", "p", 3)
	others := []store.StreamEvent{streamEvent("inv", "stock", "q", 1), streamEvent("inv", "other", "p", 1), streamEvent("elsewhere", "stock", "p", 1)}
	if err := appendStreams(ctx, s, store.EventAppendParams{Streams: append([]store.StreamEvent{v2, v1}, others...)}); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := appendStreams(ctx, s, store.EventAppendParams{Streams: []store.StreamEvent{v3}}); err != nil {
		t.Fatalf("append version 3: %v", err)
	}
	got, _, err := readStream(t, s, "inv", "stock", "p", 0)
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SnapshotGet without a snapshot: %v, want ErrNotFound", err)
	}
	want := []store.StreamEvent{v1, v2, v3}
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Pos != want[i].Pos {
			t.Errorf("event %d at %+v, want %+v", i, got[i].Pos, want[i].Pos)
		}
		checkEnvelope(t, "stream event", want[i].Event, got[i].Event)
	}
	if tail, _, _ := readStream(t, s, "inv", "stock", "p", 2); len(tail) != 1 || tail[0].Pos.Version != 3 {
		t.Errorf("read after version 2: %+v, want version 3", tail)
	}

	plain := event("inv", "plain-1", t0)
	again := streamEvent("inv", "stock", "p", 2)
	err = appendStreams(ctx, s, store.EventAppendParams{Log: []*envelope.Envelope{plain}, Streams: []store.StreamEvent{streamEvent("inv", "stock", "p", 4), again}})
	if !errors.Is(err, store.ErrStreamConflict) {
		t.Fatalf("a second event at version 2: %v, want ErrStreamConflict", err)
	}
	if _, err := s.EventLogGet(ctx, plain.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the conflicting transaction's plain event: %v, want it rolled back", err)
	}
	if n, err := store.EngineOf(s).EventLogPrune(ctx, t0); err != nil || n != 0 {
		t.Errorf("EventLogPrune = %d, %v; want the events of streams kept", n, err)
	}
	if got, _, _ := readStream(t, s, "inv", "stock", "p", 0); len(got) != 3 {
		t.Errorf("%d events after prune, want 3", len(got))
	}
}

// streamSnapshots: a stream keeps its newest snapshot; an older one does
// not replace it.
func (h *harness) streamSnapshots(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	snap := func(v int64, schema int, state string) store.Snapshot {
		return store.Snapshot{Service: "inv", Pos: store.StreamPos{Aggregate: "stock", Stream: "p", Version: v}, Schema: schema,
			State: []byte(state), Created: t0.Add(time.Duration(v))}
	}
	for _, sn := range []store.Snapshot{snap(10, 1, `{"n":10}`), snap(20, 2, `{"n":20}`), snap(15, 1, `{"n":15}`)} {
		if err := appendStreams(ctx, s, store.EventAppendParams{Snapshots: []store.Snapshot{sn}}); err != nil {
			t.Fatalf("snapshot at %d: %v", sn.Pos.Version, err)
		}
	}
	_, got, err := readStream(t, s, "inv", "stock", "p", 0)
	if err != nil {
		t.Fatalf("SnapshotGet: %v", err)
	}
	want := snap(20, 2, `{"n":20}`)
	if got.Pos != want.Pos || got.Schema != want.Schema || !slices.Equal(got.State, want.State) || !got.Created.Equal(want.Created) || got.Service != "inv" {
		t.Fatalf("snapshot %+v, want %+v", got, want)
	}
}
