package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

func (h *harness) eventLogRoundTrip(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	evs := []*envelope.Envelope{
		event("orders", "rt-utc", t0),
		// Another zone: the same instant comes back, in UTC.
		event("orders", "rt-zone", t0.In(time.FixedZone("UTC-7", -7*3600)).Add(time.Nanosecond)),
		// Before 1970: a negative Unix time.
		event("orders", "rt-1969", time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)),
		event("orders", "rt-2200", time.Date(2200, 1, 2, 3, 4, 5, 6, time.UTC)),
	}
	// A domain event without key, causation or trace, and a large binary
	// payload with every byte value.
	bare := &envelope.Envelope{ID: "rt-bare", Type: "x", Version: 1, Kind: envelope.KindDomain, Source: "orders",
		Time: t0, CorrelationID: "rt-bare", DataContentType: "application/json"}
	bare.Data = make([]byte, 1<<16)
	for i := range bare.Data {
		bare.Data[i] = byte(i * 7)
	}
	// Text that needs quoting in SQL, and non-ASCII.
	odd := event("orders", "rt-odd", t0)
	odd.Type, odd.Key, odd.TraceState = "it's a \"type\" ? $1 --", "clé-🔑", "a=b;c=\\'"
	evs = append(evs, bare, odd)

	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, evs...) })
	for _, want := range evs {
		got, err := s.EventLogGet(ctx, want.ID)
		if err != nil {
			t.Fatalf("Event(%s): %v", want.ID, err)
		}
		checkEnvelope(t, "Event("+want.ID+")", want, got)
	}
}

func (h *harness) eventLogEmptyData(t *testing.T) {
	s := h.open(t)
	nilData := event("orders", "nil-data", t0)
	nilData.Data = nil
	emptyData := event("orders", "empty-data", t0)
	emptyData.Data = []byte{}
	commit(t, s, func(tx *sql.Tx) {
		appendEventLog(t, s, tx, nilData, emptyData)
		appendOutbox(t, s, tx, nilData, emptyData)
	})
	for _, want := range []*envelope.Envelope{nilData, emptyData} {
		got, err := s.EventLogGet(context.Background(), want.ID)
		if err != nil {
			t.Fatalf("Event(%s): %v", want.ID, err)
		}
		checkEnvelope(t, "Event("+want.ID+")", want, got)
		if got.Data != nil {
			t.Errorf("Event(%s).Data = %#v, want nil (empty data reads back as nil)", want.ID, got.Data)
		}
	}
	rows := pending(t, s, "orders", 10)
	checkPending(t, "outbox", rows, []*envelope.Envelope{nilData, emptyData})
	for _, r := range rows {
		if r.Event.Data != nil {
			t.Errorf("outbox %s: Data = %#v, want nil", r.Event.ID, r.Event.Data)
		}
	}
}

func (h *harness) eventLogRollback(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	e := event("orders", "rolled-back", t0)
	rollback(t, s, func(tx *sql.Tx) {
		appendEventLog(t, s, tx, e)
		// Visible inside its own transaction…
		var n int
		if err := tx.QueryRow(s.Rebind("SELECT COUNT(*) FROM herald_event_log WHERE id = ?"), e.ID).Scan(&n); err != nil {
			t.Fatalf("count in tx: %v", err)
		}
		if n != 1 {
			t.Fatalf("event not visible inside its transaction (count %d)", n)
		}
	})
	// …and gone after rollback.
	if _, err := s.EventLogGet(context.Background(), e.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Event after rollback: err = %v, want ErrNotFound", err)
	}
	got, err := s.EventLogListByCorrelation(context.Background(), e.CorrelationID)
	if err != nil || len(got) != 0 {
		t.Fatalf("EventsByCorrelation after rollback = %d events, %v; want none", len(got), err)
	}
	if err := eng.EventLogAppend(context.Background(), nil, nil); err != nil {
		t.Errorf("AppendEventLog of no events: %v", err)
	}
}

func (h *harness) eventLogDuplicateID(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	e := event("orders", "dup", t0)
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, e) })
	tx, err := eng.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := eng.EventLogAppend(context.Background(), tx, []*envelope.Envelope{event("orders", "dup", t0.Add(time.Second))}); err == nil {
		t.Fatal("AppendEventLog of an id already in the log succeeded; want an error")
	}
}

func (h *harness) eventLogByCorrelation(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	// Two flows interleaved over several transactions; times deliberately
	// out of order: "recorded order" is the order of appends.
	var flowA, flowB []*envelope.Envelope
	mk := func(corr string, i int) *envelope.Envelope {
		e := event("orders", fmt.Sprintf("%s-%02d", corr, i), t0.Add(time.Duration(10-i)*time.Second))
		e.CorrelationID = corr
		return e
	}
	for txn := range 4 {
		commit(t, s, func(tx *sql.Tx) {
			for j := range 3 {
				a, b := mk("flow-a", txn*3+j), mk("flow-b", txn*3+j)
				flowA, flowB = append(flowA, a), append(flowB, b)
				appendEventLog(t, s, tx, a)
				appendEventLog(t, s, tx, b)
			}
		})
	}
	// More than one multi-row INSERT's worth in a single call.
	var big []*envelope.Envelope
	for i := range 1201 {
		e := event("orders", fmt.Sprintf("flow-big-%04d", i), t0)
		e.CorrelationID = "flow-big"
		big = append(big, e)
	}
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, big...) })

	for _, flow := range [][]*envelope.Envelope{flowA, flowB, big} {
		corr := flow[0].CorrelationID
		got, err := s.EventLogListByCorrelation(ctx, corr)
		if err != nil {
			t.Fatalf("EventsByCorrelation(%s): %v", corr, err)
		}
		if g, w := envIDs(got), envIDs(flow); !slices.Equal(g, w) {
			t.Fatalf("EventsByCorrelation(%s) ids %v, want %v", corr, g, w)
		}
		for i := range got {
			checkEnvelope(t, corr, flow[i], got[i])
		}
	}
	got, err := s.EventLogListByCorrelation(ctx, "no-such-flow")
	if err != nil || len(got) != 0 {
		t.Fatalf("EventsByCorrelation(unknown) = %d events, %v; want none", len(got), err)
	}
}

func (h *harness) eventLogPrune(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	// Ids are ULIDs of the event times, as herald records them (a store may
	// prune by id). Retention is to the millisecond at best, so the events
	// are a millisecond or more away from the cutoff.
	at := func(d time.Duration) *envelope.Envelope { return event("orders", envelope.NewID(t0.Add(d)), t0.Add(d)) }
	old1 := at(-2 * time.Hour)
	old2 := at(-time.Millisecond)
	edge := at(0) // not before the cutoff: kept
	newer := at(time.Hour)
	// Recorded newest first: pruning goes by event time, not by seq.
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, newer, edge, old2, old1) })

	n, err := eng.EventLogPrune(ctx, t0)
	if err != nil {
		t.Fatalf("PruneEventLog: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneEventLog removed %d, want 2", n)
	}
	for _, e := range []*envelope.Envelope{old1, old2} {
		if _, err := s.EventLogGet(ctx, e.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Event(%s) after prune: err = %v, want ErrNotFound", e.ID, err)
		}
	}
	for _, e := range []*envelope.Envelope{edge, newer} {
		if _, err := s.EventLogGet(ctx, e.ID); err != nil {
			t.Errorf("Event(%s) after prune: %v, want kept", e.ID, err)
		}
	}
	if n, err := eng.EventLogPrune(ctx, t0); err != nil || n != 0 {
		t.Errorf("second PruneEventLog = %d, %v; want 0", n, err)
	}
}

func (h *harness) eventLogNotFound(t *testing.T) {
	s := h.open(t)
	_, err := s.EventLogGet(context.Background(), "no-such-event")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Event(unknown): err = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "no-such-event") {
		t.Errorf("Event(unknown) error %q does not name the id", err)
	}
}

func (h *harness) appendBoth(t *testing.T) {
	for _, tc := range []struct {
		name         string
		nLog, nOutbx int
	}{
		{"log only", 3, 0},
		{"outbox only", 0, 3},
		{"one each", 1, 1},
		{"several each", 4, 5},
		{"one chunk", 250, 250},
		{"more than one chunk", 300, 301},
		{"large log", 1201, 2},
		{"none", 0, 0},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			s := h.open(t)
			eng := store.EngineOf(s)
			ctx := context.Background()
			log := events("orders", "log", tc.nLog)
			for _, e := range log {
				e.Kind, e.CorrelationID = envelope.KindDomain, "flow"
			}
			outbox := events("orders", "out", tc.nOutbx)
			rollback(t, s, func(tx *sql.Tx) {
				if err := eng.EventAppend(ctx, tx, store.EventAppendParams{Log: log, Outbox: outbox}); err != nil {
					t.Fatalf("Append: %v", err)
				}
			})
			if rows := pending(t, s, "orders", 10000); len(rows) != 0 {
				t.Fatalf("rolled-back Append left %d outbox rows", len(rows))
			}
			commit(t, s, func(tx *sql.Tx) {
				if err := eng.EventAppend(ctx, tx, store.EventAppendParams{Log: log, Outbox: outbox}); err != nil {
					t.Fatalf("Append: %v", err)
				}
			})
			got, err := s.EventLogListByCorrelation(ctx, "flow")
			if err != nil {
				t.Fatal(err)
			}
			if g, w := envIDs(got), envIDs(log); !slices.Equal(g, w) {
				t.Fatalf("event log ids %v, want %v", g, w)
			}
			for i := range got {
				checkEnvelope(t, "event log", log[i], got[i])
			}
			for _, e := range outbox {
				if _, err := s.EventLogGet(ctx, e.ID); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("outbox event %s in the event log: %v", e.ID, err)
				}
			}
			checkPending(t, "outbox", pending(t, s, "orders", 10000), outbox)
		})
	}
}
