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
    event_time     BIGINT  NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    traceparent    TEXT    NOT NULL,
    tracestate     TEXT    NOT NULL,
    content_type   TEXT    NOT NULL,
    data           BYTEA   NOT NULL
);

-- txid lets the relay publish only rows whose place in commit order is
-- final: rows of transactions older than every transaction still running.
CREATE TABLE herald_outbox (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid           xid8    NOT NULL DEFAULT pg_current_xact_id(),
    id             TEXT    NOT NULL,
    service        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    partition_key  TEXT    NOT NULL,
    event_time     BIGINT  NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    traceparent    TEXT    NOT NULL,
    tracestate     TEXT    NOT NULL,
    content_type   TEXT    NOT NULL,
    data           BYTEA   NOT NULL,
    published_at   BIGINT
);
CREATE INDEX herald_outbox_pending ON herald_outbox (service, seq) WHERE published_at IS NULL;
CREATE INDEX herald_outbox_published ON herald_outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake the relays of the services that just wrote outbox rows, without a
-- round trip of the writer's own. NOTIFY folds identical payloads of one
-- transaction into one.
CREATE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_outbox', NEW.service);
    RETURN NULL;
END $$;
CREATE TRIGGER herald_outbox_notify AFTER INSERT ON herald_outbox
    FOR EACH ROW EXECUTE FUNCTION herald_outbox_notify();

CREATE TABLE herald_inbox (
    subscription TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (subscription, event_id)
);
CREATE INDEX herald_inbox_time ON herald_inbox (processed_at);

CREATE TABLE herald_dead_letters (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service      TEXT    NOT NULL,
    subscription TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    last_error   TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    header       TEXT    NOT NULL,
    data         BYTEA   NOT NULL,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX herald_dead_letters_sub ON herald_dead_letters (service, subscription);
