/**
 * One engine node of a cluster (README "Scale-out"): the partitions it owns
 * through leases (src/bus/leases.ts), each restored from its changelog
 * (src/bus/changelog.ts) on takeover and consumed by a durable consumer of
 * its own, with every acknowledgement gated by the changelog chain and the
 * lease; and where queries of a partition are answered (QueryRoute).
 *
 * Takeover of partition p with lease epoch e, in order:
 *  1. wait until this node's previous consumer of p (if any) has settled;
 *  2. read p's changelog to its end and append this owner's mark expecting
 *     that end (a write in between: read again);
 *  3. delete p's other durable consumers (the old owner's, and the
 *     single-node one): after the mark, so an old owner that is still
 *     running can neither acknowledge (its consumer is gone) nor commit (its
 *     changelog records are refused);
 *  4. replace p's users in LMDB with the changelog's (LMDB is a cache);
 *  5. create this owner's consumer `<prefix>-p<p>-<node>-e<e>` after the
 *     restored position, and serve queries of p.
 */
import type { JetStreamClient, JetStreamManager } from "nats";
import { Changelog, FencedError, ensureChangelogs } from "../bus/changelog.js";
import { LeaseTable, retrySetup } from "../bus/leases.js";
import type { ConsumerFence, PartitionConsumer } from "../bus/partition-consumer.js";
import { consumerNames, deleteConsumer, deleteOtherConsumers } from "../bus/streams.js";
import type { Subjects } from "../bus/subjects.js";
import type { QueryRoute } from "../api/profile-endpoint.js";
import type { CompiledClusterOptions } from "../config/engine-options.js";
import type { Logger } from "../obs/logger.js";
import type { ClusterMetrics } from "../obs/metrics.js";
import type { ShardPool } from "../shard/shard-pool.js";

/** Most attempts at a takeover mark while another writer keeps changing the changelog. */
const MARK_ATTEMPTS = 20;
/** Attempts at deleting a lost or released partition's own consumer while JetStream does not answer (the new owner's sweep removes it otherwise). */
const DELETE_ATTEMPTS = 10;
/** The sweep of stray consumers runs every this many lease periods, and at least this often. */
const SWEEP_LEASES = 3;
const SWEEP_MIN_MS = 5_000;

export interface ClusterNodeDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  subjects: Subjects;
  partitions: number;
  pool: ShardPool;
  metrics: ClusterMetrics;
  log: Logger;
  /** Makes (does not start) a partition's consumer with this owner's fence. */
  consumer(partition: number, fence: ConsumerFence): PartitionConsumer;
}

interface Served {
  consumer: PartitionConsumer;
  /** The durable consumer's name (`<prefix>-p<p>-<node>-e<epoch>`). */
  consumerName: string;
  changelog: Changelog;
  epoch: number;
  /**
   * The partition's last event sequence when this node took it over: queries
   * are answered only once the consumer has settled up to it. The old owner
   * may have shown states it had applied but not yet written to the
   * changelog; answering before catching up with them could show a user
   * going back in time.
   */
  catchUpSeq: number;
}

export class ClusterNode implements QueryRoute {
  readonly #o: CompiledClusterOptions;
  readonly #d: ClusterNodeDeps;
  readonly #log: Logger;
  readonly #leases: LeaseTable;
  readonly #served = new Map<number, Served>();
  /** A partition's consumer being fenced or drained: a new takeover of it waits for this. */
  readonly #settling = new Map<number, Promise<void>>();
  readonly nodeSubjects: { profile: string; recommend: string };
  #closed = false;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> = Promise.resolve();

  constructor(o: CompiledClusterOptions, d: ClusterNodeDeps) {
    this.#o = o;
    this.#d = d;
    this.#log = d.log.child({ component: "cluster", node: o.nodeId });
    this.nodeSubjects = this.#nodeSubjects(o.nodeId);
    this.#leases = new LeaseTable(d.js, {
      bucket: `${d.subjects.eventStream.slice(0, -"_EVENTS".length)}_LEASES`, nodeId: o.nodeId, partitions: d.partitions, leaseMs: o.leaseMs, replicas: o.replicas,
    }, {
      acquired: (p, epoch) => this.#takeOver(p, epoch),
      release: (p) => this.#release(p),
      lost: (p) => this.#lost(p, "lease lost"),
    }, d.log);
  }

  #nodeSubjects(node: string): { profile: string; recommend: string } {
    const base = `${this.#d.subjects.prefix}.node.${node}`;
    return { profile: `${base}.profile.get`, recommend: `${base}.recommend` };
  }

  async start(): Promise<void> {
    await ensureChangelogs(this.#d.jsm, this.#d.subjects.prefix, this.#d.partitions, this.#o.replicas);
    await this.#leases.start();
    const every = Math.max(SWEEP_MIN_MS, SWEEP_LEASES * this.#o.leaseMs);
    this.#sweepTimer = setInterval(() => {
      this.#sweeping = this.#sweeping.then(() => this.sweep()).then(() => undefined, (err: unknown) => this.#log.warn({ err }, "consumer sweep failed; retried at the next one"));
    }, every);
    this.#sweepTimer.unref();
    this.#log.info({ leaseMs: this.#o.leaseMs, partitions: this.#d.partitions }, "cluster node started");
  }

  /** Partitions this node serves now. */
  served(): number[] {
    return [...this.#served.keys()].sort((a, b) => a - b);
  }

  /** Partitions this node serves and holds a current lease on: the only ones whose time-driven work (audience ticks) runs here. */
  leased(): number[] {
    return this.served().filter((p) => this.#leases.holds(p));
  }

  get leases(): LeaseTable {
    return this.#leases;
  }

  decide(partition: number): ReturnType<QueryRoute["decide"]> {
    const retryAfterMs = Math.max(100, Math.round(this.#o.leaseMs / 3));
    const served = this.#served.get(partition);
    if (served !== undefined && this.#leases.holds(partition)) {
      if (served.consumer.settledSeq >= served.catchUpSeq) return { local: true };
      return { unavailable: `partition ${partition} is catching up after a takeover`, retryAfterMs: 100 };
    }
    const owner = this.#leases.ownerOf(partition);
    if (owner === undefined || owner.node === this.#o.nodeId || owner.ageMs >= this.#o.leaseMs) {
      return { unavailable: `partition ${partition} has no serving owner right now (it is moving between nodes)`, retryAfterMs };
    }
    return { forward: this.#nodeSubjects(owner.node), timeoutMs: Math.min(2000, Math.max(250, Math.round(this.#o.leaseMs / 2))) };
  }

  async #takeOver(p: number, epoch: number): Promise<void> {
    const t0 = performance.now();
    const d = this.#d;
    await this.#settling.get(p);
    const changelog = new Changelog(d.js, d.jsm, d.subjects.prefix, p);
    let restored = await changelog.read();
    for (let attempt = 1; ; attempt++) {
      if (this.#leases.epochOf(p) !== epoch) throw new Error(`partition ${p}: the lease moved during the takeover`);
      try {
        await changelog.mark(this.#o.nodeId, epoch, restored);
        break;
      } catch (err) {
        if (!(err instanceof FencedError) || attempt >= MARK_ATTEMPTS) throw err;
        await new Promise((r) => setTimeout(r, 50 * attempt));
        restored = await changelog.read();
      }
    }
    const name = `${d.subjects.consumer(p)}-${this.#o.nodeId}-e${epoch}`;
    const deleted = await deleteOtherConsumers(d.jsm, d.subjects, p, name, epoch);
    const users = [...restored.users].map(([k, v]) => [k, v.state, v.seq] as [string, Uint8Array | null, number]);
    const states = await d.pool.adopt(p, users, restored.position);
    const fence: ConsumerFence = {
      name,
      owns: () => this.#leases.holds(p) && this.#leases.epochOf(p) === epoch,
      commit: (r) => {
        if (this.#leases.epochOf(p) !== epoch) return Promise.resolve(false);
        const changes = r.changes ?? [];
        const t = performance.now();
        // Handed over now, in batch order (group commit); the chain of expected ids fences another owner's mark.
        const appended = changelog.append(r.lastSeq, changes);
        return (async () => {
          try {
            const w = await appended;
            if (changes.length > 0) {
              const node = this.#o.nodeId;
              if (w.records > 0) d.metrics.changelogRecords.inc({ node }, w.records);
              if (w.bytes > 0) d.metrics.changelogBytes.inc({ node }, w.bytes);
              d.metrics.changelogSeconds.observe({ node }, (performance.now() - t) / 1000);
            }
          } catch (err) {
            if (err instanceof FencedError) {
              this.#log.warn({ partition: p, epoch, reason: err.message }, "changelog refused a commit: fenced");
              return false;
            }
            throw err;
          }
          // The lease is confirmed before the acknowledgement: after a pause past it, only by a renewal that succeeds now.
          return this.#leases.epochOf(p) === epoch && (await this.#leases.confirm(p));
        })();
      },
      onFenced: (reason) => this.#lost(p, reason),
    };
    const catchUpSeq = await this.#lastEventSeq(p);
    const consumer = d.consumer(p, fence);
    try {
      await consumer.start(restored.position);
    } catch (err) {
      // Its creation may still be carried out by JetStream after this gave up (a broker restart): removed here or by the sweep.
      await consumer.fence();
      void this.#deleteOwn(p, name);
      throw err;
    }
    if (this.#closed || this.#leases.epochOf(p) !== epoch) {
      await consumer.fence();
      void this.#deleteOwn(p, name);
      throw new Error(`partition ${p}: lost during the takeover`);
    }
    this.#served.set(p, { consumer, consumerName: name, changelog, epoch, catchUpSeq });
    const node = this.#o.nodeId;
    d.metrics.takeovers.inc({ node });
    d.metrics.changelogRestoredRecords.inc({ node }, restored.users.size);
    d.metrics.partitionsOwned.set({ node }, this.#served.size);
    const seconds = (performance.now() - t0) / 1000;
    d.metrics.takeoverSeconds.observe({ node }, seconds);
    this.#log.info({ partition: p, epoch, position: restored.position, users: restored.users.size, states, changelogBytes: restored.bytes, deletedConsumers: deleted, seconds },
      "partition taken over");
  }

  /** The stream sequence of the partition's last event, 0 when it has none. */
  async #lastEventSeq(p: number): Promise<number> {
    try {
      return (await this.#d.jsm.streams.getMessage(this.#d.subjects.eventStream, { last_by_subj: this.#d.subjects.events(p) })).seq;
    } catch (err) {
      if (/no message found|10037|404/i.test((err as Error).message ?? "")) return 0;
      throw err;
    }
  }

  /** Graceful: every handed-over batch is committed to the changelog and acknowledged; then the lease is released. */
  async #release(p: number): Promise<void> {
    const s = this.#served.get(p);
    if (s === undefined) return;
    this.#served.delete(p);
    this.#d.metrics.partitionsOwned.set({ node: this.#o.nodeId }, this.#served.size);
    const done = s.consumer.drain().then(() => this.#deleteOwn(p, s.consumerName));
    this.#settling.set(p, done.catch(() => undefined));
    await done;
    this.#log.info({ partition: p, epoch: s.epoch }, "partition released");
  }

  /** Fenced: stop at once, acknowledge nothing more; the lease is given back if this node still holds it (its chain broke). */
  #lost(p: number, reason: string): void {
    const s = this.#served.get(p);
    if (s === undefined) return;
    this.#served.delete(p);
    const node = this.#o.nodeId;
    this.#d.metrics.partitionsOwned.set({ node }, this.#served.size);
    this.#d.metrics.fenced.inc({ node });
    this.#log.warn({ partition: p, epoch: s.epoch, reason }, "partition fenced: nothing more is committed or acknowledged for it here");
    const settled = s.consumer.fence().then(() => this.#leases.drop(p)).catch(() => undefined);
    this.#settling.set(p, settled);
    void settled.then(() => this.#deleteOwn(p, s.consumerName));
  }

  /**
   * Deletes this node's own durable consumer of a partition it no longer
   * serves (after its last batch settled), so that nothing is left pending
   * on it. Best effort with bounded retries: while JetStream does not answer
   * (a broker restart), the partition's next owner removes it in its sweep.
   */
  async #deleteOwn(p: number, name: string): Promise<void> {
    await retrySetup(`delete consumer ${name}`, () => deleteConsumer(this.#d.jsm, this.#d.subjects, name), DELETE_ATTEMPTS).catch((err: unknown) =>
      this.#log.warn({ err, partition: p, consumer: name }, "cannot delete this node's consumer of a partition it no longer serves; its next owner's sweep will"));
  }

  /**
   * Removes the stray consumers of the partitions this node serves under a
   * current lease: an earlier owner's (a lower lease epoch) or the
   * single-node one. A takeover deletes them once, after its mark; one can
   * still appear later: a fenced owner that re-created its consumer just
   * before it noticed, or a creation JetStream carried out after its caller
   * gave up across a broker restart. Left alone, it would keep its messages
   * pending forever. Run every SWEEP_LEASES lease periods; resolves with
   * the names deleted.
   */
  async sweep(): Promise<string[]> {
    const mine = [...this.#served].filter(([p, s]) => this.#leases.holds(p) && this.#leases.epochOf(p) === s.epoch);
    if (mine.length === 0) return [];
    const names = await consumerNames(this.#d.jsm, this.#d.subjects);
    const deleted: string[] = [];
    for (const [p, s] of mine) deleted.push(...await deleteOtherConsumers(this.#d.jsm, this.#d.subjects, p, s.consumerName, s.epoch, names));
    if (deleted.length > 0) {
      this.#d.metrics.strayConsumers.inc({ node: this.#o.nodeId }, deleted.length);
      this.#log.warn({ deleted }, "deleted stray consumers of partitions this node owns (an earlier owner's)");
    }
    return deleted;
  }

  /** Drains every served partition and releases its lease (the other nodes take them at once). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    await this.#sweeping;
    await this.#leases.stop();
    await Promise.all(this.#settling.values());
  }
}
