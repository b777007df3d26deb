// state.mjs — the analytics service's own state, in one JSON file replaced
// atomically (write a temporary file, fsync, rename): the ids of the events
// it has applied (its deduplication by ce-id), the counts, and its outbox of
// trending events not yet acknowledged by JetStream. Applying an event and
// remembering its id are one write, so a redelivered event is never counted
// twice: exactly-once effect is the consumer's business, and this is how
// this consumer does it.

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";

/** State is the service's state; load reads it, save persists it. */
export class State {
  constructor(path) {
    this.path = path;
    this.seen = new Set(); // ce-id of every order event applied
    this.counts = {}; // product id → confirmed orders that contain it
    this.outbox = []; // trending events to publish: {id, product_id, orders, threshold, causation, correlation}
    this.published = []; // ids of trending events JetStream acknowledged
    this.duplicates = 0; // events received again and not applied (redelivered or republished)
    this.rejected = 0; // messages terminated as malformed or of a version it does not read
  }

  /** load reads the state file, if there is one. */
  static load(path) {
    const st = new State(path);
    let raw;
    try {
      raw = readFileSync(path, "utf8");
    } catch (err) {
      if (err.code === "ENOENT") return st;
      throw err;
    }
    const j = JSON.parse(raw);
    if (j.format !== 1) throw new Error(`${path}: state format ${j.format}, want 1`);
    st.seen = new Set(j.seen);
    st.counts = j.counts;
    st.outbox = j.outbox;
    st.published = j.published;
    st.duplicates = j.duplicates;
    st.rejected = j.rejected ?? 0;
    return st;
  }

  /** save replaces the state file with the current state, durably. */
  save() {
    const data = JSON.stringify({
      format: 1,
      counts: this.counts,
      duplicates: this.duplicates,
      outbox: this.outbox,
      published: this.published,
      rejected: this.rejected,
      seen: [...this.seen],
    });
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, "w", 0o644);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}
