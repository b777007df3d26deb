-- Producer-side dead letters: outbox rows the relay parked because the
-- broker refused them for good (reason 'refused'), and the later rows of
-- their partition key it holds behind them (reason 'held'). They live in
-- herald_dead_letters with an empty subscription; partition_key is the
-- event's key, so the relay knows, also after a restart, which keys are
-- held until an operator replays or purges their dead letters.
ALTER TABLE herald_dead_letters ADD COLUMN partition_key TEXT NOT NULL DEFAULT '';
CREATE INDEX herald_dead_letters_parked ON herald_dead_letters (service, partition_key) WHERE subscription = '';
