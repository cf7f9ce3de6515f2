/**
 * Partition leases kept in a NATS KV bucket (<PREFIX>_LEASES), shared by the
 * engine nodes of one prefix (README "Scale-out").
 *
 * Keys: `node.<id>`, a node's heartbeat (put every leaseMs/3); `p.<n>`,
 * partition n's lease: JSON {node, epoch} (node "" = released). Every write
 * of a lease is a compare-and-set on the revision the writer last saw, so two
 * nodes can never both believe a write of theirs took the lease.
 *
 * Time: expiry is judged on each node's own clock, never on another's. A key
 * is stale when its revision has not changed for leaseMs since this node saw
 * it change (or first saw it); a node or lease seen only now is therefore
 * given a whole leaseMs. The owner counts its lease valid for 0.8 leaseMs from
 * the moment it sent the renewal that succeeded: every other node saw that
 * revision later than it was sent, so it judges the lease expired later than
 * the owner stops using it. A pause longer than that (SIGSTOP, a long GC)
 * makes the owner's lease invalid on its own clock; it may then commit only
 * after a renewal by compare-and-set succeeds (confirm), which fails if any
 * other node took the lease meanwhile.
 *
 * Assignment: every tick each node computes the balanced rendezvous owners
 * (partition-assignment.ts) over the live nodes, takes the partitions
 * assigned to it whose lease is released, missing or stale, and gives up
 * (drain, then release) the partitions assigned to another live node.
 */
import type { JetStreamClient, KV, KvEntry } from "nats";
import type { Logger } from "../obs/logger.js";
import { assignPartitions } from "./partition-assignment.js";

export interface LeaseOptions {
  bucket: string;
  nodeId: string;
  partitions: number;
  leaseMs: number;
  replicas: number;
}

/** What the lease table asks of its owner (the cluster node). */
export interface LeaseHooks {
  /** The lease of `partition` was taken with `epoch`: restore and start consuming. Resolves when the partition is served. */
  acquired(partition: number, epoch: number): Promise<void>;
  /** Stop consuming `partition` and settle what was handed over (graceful: the lease is released after it resolves). */
  release(partition: number): Promise<void>;
  /** The lease was lost (another node took it, or a renewal failed): stop at once and acknowledge nothing more. */
  lost(partition: number): void;
}

interface Seen {
  rev: number;
  /** Local time this node saw the revision appear. */
  atMs: number;
  value: { node: string; epoch: number } | undefined;
  /** The key was deleted (a node that stopped cleanly deletes its heartbeat). */
  deleted: boolean;
}

interface Held {
  epoch: number;
  rev: number;
  /** Local time until which this node may commit for the partition without asking NATS. */
  validUntilMs: number;
  state: "taking" | "serving" | "releasing";
  /** The renewal in flight, if any. */
  renewing?: Promise<boolean> | undefined;
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

function leaseValue(e: KvEntry): { node: string; epoch: number } | undefined {
  if (e.operation !== "PUT" || e.value.length === 0) return undefined;
  try {
    const v = JSON.parse(text.decode(e.value)) as { node?: unknown; epoch?: unknown };
    return typeof v.node === "string" && typeof v.epoch === "number" ? { node: v.node, epoch: v.epoch } : undefined;
  } catch {
    return undefined;
  }
}

/** Bounded retries of a setup call against a fresh clustered bucket (nats-server 2.9 answers 503 for a moment, or not at all to racing creators). */
export async function retrySetup<T>(what: string, f: () => Promise<T>, attempts = 20): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await f();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250 + 50 * i));
    }
  }
  throw new Error(`${what}: ${(last as Error)?.message ?? String(last)}`, { cause: last });
}

export class LeaseTable {
  readonly #o: LeaseOptions;
  readonly #js: JetStreamClient;
  readonly #log: Logger;
  readonly #hooks: LeaseHooks;
  #kv!: KV;
  readonly #seen = new Map<string, Seen>();
  readonly #held = new Map<number, Held>();
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #watch: { stop(): void } | undefined;
  #stopped = false;
  readonly #startedMs = Date.now();

  constructor(js: JetStreamClient, o: LeaseOptions, hooks: LeaseHooks, log: Logger) {
    this.#js = js;
    this.#o = o;
    this.#hooks = hooks;
    this.#log = log.child({ component: "leases", node: o.nodeId });
  }

  async start(): Promise<void> {
    this.#kv = await retrySetup(`KV bucket ${this.#o.bucket}`, () => this.#js.views.kv(this.#o.bucket, { history: 1, replicas: this.#o.replicas }));
    const it = await retrySetup("lease watch", () => this.#kv.watch({ key: ">" }));
    this.#watch = it;
    void (async () => {
      for await (const e of it) this.#observe(e);
    })().catch((err: unknown) => this.#log.warn({ err }, "lease watch ended"));
    await retrySetup("first heartbeat", () => this.#heartbeat());
    this.#timer = setInterval(() => {
      if (this.#ticking !== undefined || this.#stopped) return;
      this.#ticking = this.#tick().catch((err: unknown) => this.#log.warn({ err }, "lease tick failed")).finally(() => (this.#ticking = undefined));
    }, Math.max(50, Math.floor(this.#o.leaseMs / 3)));
  }

  #observe(e: KvEntry): void {
    const prev = this.#seen.get(e.key);
    if (prev !== undefined && prev.rev === e.revision) return;
    this.#seen.set(e.key, { rev: e.revision, atMs: Date.now(), value: e.key.startsWith("p.") ? leaseValue(e) : undefined, deleted: e.operation !== "PUT" });
  }

  async #heartbeat(): Promise<void> {
    const rev = await this.#kv.put(`node.${this.#o.nodeId}`, utf8.encode(JSON.stringify({ atMs: Date.now() })));
    this.#observe({ key: `node.${this.#o.nodeId}`, revision: rev, operation: "PUT", value: new Uint8Array() } as unknown as KvEntry);
  }

  /** The live nodes: those whose heartbeat changed within leaseMs on this node's clock (this node always). */
  liveNodes(now = Date.now()): string[] {
    const out = new Set<string>([this.#o.nodeId]);
    for (const [k, s] of this.#seen) if (k.startsWith("node.") && !s.deleted && now - s.atMs < this.#o.leaseMs) out.add(k.slice(5));
    return [...out].sort();
  }

  /** True while this node may commit for `partition` without asking NATS. */
  holds(partition: number): boolean {
    const h = this.#held.get(partition);
    return h !== undefined && Date.now() < h.validUntilMs;
  }

  /** The epoch this node holds `partition` with, if it holds it. */
  epochOf(partition: number): number | undefined {
    return this.#held.get(partition)?.epoch;
  }

  /**
   * True when this node still owns `partition`: at once while its lease is
   * valid on this clock; after a pause, only if a renewal by compare-and-set
   * succeeds now (nobody took it meanwhile). False means fenced.
   */
  async confirm(partition: number): Promise<boolean> {
    if (this.holds(partition)) return true;
    if (!this.#held.has(partition)) return false;
    return this.#renew(partition);
  }

  /** One renewal at a time per lease: a second caller joins the one in flight (two CAS writes on one revision would refuse each other). */
  #renew(p: number): Promise<boolean> {
    const h = this.#held.get(p);
    if (h === undefined) return Promise.resolve(false);
    h.renewing ??= this.#renewOnce(p, h).finally(() => (h.renewing = undefined));
    return h.renewing;
  }

  async #renewOnce(p: number, h: Held): Promise<boolean> {
    const sent = Date.now();
    const value = utf8.encode(JSON.stringify({ node: this.#o.nodeId, epoch: h.epoch }));
    try {
      const rev = await this.#kv.update(`p.${p}`, value, h.rev);
      if (this.#held.get(p) !== h) return false;
      h.rev = rev;
      h.validUntilMs = sent + 0.8 * this.#o.leaseMs;
      return true;
    } catch (err) {
      if (this.#held.get(p) !== h) return false;
      // Wrong last sequence: another node wrote the lease. Anything else (NATS away): keep trying until the lease runs out.
      const msg = (err as Error).message ?? "";
      if (/wrong last sequence|10071/i.test(msg) || Date.now() >= h.validUntilMs + this.#o.leaseMs) {
        this.#log.warn({ partition: p, epoch: h.epoch, reason: msg }, "lease lost");
        this.#held.delete(p);
        this.#hooks.lost(p);
      }
      return false;
    }
  }

  async #tick(): Promise<void> {
    await this.#heartbeat().catch((err: unknown) => this.#log.warn({ err }, "heartbeat failed"));
    await Promise.all([...this.#held.keys()].map((p) => this.#renew(p)));
    const now = Date.now();
    // A node that just started waits one lease period before taking stale leases: it has not seen their heartbeats yet.
    const nodes = this.liveNodes(now);
    const owners = assignPartitions(this.#o.partitions, nodes);
    for (let p = 0; p < this.#o.partitions; p++) {
      const h = this.#held.get(p);
      if (h !== undefined) {
        if (h.state === "serving" && owners[p] !== this.#o.nodeId) void this.#giveUp(p, h);
        continue;
      }
      if (owners[p] !== this.#o.nodeId) continue;
      const s = this.#seen.get(`p.${p}`);
      const free = s === undefined || s.value === undefined || s.value.node === "" ||
        (now - s.atMs >= this.#o.leaseMs && now - this.#startedMs >= this.#o.leaseMs);
      if (free) await this.#take(p, s);
    }
  }

  async #take(p: number, s: Seen | undefined): Promise<void> {
    const epoch = (s?.value?.epoch ?? 0) + 1;
    const sent = Date.now();
    const value = utf8.encode(JSON.stringify({ node: this.#o.nodeId, epoch }));
    let rev: number;
    try {
      rev = s === undefined ? await this.#kv.create(`p.${p}`, value) : await this.#kv.update(`p.${p}`, value, s.rev);
    } catch {
      return; // someone else wrote it first; the watch shows who
    }
    const h: Held = { epoch, rev, validUntilMs: sent + 0.8 * this.#o.leaseMs, state: "taking" };
    this.#held.set(p, h);
    this.#log.info({ partition: p, epoch, previous: s?.value?.node || undefined }, "lease taken");
    void this.#hooks.acquired(p, epoch).then(() => {
      if (this.#held.get(p) === h) h.state = "serving";
    }, (err: unknown) => {
      this.#log.warn({ err, partition: p }, "takeover failed; releasing the lease");
      void this.#release(p, h);
    });
  }

  async #giveUp(p: number, h: Held): Promise<void> {
    h.state = "releasing";
    this.#log.info({ partition: p, epoch: h.epoch }, "partition assigned to another node: draining and releasing");
    await this.#hooks.release(p).catch((err: unknown) => this.#log.warn({ err, partition: p }, "drain before release failed"));
    await this.#release(p, h);
  }

  async #release(p: number, h: Held): Promise<void> {
    if (this.#held.get(p) !== h) return;
    this.#held.delete(p);
    await this.#kv.update(`p.${p}`, utf8.encode(JSON.stringify({ node: "", epoch: h.epoch })), h.rev).catch(() => undefined);
  }

  /**
   * Gives up a partition whose changelog chain broke (fenced, or NATS lost
   * its last message id): released so that the assigned node (perhaps this
   * one) takes it again with a new epoch and a fresh restore.
   */
  async drop(p: number): Promise<void> {
    const h = this.#held.get(p);
    if (h !== undefined) await this.#release(p, h);
  }

  /** The node currently holding `partition` as this node sees it, with the age of its lease on this clock. */
  ownerOf(partition: number): { node: string; ageMs: number } | undefined {
    const s = this.#seen.get(`p.${partition}`);
    if (s?.value === undefined || s.value.node === "") return undefined;
    return { node: s.value.node, ageMs: Date.now() - s.atMs };
  }

  get leaseMs(): number {
    return this.#o.leaseMs;
  }

  /** Partitions held, for graceful shutdown. */
  held(): number[] {
    return [...this.#held.keys()];
  }

  /** Stops the ticks; then drains (hooks.release) and releases every held partition so that the others take them at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#ticking;
    await Promise.all([...this.#held].map(async ([p, h]) => {
      await this.#hooks.release(p).catch(() => undefined);
      await this.#release(p, h);
    }));
    await this.#kv?.delete(`node.${this.#o.nodeId}`).catch(() => undefined);
    this.#watch?.stop();
  }
}
