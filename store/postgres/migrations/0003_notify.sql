-- Notification state of the notify package: the delivery log (one row per
-- event × recipient × channel, plus one per digest message and per channel
-- fallback check), preferences, the suppression list and digests. Times are
-- unix nanoseconds (BIGINT) like the rest of herald.
CREATE TABLE herald_notify_deliveries (
    id             TEXT    NOT NULL PRIMARY KEY,
    idem_key       TEXT    NOT NULL UNIQUE,   -- event id / recipient / channel
    kind           TEXT    NOT NULL,          -- message, digest, fallback
    route          TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    recipient      TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    address        TEXT    NOT NULL,
    category       TEXT    NOT NULL,
    template       TEXT    NOT NULL,
    locale         TEXT    NOT NULL,
    profile        BYTEA   NOT NULL,          -- the recipient as the directory described it (JSON)
    critical       INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    attempts       INTEGER NOT NULL,
    due_at         BIGINT  NOT NULL,
    claimed_by     TEXT    NOT NULL,
    claim_until    BIGINT  NOT NULL,
    provider       TEXT    NOT NULL,
    provider_id    TEXT    NOT NULL,
    last_error     TEXT    NOT NULL,
    throttle_key   TEXT,                      -- set on rows that count against a throttle
    digest_id      TEXT,                      -- items and the digest message
    fallback_of    TEXT,                      -- the delivery a fallback check watches
    data           BYTEA   NOT NULL,          -- the event payload (JSON), to render later
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    sent_at        BIGINT
);
CREATE INDEX herald_notify_deliveries_due ON herald_notify_deliveries (due_at)
    WHERE state IN ('queued', 'deferred', 'sending');
CREATE INDEX herald_notify_deliveries_event ON herald_notify_deliveries (event_id);
CREATE INDEX herald_notify_deliveries_recipient ON herald_notify_deliveries (recipient, created_at);
CREATE INDEX herald_notify_deliveries_correlation ON herald_notify_deliveries (correlation_id);
CREATE INDEX herald_notify_deliveries_created ON herald_notify_deliveries (created_at);
CREATE INDEX herald_notify_deliveries_throttle ON herald_notify_deliveries (throttle_key, created_at)
    WHERE throttle_key IS NOT NULL;
CREATE INDEX herald_notify_deliveries_digest ON herald_notify_deliveries (digest_id)
    WHERE digest_id IS NOT NULL;
CREATE INDEX herald_notify_deliveries_fallback ON herald_notify_deliveries (fallback_of)
    WHERE fallback_of IS NOT NULL;
CREATE INDEX herald_notify_deliveries_provider ON herald_notify_deliveries (provider, provider_id)
    WHERE provider_id <> '';

-- recipient, category and channel may be '*' (a default).
CREATE TABLE herald_notify_preferences (
    recipient  TEXT    NOT NULL,
    category   TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    enabled    INTEGER NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (recipient, category, channel)
);

CREATE TABLE herald_notify_suppressions (
    channel    TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (channel, address)
);

-- One open digest per key at most; the digest message itself is a delivery
-- row of kind 'digest' with the same digest_id.
CREATE TABLE herald_notify_digests (
    id         TEXT    NOT NULL PRIMARY KEY,
    digest_key TEXT    NOT NULL,
    open       INTEGER NOT NULL,
    items      INTEGER NOT NULL,
    max_items  INTEGER NOT NULL,
    created_at BIGINT  NOT NULL,
    closes_at  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX herald_notify_digests_open ON herald_notify_digests (digest_key) WHERE open = 1;
CREATE INDEX herald_notify_digests_created ON herald_notify_digests (created_at);
