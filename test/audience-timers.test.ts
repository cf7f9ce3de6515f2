/**
 * The audience timers kept in memory with a coarse LMDB index
 * (src/shard/audience-timers.ts): a shard's AudienceRunner on a real LMDB,
 * fed random events in batches per partition as a shard applies them, with
 * the due timers fired at each batch's time. A run that restarts (the store
 * closed and reopened, a new runner reading what was committed) at several
 * points, with its index compacted at every evaluation, must give exactly
 * the transitions of a run that never restarts; and after every commit each
 * user's due has an index entry at or before it, and no stored due is later
 * than the shard's.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Actor } from "../src/actors/actor.js";
import { eventBit, type AudienceDefinition } from "../src/actors/audience-rules.js";
import { DAY_MS, type TransitionReason } from "../src/actors/audience-state.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import type { OutboundMessage } from "../src/bus/event-batch.js";
import { ActorCache } from "../src/shard/actor-cache.js";
import { AudienceRunner } from "../src/shard/audience-runner.js";
import { AudienceTimers, type CompactionOptions } from "../src/shard/audience-timers.js";
import { PROFILE_PART, ProfileStore, type SideWrites } from "../src/store/profile-store.js";
import { EventType } from "../src/wire/proto.js";
import { partitionOf } from "../src/wire/partition.js";
import { pb } from "../src/wire/proto.js";

const PARTITIONS = 4;
const HOUR = 3_600_000;

const DEFS: AudienceDefinition[] = [
  { id: "browsing-c0", rule: { session: { category: "c0", topN: 1 } } },
  { id: "abandoners", rule: { cartAbandoned: { afterMinutes: 60 } } },
  { id: "active-1d", rule: { field: "events.1d", op: ">=", value: 1 } },
  { id: "dormant", rule: { field: "daysSinceSeen", op: ">=", value: 1.5 } },
  { id: "lapsed", rule: { all: [{ field: "orders", op: ">=", value: 1 }, { field: "daysSincePurchase", op: ">=", value: 2 }] } },
  { id: "fans-c1", rule: { affinity: { dimension: "category", key: "c1", minScore: 2 } } },
];

function rng(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
}

/** Random events of `users` users over `days` days, in time order. */
function events(seed: number, n: number, users: number, t0: number, days: number): { user: string; e: ProfileEvent }[] {
  const rnd = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const r = rnd();
    const type = r < 0.7 ? EventType.VIEW : r < 0.9 ? EventType.ADD_TO_CART : EventType.PURCHASE;
    return {
      user: `u${Math.floor(rnd() * users)}`,
      e: {
        type, timestampMs: t0 + Math.floor((i / n) * days * DAY_MS), itemId: "i", categoryId: `c${Math.floor(rnd() * 3)}`, brand: "", price: 10,
        quantity: 1, currency: "", sessionId: "", orderId: type === EventType.PURCHASE ? `o${i}` : "",
      },
    };
  });
}

/** A shard's audience side over one data dir, as batch-applier.ts drives it (apply, due timers, evaluate, one commit per partition batch). */
class Shard {
  store!: ProfileStore;
  actors!: ActorCache;
  runner!: AudienceRunner;
  readonly transitions: string[] = [];
  batchNo = 0;
  readonly seqs = new Map<number, number>();
  /** Users evaluated since the shard (re)opened (a reloaded state's due may be earlier than its true one). */
  evaluated = new Set<string>();
  constructor(readonly dir: string, readonly compaction?: Partial<CompactionOptions>) {
    this.open();
  }

  open(): void {
    this.store = new ProfileStore({ dataDir: this.dir });
    this.actors = new ActorCache(this.store, 100_000);
    this.runner = new AudienceRunner({
      shard: 0, partitions: Array.from({ length: PARTITIONS }, (_, i) => i), partitionCount: PARTITIONS, store: this.store, actors: this.actors,
      profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: false, backfillChunk: 1000, ...(this.compaction !== undefined ? { timerCompaction: this.compaction } : {}),
    });
    this.runner.set(DEFS);
    this.evaluated = new Set();
  }

  async restart(): Promise<void> {
    await this.store.close();
    this.open();
  }

  /** One batch of a partition at `now`: its events (possibly none) and the partition's due timers. */
  async batch(p: number, evs: { user: string; e: ProfileEvent }[], now: number): Promise<void> {
    const batchNo = ++this.batchNo;
    const dirty = new Map<string, Actor>();
    const types = new Map<string, number>();
    for (const { user, e } of evs) {
      const a = this.actors.actor(user);
      applyEvent(a.state, e, PROFILE_DEFAULTS);
      this.runner.observe(a.state, e, p);
      a.lastBatch = batchNo;
      dirty.set(user, a);
      types.set(user, (types.get(user) ?? 0) | eventBit(e.type));
    }
    const evaluated: [string, Actor, TransitionReason, number?][] = [...dirty].map(([id, a]) => [id, a, "event", types.get(id)]);
    const withEvents = evaluated.length;
    for (const [, key] of this.runner.dueTimers(p, now)) {
      if (dirty.has(key)) continue;
      const a = this.actors.actor(key);
      a.lastBatch = batchNo;
      dirty.set(key, a);
      evaluated.push([key, a, "time"]);
    }
    const side: SideWrites = { puts: [], removes: [] };
    const out: OutboundMessage[] = [];
    const changed = this.runner.evaluate(p, evaluated, now, side, out);
    for (const [id] of evaluated) this.evaluated.add(id);
    for (const m of out) {
      const t = pb.AudienceTransition.decode(m.data);
      this.transitions.push(`${m.msgId} ${t.entered ? "in" : "out"} ${Number(t.atMs)} ${t.reason}`);
    }
    const seq = (this.seqs.get(p) ?? 0) + 1;
    this.seqs.set(p, seq);
    // What batch-applier.ts writes: the profiles of users with events, and the memberships records that changed.
    const states: [string, UserState, number][] = [];
    evaluated.forEach(([id, a], i) => {
      const parts = (i < withEvents ? PROFILE_PART : 0) | (changed.get(id) ?? 0);
      if (parts !== 0) states.push([id, a.state, parts]);
    });
    await this.store.commitBatch(p, seq, states, side);
    this.actors.evict(batchNo);
  }

  /**
   * The invariants of the timers' durable part: each user evaluated since the shard (re)opened whose due is set has a
   * committed index entry at or before that due, and no stored due is later than the shard's (a due that moves later
   * is not written: audience-runner.ts).
   */
  checkIndex(): string[] {
    const entries = new Map<string, number>();
    for (const { key } of this.store.audienceRange(["t", 0], ["t", Infinity])) {
      const user = key[3] as string;
      entries.set(user, Math.min(entries.get(user) ?? Infinity, key[2] as number));
    }
    const problems: string[] = [];
    const never = (x: number) => (x === 0 ? Infinity : x);
    for (const user of this.evaluated) {
      const due = this.actors.state(user)?.aud?.due ?? 0;
      const at = entries.get(user);
      if (due > 0 && (at === undefined || at > due)) problems.push(`${user}: due ${due}, index entry ${at ?? "none"}`);
    }
    for (const user of this.store.profileKeys("", 1_000_000)) {
      const stored = this.store.getState(user)?.aud?.due ?? 0;
      const due = this.actors.state(user)?.aud?.due ?? 0;
      if (never(stored) > never(due)) problems.push(`${user}: stored due ${stored} is later than the shard's ${due}`);
    }
    return problems;
  }
}

/** Feeds the events in fetches of 40, each split per partition, then lets 3 days pass, 3 hours at a time; restarts before the fetches listed. */
async function drive(s: Shard, evs: { user: string; e: ProfileEvent }[], restartAt: ReadonlySet<number>, problems: string[]): Promise<void> {
  for (let f = 0, k = 0; f < evs.length; f += 40, k++) {
    if (restartAt.has(k)) await s.restart();
    const fetch = evs.slice(f, f + 40);
    const now = fetch[fetch.length - 1]!.e.timestampMs;
    const byP = new Map<number, { user: string; e: ProfileEvent }[]>();
    for (let p = 0; p < PARTITIONS; p++) byP.set(p, []);
    for (const x of fetch) byP.get(partitionOf(x.user, PARTITIONS))!.push(x);
    await Promise.all([...byP].map(([p, xs]) => s.batch(p, xs, now)));
    problems.push(...s.checkIndex());
  }
  const end = evs[evs.length - 1]!.e.timestampMs;
  for (let t = end + HOUR, k = 0; t <= end + 3 * DAY_MS; t += 3 * HOUR, k++) {
    if (k === 5 && restartAt.size > 0) await s.restart();
    await Promise.all(Array.from({ length: PARTITIONS }, (_, p) => s.batch(p, [], t)));
    problems.push(...s.checkIndex());
  }
}

describe("audience timers", () => {
  it("audience timers - the schedule fires each user once at its latest due, earliest first, through moves, drops and heap rebuilds", () => {
    const rnd = rng(5);
    const timers = new AudienceTimers([0], []);
    const due = new Map<string, number>();
    const side: SideWrites = { puts: [], removes: [] };
    // Many moves per user: stale heap entries pile up, so the heap is rebuilt from the schedule several times.
    for (let i = 0; i < 20_000; i++) {
      const user = `u${Math.floor(rnd() * 500)}`;
      if (rnd() < 0.05) {
        timers.drop(0, user, side);
        due.delete(user);
        continue;
      }
      const t = 1 + Math.floor(rnd() * 100_000);
      timers.set(0, user, t, 0, side);
      due.set(user, t);
    }
    const fired: [number, string][] = [];
    for (let now = 0; now <= 100_000; now += 997) fired.push(...timers.takeDue(0, now, 1_000_000));
    expect(fired.map(([t]) => t)).toEqual([...fired.map(([t]) => t)].sort((x, y) => x - y));
    expect(new Map(fired.map(([t, u]) => [u, t]))).toEqual(due);
    expect(fired.length).toBe(due.size);
    expect(timers.scheduled).toBe(0);
  });

  it("audience timers - restarts with the index compacted at every evaluation give exactly the transitions of a run without restarts", async () => {
    const t0 = Date.UTC(2026, 0, 1);
    const evs = events(11, 800, 60, t0, 3);
    const dirs = [mkdtempSync(join(tmpdir(), "portrait-audtimers-a-")), mkdtempSync(join(tmpdir(), "portrait-audtimers-b-"))];
    try {
      const reference = new Shard(dirs[0]!);
      const problemsRef: string[] = [];
      await drive(reference, evs, new Set(), problemsRef);
      await reference.store.close();

      const restarted = new Shard(dirs[1]!, { compactAt: 1, compactEveryMs: 0 });
      const problems: string[] = [];
      await drive(restarted, evs, new Set([3, 9, 14, 18]), problems);
      await restarted.store.close();

      expect(problemsRef).toEqual([]);
      expect(problems).toEqual([]);
      // Time-driven transitions of several kinds are in the run, and every message id once.
      const time = reference.transitions.filter((x) => x.endsWith(" time"));
      for (const id of ["browsing-c0", "abandoners", "active-1d", "dormant", "lapsed", "fans-c1"]) expect(time.some((x) => x.startsWith(`${id}:`)), id).toBe(true);
      expect(new Set(reference.transitions.map((x) => x.split(" ")[0])).size).toBe(reference.transitions.length);
      expect([...restarted.transitions].sort()).toEqual([...reference.transitions].sort());
    } finally {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
  });
});
