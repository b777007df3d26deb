package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// ErrStreamConflict: an event was appended to an aggregate's stream at a
// version another transaction appended first (the unique index on the
// event log's aggregate type, stream id and stream version refused it).
var ErrStreamConflict = errors.New("herald/store: stream version already taken")

// StreamPos places an event-log entry in an aggregate's stream.
type StreamPos struct {
	Aggregate string // the aggregate type, e.g. "inventory.stock"
	Stream    string // the stream id: one aggregate instance
	Version   int64  // 1 for the stream's first event, then one more per event
}

// StreamEvent is a domain event of an aggregate's stream, at its position.
type StreamEvent struct {
	Pos   StreamPos
	Event *envelope.Envelope
}

// Snapshot is the state of an aggregate's stream as of a version, encoded,
// in the aggregate's snapshot schema version.
type Snapshot struct {
	Service string
	Pos     StreamPos // the version the state includes
	Schema  int
	State   []byte
	Created time.Time
}

const streamCols = eventCols + ", aggregate_type, stream_id, stream_version"

const nStreamCols = nEventCols + 3

type streamQueries struct {
	insert, read, snapGet, snapPut string
}

func buildStreamQueries(d Dialect) streamQueries {
	r := d.Rebind
	return streamQueries{
		insert: "INSERT INTO herald_event_log (" + streamCols + ") VALUES ",
		read: r("SELECT stream_version, " + eventCols + " FROM herald_event_log" +
			" WHERE service = ? AND aggregate_type = ? AND stream_id = ? AND stream_version > ? ORDER BY stream_version"),
		snapGet: r("SELECT stream_version, schema_version, state, created_at FROM herald_snapshots" +
			" WHERE service = ? AND aggregate_type = ? AND stream_id = ?"),
		snapPut: r("INSERT INTO herald_snapshots (service, aggregate_type, stream_id, stream_version, schema_version, state, created_at)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (service, aggregate_type, stream_id) DO UPDATE SET" +
			" stream_version = excluded.stream_version, schema_version = excluded.schema_version," +
			" state = excluded.state, created_at = excluded.created_at" +
			" WHERE excluded.stream_version > herald_snapshots.stream_version"),
	}
}

// streamAppend inserts events of aggregates' streams into the event log; a
// version another transaction took is ErrStreamConflict.
func (s *Engine) streamAppend(ctx context.Context, tx *sql.Tx, events []StreamEvent) error {
	for len(events) > 0 {
		n := min(len(events), maxRowsPerInsert)
		q := s.one.stream
		if n > 1 {
			q = s.d.Rebind(s.streamQ.insert + s.values(n, nStreamCols))
		}
		args := make([]any, 0, n*nStreamCols)
		for _, e := range events[:n] {
			args = append(eventArgs(args, e.Event), e.Pos.Aggregate, e.Pos.Stream, e.Pos.Version)
		}
		if _, err := s.exec(ctx, tx, q, args); err != nil {
			if s.d.UniqueViolation(err) {
				return fmt.Errorf("%w: %w", ErrStreamConflict, err)
			}
			return err
		}
		events = events[n:]
	}
	return nil
}

// snapshotPut writes snapshots, each replacing its stream's older one.
func (s *Engine) snapshotPut(ctx context.Context, tx *sql.Tx, snaps []Snapshot) error {
	for _, sn := range snaps {
		if _, err := s.exec(ctx, tx, s.streamQ.snapPut, []any{sn.Service, sn.Pos.Aggregate, sn.Pos.Stream, sn.Pos.Version,
			sn.Schema, blob(sn.State), sn.Created.UnixNano()}); err != nil {
			return fmt.Errorf("snapshot of %s %q at version %d: %w", sn.Pos.Aggregate, sn.Pos.Stream, sn.Pos.Version, err)
		}
	}
	return nil
}

// StreamReadParams selects the events of one stream for StreamRead.
type StreamReadParams struct {
	Service   string
	Aggregate string
	Stream    string
	After     int64 // read the events after this version (0: all)
}

// StreamRead calls fn with the events of a stream after p.After, in stream
// order, inside tx; an error of fn stops the read and is returned as it is.
func (s *Engine) StreamRead(ctx context.Context, tx *sql.Tx, p StreamReadParams, fn func(StreamEvent) error) error {
	if err := s.live(); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, s.streamQ.read, p.Service, p.Aggregate, p.Stream, p.After)
	if err != nil {
		return fmt.Errorf("herald/store: read stream %s %q: %w", p.Aggregate, p.Stream, err)
	}
	defer rows.Close()
	for rows.Next() {
		var v int64
		e, err := scanEvent(rows, &v)
		if err != nil {
			return fmt.Errorf("herald/store: read stream %s %q: %w", p.Aggregate, p.Stream, err)
		}
		if err := fn(StreamEvent{Pos: StreamPos{Aggregate: p.Aggregate, Stream: p.Stream, Version: v}, Event: e}); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("herald/store: read stream %s %q: %w", p.Aggregate, p.Stream, err)
	}
	return nil
}

// SnapshotGet returns the newest snapshot of a stream inside tx, or
// ErrNotFound.
func (s *Engine) SnapshotGet(ctx context.Context, tx *sql.Tx, service, aggregate, stream string) (Snapshot, error) {
	if err := s.live(); err != nil {
		return Snapshot{}, err
	}
	sn := Snapshot{Service: service, Pos: StreamPos{Aggregate: aggregate, Stream: stream}}
	var created int64
	err := tx.QueryRowContext(ctx, s.streamQ.snapGet, service, aggregate, stream).Scan(&sn.Pos.Version, &sn.Schema, &sn.State, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("herald/store: snapshot of %s %q: %w", aggregate, stream, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("herald/store: snapshot of %s %q: %w", aggregate, stream, err)
	}
	sn.Created = time.Unix(0, created).UTC()
	return sn, nil
}
