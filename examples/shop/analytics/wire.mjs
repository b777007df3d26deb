// wire.mjs — how a herald system is laid out on NATS JetStream, written from
// the wire contract alone (docs/other-languages.md), without herald's code:
// subject and stream names, the partition of a key, and the key-value
// buckets where services announce themselves to `herald catalog`.

const encoder = new TextEncoder();

/**
 * fnv1a32 returns the 32-bit FNV-1a hash of the UTF-8 bytes of s, as an
 * unsigned integer.
 */
export function fnv1a32(s) {
  let h = 0x811c9dc5; // 2166136261, the offset basis
  for (const b of encoder.encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0; // × 16777619 (the FNV prime) mod 2^32
  }
  return h >>> 0;
}

/**
 * partitionOf returns the partition, 0 to n-1, of integration events with
 * partition key key when the system has n partitions: FNV-1a 32 of the key
 * modulo n; a keyless event (key "") is in partition 0. herald's Go side is
 * natsjs.PartitionOf; analytics_test.go checks that the two agree.
 */
export function partitionOf(key, n) {
  if (!key || n <= 1) return 0;
  return fnv1a32(key) % n;
}

/** Names derives herald's subjects and streams from its prefix. */
export class Names {
  /**
   * @param {string} prefix the subject prefix (herald's default: "herald")
   * @param {number} partitions the number of integration partitions (1: not partitioned)
   */
  constructor(prefix, partitions) {
    this.prefix = prefix;
    this.partitions = Math.max(1, partitions);
    this.base = prefix.replaceAll(".", "_").toUpperCase(); // HERALD
  }

  /** intStream is the stream of integration partition p: <P>_INT, or <P>_INT_<p> when partitioned. */
  intStream(p) {
    return this.partitions > 1 ? `${this.base}_INT_${p}` : `${this.base}_INT`;
  }

  /** intSubject is the subject of integration event type typ in partition p. */
  intSubject(typ, p) {
    return this.partitions > 1 ? `${this.prefix}.int.${p}.${typ}` : `${this.prefix}.int.${typ}`;
  }

  /** subjectFor is the subject an integration event of type typ and partition key key goes to. */
  subjectFor(typ, key) {
    return this.intSubject(typ, partitionOf(key, this.partitions));
  }

  /** manifestBucket holds one manifest per service (key: the service's name). */
  get manifestBucket() {
    return `${this.base}_MANIFESTS`;
  }

  /** instanceBucket holds one heartbeat per running instance (key: <service>.<instance>), with a TTL. */
  get instanceBucket() {
    return `${this.base}_INSTANCES`;
  }
}

/**
 * discoverPartitions reads the partition count from the integration
 * stream's metadata (herald.partitions), as herald's Provision wrote it.
 */
export async function discoverPartitions(jsm, prefix) {
  const base = prefix.replaceAll(".", "_").toUpperCase();
  for (const name of [`${base}_INT`, `${base}_INT_0`]) {
    try {
      const si = await jsm.streams.info(name);
      const n = Number.parseInt(si.config.metadata?.["herald.partitions"] ?? "1", 10);
      if (!Number.isInteger(n) || n < 1) {
        throw new Error(`stream ${name}: metadata herald.partitions=${si.config.metadata["herald.partitions"]} is not a partition count`);
      }
      return n;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  throw new Error(`no integration stream ${base}_INT or ${base}_INT_0: start a herald service (or herald dev) first, it provisions the streams`);
}

/** isNotFound reports whether err is JetStream's "stream not found". */
export function isNotFound(err) {
  return err?.code === "404" || err?.api_error?.err_code === 10059 || /not found/i.test(String(err?.message));
}
