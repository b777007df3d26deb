CREATE TABLE herald_event_log (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
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
    data           BLOB    NOT NULL
);
CREATE INDEX herald_event_log_time ON herald_event_log (event_time);
CREATE INDEX herald_event_log_correlation ON herald_event_log (correlation_id);

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
