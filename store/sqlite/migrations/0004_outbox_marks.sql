-- A relay on SQLite, where outbox rows become readable in seq order, marks
-- what the broker acknowledged as a range: a row here says that every
-- outbox row of service up to upto_seq was published at published_at. The
-- newest mark of a service is where its relay goes on from. (On PostgreSQL
-- rows can become readable out of seq order, so its relay sets each row's
-- own published_at instead.) One small insert per mark, instead of
-- rewriting every published row, is most of what the relay writes.
CREATE TABLE herald_outbox_marks (
    service      TEXT    NOT NULL,
    upto_seq     INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (service, upto_seq)
) WITHOUT ROWID;
CREATE INDEX herald_outbox_marks_time ON herald_outbox_marks (published_at);
