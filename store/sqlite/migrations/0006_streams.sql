-- Event-sourced aggregates. An event appended to an aggregate's stream
-- carries the aggregate type, the stream id and its version in the stream;
-- every other event leaves them NULL. The partial unique index is the
-- expected-version check (two transactions that loaded version 7 cannot both
-- append version 8) and the read path of loading a stream; plain events do
-- not pay for it. Retention skips the rows of streams.
ALTER TABLE herald_event_log ADD COLUMN aggregate_type TEXT;
ALTER TABLE herald_event_log ADD COLUMN stream_id TEXT;
ALTER TABLE herald_event_log ADD COLUMN stream_version INTEGER;
CREATE UNIQUE INDEX herald_event_log_stream ON herald_event_log (service, aggregate_type, stream_id, stream_version)
    WHERE aggregate_type IS NOT NULL;

-- The newest snapshot of each stream: its state (JSON) as of stream_version,
-- in the aggregate's snapshot schema version.
CREATE TABLE herald_snapshots (
    service        TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (service, aggregate_type, stream_id)
) WITHOUT ROWID;
