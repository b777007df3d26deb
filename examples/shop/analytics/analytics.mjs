// analytics.mjs — the shop's analytics service, in JavaScript, with nothing
// of herald but its wire contract: the CloudEvents SDK (cloudevents) reads
// and writes the events, the NATS client (@nats-io/transport-node,
// @nats-io/jetstream) carries them.
//
// It keeps its own durable JetStream consumer of shop.order.confirmed,
// counts the confirmed orders of each product (deduplicating by ce-id: see
// state.mjs), and when a product's count reaches --threshold publishes the
// integration event shop.product.trending, which the reviews service (a
// herald service) subscribes to. It announces itself to `herald catalog`
// with a manifest (manifest.json, in the format of
// catalog/manifest.schema.json) and heartbeats, as herald services do.
//
//   node analytics.mjs --server nats://127.0.0.1:4333 --state analytics-state.json --threshold 100
//
// It prints "analytics: ready" on stdout once its consumers exist and its
// manifest is published. See docs/other-languages.md, "The Node.js example".

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { parseArgs } from "node:util";

import { AckPolicy, DeliverPolicy, DiscardPolicy, StorageType, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, headers, nanos } from "@nats-io/transport-node";
import { CloudEvent, HTTP } from "cloudevents";

import { State } from "./state.mjs";
import { Names, discoverPartitions, isNotFound } from "./wire.mjs";

const SERVICE = "analytics";
const ORDER_CONFIRMED = "shop.order.confirmed"; // v1, contract.OrderConfirmed
const PRODUCT_TRENDING = "shop.product.trending"; // v1, contract.ProductTrending
const SUBSCRIPTION = "count-orders"; // the subscription's name in the manifest
const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"));

// ---- the attributes herald reads beyond the core ones ----------------------
// The one place this service adds anything for herald. The events are plain
// CloudEvents: herald takes the kind from the subject and the version from
// dataschema (its last segment, v1), and, as they carry no heraldkind,
// checks their data against the contract's JSON Schema before a handler
// sees it (docs/other-languages.md). partitionkey (the CloudEvents
// partitioning extension) keeps a key's events in order and picks the
// partition; correlationid and causationid link the event into herald's
// causal trace (`herald trace`).
function heraldAttributes({ type, version, key, correlation, causation }) {
  const ext = { dataschema: `urn:herald:${type}:v${version}` };
  if (key) ext.partitionkey = key;
  if (correlation) ext.correlationid = correlation;
  if (causation) ext.causationid = causation;
  return ext;
}
// -----------------------------------------------------------------------------

const { values: opt } = parseArgs({
  options: {
    server: { type: "string", short: "s", default: process.env.HERALD_NATS_URL || process.env.NATS_URL || "nats://127.0.0.1:4333" },
    prefix: { type: "string", default: "herald" },
    state: { type: "string", default: "analytics-state.json" },
    threshold: { type: "string", default: "100" },
  },
});
const threshold = Number.parseInt(opt.threshold, 10);
if (!Number.isInteger(threshold) || threshold < 1) {
  console.error(`analytics: --threshold ${opt.threshold}: want a positive integer`);
  process.exit(2);
}

const log = (msg) => console.error(`analytics: ${msg}`);
let closing = false; // set by a clean stop (shutdown)

const nc = await connect({ servers: opt.server.split(","), name: `herald-shop-${SERVICE}` });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);
const names = new Names(opt.prefix, await discoverPartitions(jsm, opt.prefix));
const state = State.load(opt.state);

// Events are applied one at a time (serial): they share one state file.
let queue = Promise.resolve();
function serial(fn) {
  const run = queue.then(fn);
  queue = run.catch(() => {});
  return run;
}

// One durable pull consumer per integration partition, of this service's
// own (herald's consumers are herald's): explicit ack, everything from the
// start of the stream, filtered to the one event type it reads.
const consumers = [];
for (let p = 0; p < names.partitions; p++) {
  const stream = names.intStream(p);
  const durable = names.partitions > 1 ? `${SERVICE}_p${p}` : SERVICE;
  const cfg = {
    durable_name: durable,
    description: `shop analytics (Node.js): ${ORDER_CONFIRMED}` + (names.partitions > 1 ? `, partition ${p} of ${names.partitions}` : ""),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(30_000),
    max_deliver: -1,
    filter_subject: names.intSubject(ORDER_CONFIRMED, p),
  };
  try {
    await jsm.consumers.add(stream, cfg);
  } catch (err) {
    if (!/already exists/i.test(String(err?.message))) throw err;
    await jsm.consumers.update(stream, durable, cfg);
  }
  consumers.push(await js.consumers.get(stream, durable));
}

// The manifest and the heartbeats: the same key-value buckets herald
// services write (a KV bucket is the stream KV_<bucket>; a put is a publish
// to $KV.<bucket>.<key>), so `herald catalog` lists this service.
const instance = randomUUID();
const manifest = JSON.parse(readFileSync(new URL("./manifest.json", import.meta.url), "utf8"));
await kvPut(names.manifestBucket, SERVICE, JSON.stringify({ ...manifest, version: pkg.version, updated: new Date().toISOString() }));
const instanceInfo = JSON.stringify({ id: instance, started: new Date().toISOString(), host: hostname() });
const heartbeat = () => kvPut(names.instanceBucket, `${SERVICE}.${instance}`, instanceInfo);
await heartbeat();
const ttlMs = await bucketTTL(names.instanceBucket);
const beats = setInterval(() => heartbeat().catch((err) => log(`heartbeat: ${err.message}`)), Math.max(100, ttlMs / 3));

await publishOutbox(); // trending events a previous run recorded but did not get acknowledged
const retry = setInterval(() => serial(publishOutbox).catch((err) => log(`publish: ${err.message}`)), 1000);

console.log(`analytics: ready (${names.partitions} partition(s), threshold ${threshold}, ${state.seen.size} events applied)`);

const stopping = []; // what stops each consume loop
const loops = consumers.map(async (c) => {
  const messages = await c.consume({ max_messages: 64 });
  stopping.push(() => messages.stop());
  for await (const m of messages) {
    // handle acks, naks or terms every message itself; an error here is a
    // bug or a lost connection: the message is left to its ack wait.
    await serial(() => handle(m)).catch((err) => log(`handle ${m.subject} seq ${m.seq}: ${err.message}`));
  }
  if (!closing) {
    log("a consumer stopped delivering");
    process.exit(1);
  }
});

async function handle(m) {
  // Decode with the CloudEvents SDK: the NATS headers are the binary-mode
  // attributes (ce-*, content-type), as in HTTP binary mode.
  let ev, data;
  try {
    const hdrs = {};
    for (const k of m.headers?.keys() ?? []) hdrs[k.toLowerCase()] = m.headers.get(k);
    ev = HTTP.toEvent({ headers: hdrs, body: m.string() });
    data = typeof ev.data === "string" ? JSON.parse(ev.data) : ev.data;
    if (ev.type !== ORDER_CONFIRMED) throw new Error(`type ${ev.type}, want ${ORDER_CONFIRMED}`);
    const version = Number(ev.heraldversion ?? 1);
    if (version !== 1) throw new Error(`${ORDER_CONFIRMED} version ${ev.heraldversion}: this service reads version 1`);
    if (typeof data?.order_id !== "string" || !Array.isArray(data.items)) throw new Error("data is not a shop.order.confirmed v1 (order_id, items)");
  } catch (err) {
    // Malformed or of an unknown version: retrying cannot help. term stops
    // redelivery; the reason is logged (a herald service would dead-letter it).
    log(`term ${m.subject} seq ${m.seq}: ${err.message}`);
    m.term(String(err.message).slice(0, 200));
    state.rejected++;
    try {
      state.save(); // only a statistic: the term stands either way
    } catch (saveErr) {
      log(`save: ${saveErr.message}`);
    }
    return;
  }
  try {
    if (state.seen.has(ev.id)) {
      state.duplicates++; // delivered again (a redelivery, a republish): acknowledged, not applied
    } else {
      for (const product of new Set(data.items.map((it) => it.product_id))) {
        const n = (state.counts[product] ?? 0) + 1;
        state.counts[product] = n;
        if (n === threshold) {
          state.outbox.push({
            id: randomUUID(), time: new Date().toISOString(), product_id: product, orders: n, threshold,
            causation: ev.id, correlation: ev.correlationid || ev.id,
          });
        }
      }
      state.seen.add(ev.id);
    }
    state.save(); // the effect and the id that deduplicates it, in one atomic write
  } catch (err) {
    // The effect is not durable: have JetStream deliver the event again.
    log(`nak ${ev.id}: ${err.message}`);
    m.nak(1000);
    return;
  }
  m.ack(); // after the effect: a lost ack means a redelivery, which the dedup absorbs
  await publishOutbox().catch((err) => log(`publish (retried): ${err.message}`));
}

// publishOutbox publishes the recorded trending events in order. Each has a
// fixed ce-id and time, and Nats-Msg-Id = ce-id, so a publish repeated after
// a crash or a lost acknowledgement is dropped by JetStream's deduplication
// (and by herald's inbox beyond its window).
async function publishOutbox() {
  while (state.outbox.length > 0) {
    const t = state.outbox[0];
    const ev = new CloudEvent({
      specversion: "1.0",
      id: t.id,
      source: SERVICE,
      type: PRODUCT_TRENDING,
      time: t.time,
      datacontenttype: "application/json",
      data: { product_id: t.product_id, orders: t.orders, threshold: t.threshold },
      ...heraldAttributes({ type: PRODUCT_TRENDING, version: 1, key: t.product_id, correlation: t.correlation, causation: t.causation }),
    });
    const msg = HTTP.binary(ev);
    const h = headers();
    for (const [k, v] of Object.entries(msg.headers)) h.set(k, String(v));
    await js.publish(names.subjectFor(PRODUCT_TRENDING, t.product_id), msg.body, { msgID: t.id, headers: h });
    state.outbox.shift();
    state.published.push(t.id);
    state.save();
    log(`published ${PRODUCT_TRENDING} ${t.id}: ${t.product_id} reached ${t.orders} orders`);
  }
}

async function kvPut(bucket, key, value, h) {
  const subject = `$KV.${bucket}.${key}`;
  try {
    await js.publish(subject, value, h ? { headers: h } : undefined);
  } catch (err) {
    if (!noResponders(err)) throw err;
    await createBucket(bucket); // no herald service has created it yet
    await js.publish(subject, value, h ? { headers: h } : undefined);
  }
}

// noResponders reports whether a publish failed because no stream holds
// the subject (here: the bucket does not exist).
function noResponders(err) {
  for (let e = err; e; e = e.cause) {
    if (e.name === "NoResponders" || e.code === "503" || /no responders/i.test(String(e.message))) return true;
  }
  return false;
}

// createBucket creates a KV bucket as herald (and every NATS client) would:
// one value per key; the instances bucket expires keys after 30s
// (natsjs.DefaultInstanceTTL).
async function createBucket(bucket) {
  const ttl = bucket === names.instanceBucket ? nanos(30_000) : 0;
  try {
    await jsm.streams.add({
      name: `KV_${bucket}`, subjects: [`$KV.${bucket}.>`], max_msgs_per_subject: 1, discard: DiscardPolicy.New,
      allow_rollup_hdrs: true, deny_delete: true, allow_direct: true, storage: StorageType.File, num_replicas: 1,
      max_age: ttl, duplicate_window: ttl || nanos(120_000),
    });
  } catch (err) {
    if (!/already in use|already exists/i.test(String(err?.message))) throw err;
  }
}

async function bucketTTL(bucket) {
  try {
    const si = await jsm.streams.info(`KV_${bucket}`);
    return si.config.max_age > 0 ? si.config.max_age / 1e6 : 30_000;
  } catch (err) {
    if (isNotFound(err)) return 30_000;
    throw err;
  }
}

// A clean stop (SIGTERM, SIGINT): stop consuming, finish the event at hand,
// withdraw this instance from the catalog (the manifest stays, as herald's
// does), and drain the connection.
async function shutdown(signal) {
  if (closing) return;
  closing = true;
  log(`${signal}: stopping`);
  clearInterval(beats);
  clearInterval(retry);
  for (const stop of stopping) stop();
  await Promise.allSettled(loops);
  await queue;
  const purge = headers();
  purge.set("KV-Operation", "PURGE");
  purge.set("Nats-Rollup", "sub");
  await kvPut(names.instanceBucket, `${SERVICE}.${instance}`, "", purge).catch((err) => log(`withdraw: ${err.message}`));
  await nc.drain();
  log(`stopped: ${state.seen.size} events applied, ${state.duplicates} duplicates, ${state.published.length} trending events published`);
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

// The connection closing for good (not a clean stop) ends the process, so
// whoever runs it sees it fail.
nc.closed().then((err) => {
  if (!closing) {
    log(`connection closed: ${err?.message ?? "by the server"}`);
    process.exit(1);
  }
});
