/**
 * A shard's audience timers: when time alone may change a user's
 * memberships (AudienceState.due). Kept in memory per partition, with only a
 * coarse index in LMDB for restarts.
 *
 * - In memory: per partition a binary min-heap of [due ms, user] and the
 *   user's scheduled due. A due that moves pushes a new heap entry; the old
 *   one is dropped when it reaches the top (it no longer matches the user's
 *   scheduled due). The heap is rebuilt from the schedule when stale entries
 *   make it more than twice as large. Timers fire at the exact due.
 * - In LMDB (the `audiences` db, ["t", partition, time ms, user] -> 1): per
 *   user with a due, one entry at or before the due committed in its state
 *   (a lower bound). It is written with the evaluation that needs it, in the
 *   same commit, only when the due moves earlier than the entry (or the user
 *   had none); a due that moves later keeps the entry. An entry whose time
 *   has passed while the user's due is later ("passed") is moved to the due
 *   by a compaction (`compaction`: at most every COMPACT_EVERY_MS wall ms, or
 *   when a partition has COMPACT_AT passed entries), in the partition's
 *   commit chain, so a user whose timer fires several times between two
 *   compactions costs one move, not one per firing.
 * - At start the index is read whole into the heap (one key per user with a
 *   timer). A user whose entry is early fires early: its evaluation at that
 *   time finds what time changed up to then (an evaluation is exact at any
 *   time: audience-state.ts) and schedules its due. So after a SIGKILL every
 *   committed due fires, and the transitions it makes are the committed
 *   state's: their numbers, and so their message ids, are the same.
 *
 * Memory (estimated, not measured): about 100 bytes per user with a timer
 * (heap entry, schedule and index maps), besides the user id strings.
 */
import type { AudienceKey, SideWrites } from "../store/profile-store.js";

/** Passed index entries of a partition that start a compaction at once. */
export const COMPACT_AT = 4096;
/** Longest wall time, ms, a passed index entry waits for its compaction. */
export const COMPACT_EVERY_MS = 60_000;

/** A binary min-heap of (time, user); parallel arrays. */
class TimerHeap {
  times: number[] = [];
  users: string[] = [];

  get size(): number {
    return this.times.length;
  }

  push(t: number, u: string): void {
    const ts = this.times;
    const us = this.users;
    let i = ts.length;
    ts.push(t);
    us.push(u);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (ts[p]! <= t) break;
      ts[i] = ts[p]!;
      us[i] = us[p]!;
      i = p;
    }
    ts[i] = t;
    us[i] = u;
  }

  /** Removes the top; the caller read it from times[0], users[0]. */
  pop(): void {
    const t = this.times.pop()!;
    const u = this.users.pop()!;
    if (this.times.length === 0) return;
    this.times[0] = t;
    this.users[0] = u;
    this.#down(0);
  }

  /** Rebuilt from scratch (O(n)). */
  rebuild(entries: Iterable<[string, number]>): void {
    this.times = [];
    this.users = [];
    for (const [u, t] of entries) {
      this.times.push(t);
      this.users.push(u);
    }
    for (let i = (this.times.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #down(i: number): void {
    const ts = this.times;
    const us = this.users;
    const n = ts.length;
    const t = ts[i]!;
    const u = us[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && ts[c + 1]! < ts[c]!) c++;
      if (ts[c]! >= t) break;
      ts[i] = ts[c]!;
      us[i] = us[c]!;
      i = c;
    }
    ts[i] = t;
    us[i] = u;
  }
}

/** When passed index entries are compacted (defaults COMPACT_AT, COMPACT_EVERY_MS; tests set them lower). */
export interface CompactionOptions {
  compactAt: number;
  compactEveryMs: number;
}

/** The timers of one partition. */
class PartitionTimers {
  readonly heap = new TimerHeap();
  /** User -> its scheduled due (the heap entry that counts). */
  readonly due = new Map<string, number>();
  /** User -> time of its LMDB index entry. */
  readonly stored = new Map<string, number>();
  /** Users whose index entry has passed while their due is later or none: moved or removed by the next compaction. */
  readonly passed = new Set<string>();
  compactedAt = performance.now();

  schedule(user: string, t: number): void {
    if (t <= 0) {
      this.due.delete(user);
      return;
    }
    if (this.due.get(user) === t) return;
    this.due.set(user, t);
    this.heap.push(t, user);
    if (this.heap.size > 1024 && this.heap.size > 2 * this.due.size) this.heap.rebuild(this.due);
  }
}

export class AudienceTimers {
  readonly #parts = new Map<number, PartitionTimers>();
  readonly #o: CompactionOptions;

  /** `stored`: the committed index entries of the owned partitions, [partition, time, user]. Later duplicates of a user are returned for removal. */
  constructor(partitions: readonly number[], stored: Iterable<[number, number, string]>, o: Partial<CompactionOptions> = {}) {
    this.#o = { compactAt: o.compactAt ?? COMPACT_AT, compactEveryMs: o.compactEveryMs ?? COMPACT_EVERY_MS };
    for (const p of partitions) this.#parts.set(p, new PartitionTimers());
    this.duplicates = [];
    for (const [p, t, user] of stored) {
      const x = this.#parts.get(p);
      if (x === undefined) continue;
      const had = x.stored.get(user);
      if (had !== undefined) {
        // Layouts before this one could leave a stale entry beside the user's own: the earliest is a lower bound of its due.
        this.duplicates.push(["t", p, Math.max(had, t), user]);
        if (t >= had) continue;
      }
      x.stored.set(user, t);
      x.due.set(user, t);
    }
    for (const x of this.#parts.values()) x.heap.rebuild(x.due);
  }

  /** Index entries found at start beside an earlier one of the same user (removable: the earlier one stays). */
  readonly duplicates: AudienceKey[];

  #of(p: number): PartitionTimers {
    const x = this.#parts.get(p);
    if (x === undefined) throw new Error(`audience timers: partition ${p} is not owned`);
    return x;
  }

  /** Users of the partition whose due is at or before `now`, [due, user], earliest first, at most `limit`; taken off the schedule (the caller evaluates each, or drops it). */
  takeDue(p: number, now: number, limit: number): [number, string][] {
    const x = this.#of(p);
    const h = x.heap;
    const out: [number, string][] = [];
    while (h.size > 0 && h.times[0]! <= now && out.length < limit) {
      const t = h.times[0]!;
      const u = h.users[0]!;
      h.pop();
      if (x.due.get(u) !== t) continue;
      x.due.delete(u);
      out.push([t, u]);
    }
    return out;
  }

  /**
   * A user's due after its evaluation at `now`: scheduled in memory, and its
   * index entry written into `side` when the due is earlier than the entry
   * (or it has none). An entry that has passed is left for the compaction.
   */
  set(p: number, user: string, due: number, now: number, side: SideWrites): void {
    const x = this.#of(p);
    x.schedule(user, due);
    const stored = x.stored.get(user);
    if (due > 0 && (stored === undefined || due < stored)) {
      if (stored !== undefined) side.removes.push(["t", p, stored, user]);
      side.puts.push([["t", p, due, user], 1]);
      x.stored.set(user, due);
      x.passed.delete(user);
    } else if (stored !== undefined && stored <= now && stored !== due) {
      x.passed.add(user);
    }
  }

  /** The user leaves (forgotten, merged): its schedule, and its index entry into `side`. */
  drop(p: number, user: string, side: SideWrites): void {
    const x = this.#parts.get(p);
    if (x === undefined) return;
    x.due.delete(user);
    x.passed.delete(user);
    const stored = x.stored.get(user);
    if (stored !== undefined) {
      side.removes.push(["t", p, stored, user]);
      x.stored.delete(user);
    }
  }

  /**
   * The partition's timers start again from these users' dues (a partition restored from its changelog): the schedule
   * and index entries it had go (their removals into `side`), and each due gets its entry (into `side`).
   */
  reset(p: number, dues: Iterable<readonly [string, number]>, side: SideWrites): void {
    const old = this.#of(p);
    for (const [user, t] of old.stored) side.removes.push(["t", p, t, user]);
    const x = new PartitionTimers();
    this.#parts.set(p, x);
    for (const [user, due] of dues) {
      if (due <= 0) continue;
      x.schedule(user, due);
      x.stored.set(user, due);
      side.puts.push([["t", p, due, user], 1]);
    }
  }

  /**
   * Moves the partition's passed index entries to their users' dues (or
   * removes them) into `side` when a compaction is due (CompactionOptions);
   * `force` compacts whatever has passed. Returns the
   * entries moved. The writes must commit in the partition's chain, after
   * the evaluations that set those dues.
   */
  compaction(p: number, side: SideWrites, force = false): number {
    const x = this.#of(p);
    if (x.passed.size === 0) return 0;
    const t = performance.now();
    if (!force && x.passed.size < this.#o.compactAt && t - x.compactedAt < this.#o.compactEveryMs) return 0;
    x.compactedAt = t;
    let n = 0;
    for (const user of x.passed) {
      const stored = x.stored.get(user);
      const due = x.due.get(user) ?? 0;
      if (stored === undefined || stored === due) continue;
      side.removes.push(["t", p, stored, user]);
      if (due > 0) {
        side.puts.push([["t", p, due, user], 1]);
        x.stored.set(user, due);
      } else {
        x.stored.delete(user);
      }
      n++;
    }
    x.passed.clear();
    return n;
  }

  /** Users with a scheduled due, over the owned partitions. */
  get scheduled(): number {
    let n = 0;
    for (const x of this.#parts.values()) n += x.due.size;
    return n;
  }
}
