-- The event log is keyed by the event's ULID: time-ordered, so retention
-- deletes a key range and no separate time index is needed. It has no other
-- index: every index is paid on each business transaction, and the log is
-- read rarely (audit, replaying projections).
CREATE TABLE herald_event_log (
    id             TEXT    NOT NULL PRIMARY KEY,
    service        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    partition_key  TEXT    NOT NULL,
    event_time     INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    traceparent    TEXT    NOT NULL,
    tracestate     TEXT    NOT NULL,
    content_type   TEXT    NOT NULL,
    data           BLOB   NOT NULL
) WITHOUT ROWID;

CREATE TABLE herald_outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL,
    service        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    partition_key  TEXT    NOT NULL,
    event_time     INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    traceparent    TEXT    NOT NULL,
    tracestate     TEXT    NOT NULL,
    content_type   TEXT    NOT NULL,
    data           BLOB    NOT NULL,
    published_at   INTEGER
);
CREATE INDEX herald_outbox_pending ON herald_outbox (service, seq) WHERE published_at IS NULL;
CREATE INDEX herald_outbox_published ON herald_outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE herald_inbox (
    subscription TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (subscription, event_id)
) WITHOUT ROWID;
CREATE INDEX herald_inbox_time ON herald_inbox (processed_at);

CREATE TABLE herald_dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    service      TEXT    NOT NULL,
    subscription TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    last_error   TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    header       TEXT    NOT NULL,
    data         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX herald_dead_letters_sub ON herald_dead_letters (service, subscription);
