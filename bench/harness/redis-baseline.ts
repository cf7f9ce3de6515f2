/**
 * The "what a user would build instead" baseline (bench issue, item 5): the
 * same profile counters Portrait keeps, kept in Redis instead, fed from the
 * same JetStream event stream.
 *
 * One durable pull consumer per partition (`<consumerPrefix>-p<N>`, distinct
 * from the engine's `<prefix>-p<N>`, AckPolicy.All, from the stream's start),
 * consumed like the engine's PartitionConsumer: messages that arrived within
 * one I/O turn (at most maxBatch) form a batch; each event is decoded on the
 * main thread and the batch is written to Redis in one round trip; the
 * batch's last message is acknowledged (AckAll acknowledges the batch) only
 * after Redis replied — the equivalent of the engine's "commit, then ack".
 * Batches of a partition settle in order; several may be in flight.
 *
 * Per user, the hash `<keyPrefix>:u:<userId>` holds:
 *   <type name>      count of events of that type (`view`, `purchase`, ... as EVENT_TYPE_NAMES)
 *   events_applied   count of all events
 *   money_purchased  sum of price x quantity (0 means 1) over PURCHASE   (HINCRBYFLOAT)
 *   money_refunded   the same over REFUND                                 (HINCRBYFLOAT)
 *   first_seen       event-time ms of the first event
 *   last_seen        event-time ms of the last event
 *
 * Modes:
 *   "pipeline"  one ioredis pipeline per batch (no MULTI): per event HINCRBY type,
 *               HINCRBY events_applied, HSETNX first_seen, HSET last_seen, and
 *               HINCRBYFLOAT money for PURCHASE/REFUND. first_seen/last_seen are
 *               first/last in delivery order (correct for in-order event time).
 *   "lua"       one EVALSHA per batch: KEYS = the events' user keys, ARGV = 4
 *               values per event; the script loops over them and keeps
 *               first_seen/last_seen as a true min/max of event time.
 *
 * What it does NOT do that Portrait does — so it is a lower bound on the work
 * a real profile needs, not an equal:
 *   - no decayed category/brand/price affinities, no sessions, no RFM/order
 *     de-duplication, no recently-viewed/bought lists, no LSTM state, no
 *     recommendation feedback;
 *   - no validation and no dead-letter queue: an event that does not decode,
 *     or has no user id or an unknown type, is counted as `invalid` and acked;
 *   - no exactly-once: a redelivered message is applied again (the count of
 *     redeliveries seen is reported, not skipped);
 *   - no durability unless Redis persists: the local Redis runs with
 *     `--save "" --appendonly no`, so an acked event is only in Redis memory
 *     (Portrait acks after an LMDB commit on disk);
 *   - no query path: nothing serves the profile.
 * The Lua script touches keys it receives in KEYS, but one script spans many
 * users, so it would need hash tags to run on Redis Cluster; standalone only.
 */
import { AckPolicy, DeliverPolicy, connect, nanos, type ConsumerMessages, type JsMsg, type NatsConnection } from "nats";
import { connect as netConnect } from "node:net";
import { Redis } from "ioredis";
import { ackInfo } from "../../src/bus/partition-consumer.js";
import { subjects } from "../../src/bus/subjects.js";
import { EVENT_TYPE_NAMES, EventType, pb, plainBytes, type Event } from "../../src/wire/proto.js";

export interface RedisBaselineOptions {
  natsUrl: string;
  /** Subject prefix of the deployment whose event stream is read. */
  prefix: string;
  partitions: number;
  /** Messages to consume before the run ends (the stream's event count). */
  expected: number;
  /** Default redis://127.0.0.1:6379. */
  redisUrl?: string;
  mode: "pipeline" | "lua";
  /** Most messages per batch (one Redis round trip); default 1024, as the engine's maxBatchMessages. */
  maxBatch?: number;
  /** The run fails when `expected` messages were not applied within this many ms. */
  timeoutMs: number;
  /** Prefix of the Redis keys; default "portrait-baseline". Keys `<keyPrefix>:u:*` are deleted before the run. */
  keyPrefix?: string;
  /** Keep the user hashes in Redis after the run (for inspection); default false: they are deleted once memory and users are measured. */
  keepKeys?: boolean;
  /** Prefix of the durable consumer names; default "redis-baseline" (names `<consumerPrefix>-p<N>`). They are deleted after the run. */
  consumerPrefix?: string;
  /** Consumer max_ack_pending, per partition; default 8192. */
  maxAckPending?: number;
}

export interface RedisBaselineResult {
  /** Messages consumed and acknowledged (valid + invalid). */
  events: number;
  /** From the start of consumption to the acknowledgement of the last batch. */
  seconds: number;
  eventsPerSec: number;
  mode: string;
  /** Redis INFO used_memory after the run. */
  redisUsedMemoryBytes: number;
  /** Redis INFO used_memory before the run (after deleting earlier keys of keyPrefix). */
  redisUsedMemoryBeforeBytes: number;
  /** Distinct user hashes under keyPrefix after the run (SCAN, outside the timed part). */
  users: number;
  batches: number;
  /** Redis commands sent (pipeline: per event 4 or 5; lua: one EVALSHA per batch). */
  redisCommands: number;
  /** Messages that did not decode to an applicable event (acked, not applied). */
  invalid: number;
  /** Messages delivered again after a first delivery (applied again: no exactly-once). */
  redeliveries: number;
}

const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";
const DEFAULT_KEY_PREFIX = "portrait-baseline";
const DEFAULT_CONSUMER_PREFIX = "redis-baseline";
const SCAN_COUNT = 1000;
/** Bound on SCAN/UNLINK round trips of the key clean-up and count (10M keys at SCAN_COUNT). */
const MAX_SCAN_ROUNDS = 10_000;

/**
 * KEYS[i] = user hash of event i; ARGV[4i-3..4i] = type field, event time ms,
 * money field ("" for none), amount. Returns the number of events applied.
 */
const LUA_APPLY = `
local n = #KEYS
for i = 1, n do
  local k = KEYS[i]
  local a = (i - 1) * 4
  redis.call('HINCRBY', k, ARGV[a + 1], 1)
  redis.call('HINCRBY', k, 'events_applied', 1)
  local ts = tonumber(ARGV[a + 2])
  local seen = redis.call('HMGET', k, 'first_seen', 'last_seen')
  local first = tonumber(seen[1])
  local last = tonumber(seen[2])
  if first == nil or ts < first then redis.call('HSET', k, 'first_seen', ARGV[a + 2]) end
  if last == nil or ts > last then redis.call('HSET', k, 'last_seen', ARGV[a + 2]) end
  if ARGV[a + 3] ~= '' then redis.call('HINCRBYFLOAT', k, ARGV[a + 3], ARGV[a + 4]) end
end
return n
`;

/** One decoded event as the Redis writers need it. */
interface Update {
  key: string;
  typeName: string;
  ts: string;
  /** "" when the event moves no money. */
  moneyField: string;
  amount: string;
}

/** The update of one message, or undefined when it is not an applicable event. */
function toUpdate(data: Uint8Array, keyPrefix: string): Update | undefined {
  let e: Event;
  try {
    e = pb.Event.decode(plainBytes(data));
  } catch {
    return undefined;
  }
  const type = e.type as number;
  if (!e.userId || type <= 0 || type >= EVENT_TYPE_NAMES.length) return undefined;
  let moneyField = "";
  let amount = "";
  if (type === EventType.PURCHASE || type === EventType.REFUND) {
    moneyField = type === EventType.PURCHASE ? "money_purchased" : "money_refunded";
    amount = String(e.price * (e.quantity > 0 ? e.quantity : 1));
  }
  return { key: `${keyPrefix}:u:${e.userId}`, typeName: EVENT_TYPE_NAMES[type]!, ts: String(e.timestampMs), moneyField, amount };
}

/** Writes one batch to Redis in one round trip; resolves with the commands sent once Redis replied (rejects on any command error). */
type BatchWriter = (updates: Update[]) => Promise<number>;

function pipelineWriter(redis: Redis): BatchWriter {
  return async (updates) => {
    const p = redis.pipeline();
    for (const u of updates) {
      p.hincrby(u.key, u.typeName, 1);
      p.hincrby(u.key, "events_applied", 1);
      p.hsetnx(u.key, "first_seen", u.ts);
      p.hset(u.key, "last_seen", u.ts);
      if (u.moneyField !== "") p.hincrbyfloat(u.key, u.moneyField, u.amount);
    }
    const n = p.length;
    const replies = await p.exec();
    if (replies === null) throw new Error("redis pipeline was discarded");
    for (const [err] of replies) if (err) throw err;
    return n;
  };
}

function luaWriter(redis: Redis, sha: string): BatchWriter {
  return async (updates) => {
    const args: string[] = new Array<string>(updates.length * 5);
    const n = updates.length;
    for (let i = 0; i < n; i++) {
      const u = updates[i]!;
      args[i] = u.key;
      const a = n + i * 4;
      args[a] = u.typeName;
      args[a + 1] = u.ts;
      args[a + 2] = u.moneyField;
      args[a + 3] = u.amount;
    }
    const applied = await redis.evalsha(sha, n, ...args);
    if (applied !== n) throw new Error(`redis script applied ${String(applied)} of ${n} events`);
    return 1;
  };
}

function newRedis(url: string): Redis {
  // No retries, no offline queue and a reply deadline: a benchmark should fail loudly, not wait for a Redis that is gone or stuck.
  return new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 5_000, commandTimeout: 30_000 });
}

async function usedMemory(redis: Redis): Promise<number> {
  const m = /^used_memory:(\d+)/m.exec(await redis.info("memory"));
  return m ? Number(m[1]) : NaN;
}

/** SCANs keys matching `pattern`, handing each page to `page`; bounded in rounds. */
async function scanKeys(redis: Redis, pattern: string, page: (keys: string[]) => Promise<void>): Promise<void> {
  let cursor = "0";
  for (let round = 0; round < MAX_SCAN_ROUNDS; round++) {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", SCAN_COUNT);
    if (keys.length > 0) await page(keys);
    cursor = next;
    if (cursor === "0") return;
  }
  throw new Error(`SCAN of ${pattern} did not finish within ${MAX_SCAN_ROUNDS} rounds`);
}

async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  await scanKeys(redis, pattern, async (keys) => {
    await redis.unlink(...keys);
  });
}

async function countKeys(redis: Redis, pattern: string): Promise<number> {
  // SCAN may return a key more than once while the keyspace rehashes.
  const seen = new Set<string>();
  await scanKeys(redis, pattern, async (keys) => {
    for (const k of keys) seen.add(k);
  });
  return seen.size;
}

/** Consumes one partition in engine-like batches; every batch goes to `write`, then is acked. */
class PartitionRun {
  #pending: JsMsg[] = [];
  #flushScheduled = false;
  #tail: Promise<void> = Promise.resolve();
  #lastSeq = 0;
  #messages: ConsumerMessages | undefined;
  failed: unknown;

  constructor(
    private readonly maxBatch: number,
    private readonly keyPrefix: string,
    private readonly write: BatchWriter,
    private readonly onSettled: (batch: { messages: number; invalid: number; redeliveries: number; commands: number }) => void,
    private readonly onError: (err: unknown) => void,
  ) {}

  async start(nc: NatsConnection, stream: string, consumer: string, prefetch: number): Promise<void> {
    const c = await nc.jetstream().consumers.get(stream, consumer);
    this.#messages = await c.consume({ max_messages: prefetch, callback: (m) => this.#onMessage(m) });
  }

  stop(): void {
    this.#messages?.stop();
  }

  /** Resolves when every batch handed to Redis so far has settled (or failed). */
  drained(): Promise<void> {
    return this.#tail.catch(() => undefined);
  }

  #onMessage(m: JsMsg): void {
    if (this.failed !== undefined) return;
    this.#pending.push(m);
    if (this.#pending.length >= this.maxBatch) this.#flush();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    const msgs = this.#pending;
    if (msgs.length === 0) return;
    this.#pending = [];
    const updates: Update[] = [];
    let invalid = 0;
    let redeliveries = 0;
    for (const m of msgs) {
      const seq = ackInfo((m as unknown as { reply: string }).reply).seq;
      if (seq <= this.#lastSeq) redeliveries++;
      else this.#lastSeq = seq;
      const u = toUpdate(m.data, this.keyPrefix);
      if (u === undefined) invalid++;
      else updates.push(u);
    }
    const written = updates.length > 0 ? this.write(updates) : Promise.resolve(0);
    written.catch(() => undefined); // observed through the tail
    this.#tail = this.#tail
      .then(() => written)
      .then((commands) => {
        msgs[msgs.length - 1]!.ack();
        this.onSettled({ messages: msgs.length, invalid, redeliveries, commands });
      })
      .catch((err: unknown) => {
        this.failed ??= err;
        this.onError(err);
        throw err;
      });
  }
}

/**
 * Runs the baseline: consumes `expected` messages of the prefix's event
 * stream into Redis hashes and reports the rate. The consumers are created
 * from the stream's start and deleted afterwards; the keys `<keyPrefix>:u:*`
 * are deleted before the run and, unless keepKeys, after it (also when it fails).
 */
export async function runRedisBaseline(o: RedisBaselineOptions): Promise<RedisBaselineResult> {
  const s = subjects(o.prefix);
  const keyPrefix = o.keyPrefix ?? DEFAULT_KEY_PREFIX;
  const consumerPrefix = o.consumerPrefix ?? DEFAULT_CONSUMER_PREFIX;
  const maxBatch = o.maxBatch ?? 1024;
  const maxAckPending = o.maxAckPending ?? 8192;
  if (!(o.partitions >= 1) || !(o.expected >= 1) || !(maxBatch >= 1) || !(o.timeoutMs > 0)) {
    throw new Error("runRedisBaseline: partitions, expected, maxBatch and timeoutMs must be positive");
  }
  if (consumerPrefix === o.prefix) throw new Error("runRedisBaseline: consumerPrefix must differ from the engine's prefix (its consumers are <prefix>-p<N>)");
  if (o.mode !== "lua" && o.mode !== "pipeline") throw new Error(`runRedisBaseline: unknown mode ${JSON.stringify(o.mode)}`);
  const names = Array.from({ length: o.partitions }, (_, p) => `${consumerPrefix}-p${p}`);

  const redis = newRedis(o.redisUrl ?? DEFAULT_REDIS_URL);
  let nc: NatsConnection | undefined;
  const runs: PartitionRun[] = [];
  let connected = false;
  let timer: NodeJS.Timeout | undefined;
  try {
    await redis.connect();
    connected = true;
    nc = await connect({ servers: o.natsUrl, noAsyncTraces: true });
    const jsm = await nc.jetstreamManager();

    await deleteKeys(redis, `${keyPrefix}:u:*`);
    const memBefore = await usedMemory(redis);
    const write = o.mode === "lua" ? luaWriter(redis, String(await redis.script("LOAD", LUA_APPLY))) : pipelineWriter(redis);

    for (let p = 0; p < o.partitions; p++) {
      try {
        await jsm.consumers.delete(s.eventStream, names[p]!);
      } catch {
        // not there
      }
      await jsm.consumers.add(s.eventStream, {
        durable_name: names[p]!,
        filter_subject: s.events(p),
        ack_policy: AckPolicy.All,
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: maxAckPending,
        ack_wait: nanos(60_000),
        max_deliver: -1,
      });
    }

    let events = 0;
    let invalid = 0;
    let redeliveries = 0;
    let batches = 0;
    let redisCommands = 0;
    let finish!: () => void;
    let abort!: (err: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      finish = res;
      abort = rej;
    });
    const t0 = performance.now();
    let t1 = 0;
    timer = setTimeout(() => abort(new Error(`redis baseline (${o.mode}): ${events} of ${o.expected} events applied within ${o.timeoutMs} ms`)), o.timeoutMs);
    for (let p = 0; p < o.partitions; p++) {
      const run = new PartitionRun(
        maxBatch,
        keyPrefix,
        write,
        (b) => {
          events += b.messages;
          invalid += b.invalid;
          redeliveries += b.redeliveries;
          redisCommands += b.commands;
          batches++;
          if (events >= o.expected && t1 === 0) {
            t1 = performance.now();
            finish();
          }
        },
        (err) => abort(err),
      );
      runs.push(run);
      await run.start(nc, s.eventStream, names[p]!, Math.min(8192, maxBatch * 2));
    }
    await done;
    clearTimeout(timer);
    for (const r of runs) r.stop();
    await Promise.all(runs.map((r) => r.drained()));
    const seconds = (t1 - t0) / 1000;
    return {
      events,
      seconds,
      eventsPerSec: events / seconds,
      mode: o.mode,
      redisUsedMemoryBytes: await usedMemory(redis),
      redisUsedMemoryBeforeBytes: memBefore,
      users: await countKeys(redis, `${keyPrefix}:u:*`),
      batches,
      redisCommands,
      invalid,
      redeliveries,
    };
  } finally {
    clearTimeout(timer);
    for (const r of runs) r.stop();
    await Promise.all(runs.map((r) => r.drained()));
    if (nc !== undefined && !nc.isClosed()) {
      try {
        const jsm = await nc.jetstreamManager();
        for (const name of names) await jsm.consumers.delete(s.eventStream, name).catch(() => undefined);
      } finally {
        await nc.close();
      }
    }
    if (connected && !o.keepKeys) await deleteKeys(redis, `${keyPrefix}:u:*`).catch(() => undefined);
    redis.disconnect();
  }
}

/**
 * The raw pipelined HINCRBY rate (commands/s) of this Redis through the same
 * client as the baseline (ioredis), with no NATS and no decoding: `n`
 * HINCRBYs over `users` keys (default 100k) in pipelines of `batch` (default
 * 1024) with up to `inFlight` (default 4) pipelines outstanding. The limit of
 * the pipeline mode, which sends 4-5 commands per event. On this machine it is
 * bound by the client's per-command JavaScript work, not by Redis: see
 * measureRedisServerRaw for what the server itself takes. Its keys
 * (`<keyPrefix>:raw:*`) are deleted before and after.
 */
export async function measureRedisRaw(
  redisUrl: string,
  n: number,
  o: { batch?: number; inFlight?: number; users?: number; keyPrefix?: string } = {},
): Promise<number> {
  const batch = o.batch ?? 1024;
  const inFlight = o.inFlight ?? 4;
  const users = o.users ?? 100_000;
  const prefix = `${o.keyPrefix ?? DEFAULT_KEY_PREFIX}:raw`;
  if (!(n >= 1) || !(batch >= 1) || !(inFlight >= 1) || !(users >= 1)) throw new Error("measureRedisRaw: n, batch, inFlight and users must be positive");
  const keys = Array.from({ length: Math.min(users, n) }, (_, i) => `${prefix}:${i}`);
  const redis = newRedis(redisUrl);
  try {
    await redis.connect();
    await deleteKeys(redis, `${prefix}:*`);
    const outstanding = new Set<Promise<void>>();
    let sent = 0;
    const t0 = performance.now();
    while (sent < n) {
      const p = redis.pipeline();
      const end = Math.min(n, sent + batch);
      for (let i = sent; i < end; i++) p.hincrby(keys[i % keys.length]!, "f", 1);
      sent = end;
      const exec: Promise<void> = p.exec().then((replies) => {
        if (replies === null) throw new Error("redis pipeline was discarded");
        for (const [err] of replies) if (err) throw err;
      });
      const tracked: Promise<void> = exec.finally(() => outstanding.delete(tracked));
      tracked.catch(() => undefined); // rejections are seen by race/all below
      outstanding.add(tracked);
      if (outstanding.size >= inFlight) await Promise.race(outstanding);
    }
    await Promise.all(outstanding);
    const seconds = (performance.now() - t0) / 1000;
    await deleteKeys(redis, `${prefix}:*`);
    return n / seconds;
  } finally {
    redis.disconnect();
  }
}

/** RESP encoding of one command. */
function resp(args: string[]): Buffer {
  let out = `*${args.length}\r\n`;
  for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return Buffer.from(out);
}

/**
 * The pipelined HINCRBY rate (commands/s) that the Redis server itself takes,
 * with no client library: pre-encoded RESP commands written on one socket
 * (batches of `batch`, at most `inFlight` batches unanswered) and replies
 * counted by line. Same keys and defaults as measureRedisRaw; the ratio of
 * the two is what the JavaScript client costs. Fails after timeoutMs (default
 * 60000). Its keys are deleted before and, unless keepKeys, after.
 */
export async function measureRedisServerRaw(
  redisUrl: string,
  n: number,
  o: { batch?: number; inFlight?: number; users?: number; keyPrefix?: string; timeoutMs?: number; keepKeys?: boolean } = {},
): Promise<number> {
  const batch = o.batch ?? 1024;
  const inFlight = o.inFlight ?? 4;
  const users = Math.min(o.users ?? 100_000, n);
  const prefix = `${o.keyPrefix ?? DEFAULT_KEY_PREFIX}:raw`;
  const timeoutMs = o.timeoutMs ?? 60_000;
  if (!(n >= 1) || !(batch >= 1) || !(inFlight >= 1) || !(users >= 1)) throw new Error("measureRedisServerRaw: n, batch, inFlight and users must be positive");
  const u = new URL(redisUrl);
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1") || "127.0.0.1";
  const port = u.port ? Number(u.port) : 6379;
  const cmds = Array.from({ length: users }, (_, i) => resp(["HINCRBY", `${prefix}:${i}`, "f", "1"]));
  const admin = newRedis(redisUrl);
  try {
    await admin.connect();
    await deleteKeys(admin, `${prefix}:*`);
    const seconds = await new Promise<number>((resolve, reject) => {
      const socket = netConnect({ host, port });
      let sent = 0;
      let replies = 0;
      let atLineStart = true;
      let t0 = 0;
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new Error(`measureRedisServerRaw: ${replies} of ${n} replies within ${timeoutMs} ms`)), timeoutMs);
      const pump = (): void => {
        while (sent < n && sent - replies < inFlight * batch) {
          const end = Math.min(n, sent + batch);
          const parts: Buffer[] = [];
          for (let i = sent; i < end; i++) parts.push(cmds[i % users]!);
          sent = end;
          socket.write(Buffer.concat(parts));
        }
      };
      socket.on("connect", () => {
        t0 = performance.now();
        pump();
      });
      socket.on("data", (chunk: Buffer) => {
        for (let i = 0; i < chunk.length; i++) {
          const c = chunk[i]!;
          if (atLineStart && c === 0x2d) return fail(new Error(`redis replied with an error: ${chunk.subarray(i, i + 200).toString("latin1").split("\r\n")[0]}`));
          atLineStart = c === 0x0a;
          if (atLineStart) replies++;
        }
        if (replies >= n) {
          const s = (performance.now() - t0) / 1000;
          clearTimeout(timer);
          socket.destroy();
          resolve(s);
        } else pump();
      });
      socket.on("error", (err) => fail(err));
      socket.on("close", () => {
        if (replies < n) fail(new Error(`measureRedisServerRaw: connection closed after ${replies} of ${n} replies`));
      });
    });
    if (!o.keepKeys) await deleteKeys(admin, `${prefix}:*`);
    return n / seconds;
  } finally {
    admin.disconnect();
  }
}
