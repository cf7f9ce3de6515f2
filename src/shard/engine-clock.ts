/**
 * The engine's clock: what "now" is for decay, recency, sessions, churn and
 * recommendations when a query does not name a time. One clock for the whole
 * engine, kept by the main thread and read by every shard from shared memory
 * (so users of different shards never live in different eras).
 *
 * The clock runs on event time, so a replay of 2011 data gives the profiles
 * it would have given in 2011:
 * - An event moves the clock forward to its own time when that time is
 *   within `maxJumpMs` of now (or the clock has not started). Older
 *   events never move it back.
 * - An event further ahead than that (a live event after a replay of old
 *   data, a device with a wrong clock) is applied to its user with its own
 *   time but does not move the clock: a single out-of-era event must not
 *   move the clock of other users. The clock jumps only when `jumpQuorum`
 *   distinct users have sent such events; it then moves to the earliest of
 *   their times (the new era has begun).
 * - Live: once the clock comes within `liveWindowMs` of the wall clock, the
 *   engine is live and "now" is max(clock, wall clock) from then on, so that
 *   time passes for users without events (recency grows, sessions end).
 * - Restarts: shards store the clock with their batches, and that it is live;
 *   a restarted engine resumes live if it was (restore), so time passes even
 *   when no event came for longer than `liveWindowMs`.
 * - A user's own profile is never evaluated before the user's last event:
 *   a query's "now" is max(engine now, the user's last event time).
 *
 * Events far in the future of the wall clock are dead-lettered before this
 * (BAD_TIMESTAMP, `maxFutureSkewMs`).
 */

/** Layout of the shared buffer: [clock ms, live (0/1)]. */
const CLOCK = 0;
const LIVE = 1;

export interface ClockOptions {
  /** Largest step forward one event may move the clock, ms. Default 1 day. */
  maxJumpMs: number;
  /** Distinct users with events beyond maxJumpMs that move the clock to a new era. Default 10. */
  jumpQuorum: number;
  /** Distance to the wall clock within which the engine counts as live, ms. Default 1 hour. */
  liveWindowMs: number;
}

export const CLOCK_DEFAULTS: Readonly<ClockOptions> = Object.freeze({ maxJumpMs: 86_400_000, jumpQuorum: 10, liveWindowMs: 3_600_000 });

/** Most out-of-era events a shard reports per batch (one per user is enough to count users). */
export const MAX_AHEAD_PER_BATCH = 64;

/** True when a clock at `clockMs` makes the engine live at wall time `wallMs` (it then stays live). */
function liveAt(clockMs: number, wallMs: number, o: ClockOptions): boolean {
  return clockMs > 0 && Math.abs(wallMs - clockMs) <= o.liveWindowMs;
}

/** The shard side: reads the clock the main thread keeps. */
export class ClockReader {
  readonly #view: Float64Array;
  readonly #o: ClockOptions;

  constructor(buffer: SharedArrayBuffer, o: ClockOptions) {
    this.#view = new Float64Array(buffer);
    this.#o = o;
  }

  /** The engine clock (event time), Unix ms; 0 before the first event. */
  get clockMs(): number {
    return this.#view[CLOCK]!;
  }

  /** Now for a query that names no time: the clock, or the wall clock once live. */
  now(wallMs = Date.now()): number {
    const c = this.#view[CLOCK]!;
    return this.#view[LIVE] === 1 ? Math.max(c, wallMs) : c;
  }

  /** True once the engine is live ("now" follows the wall clock). */
  get live(): boolean {
    return this.#view[LIVE] === 1;
  }

  /** Whether the engine is live once the clock reaches `clockMs` (what a shard stores with a batch the clock has not taken yet). */
  liveWith(clockMs: number, wallMs = Date.now()): boolean {
    return this.live || liveAt(Math.max(this.clockMs, clockMs), wallMs, this.#o);
  }

  /** True when an event at `t` may move the clock: within maxJumpMs of now (or the clock has not started). */
  inEra(t: number, wallMs = Date.now()): boolean {
    return this.#view[CLOCK] === 0 || t <= this.now(wallMs) + this.#o.maxJumpMs;
  }
}

/** What a shard tells the clock about one batch. */
export interface BatchTimes {
  /** Latest event time of the batch that was in the clock's era; 0 if none. */
  inEraMs: number;
  /** Out-of-era events of the batch: [user key, time], at most MAX_AHEAD_PER_BATCH, one per user. */
  ahead: [string, number][];
}

/** The main-thread side: moves the clock from what the shards report. */
export class EngineClock extends ClockReader {
  readonly buffer: SharedArrayBuffer;
  readonly #view: Float64Array;
  readonly #opts: ClockOptions;
  /** Out-of-era events seen since the clock last moved: user key -> earliest time. */
  readonly #pending = new Map<string, number>();

  constructor(o: ClockOptions = CLOCK_DEFAULTS, startMs = 0) {
    const buffer = new SharedArrayBuffer(16);
    super(buffer, o);
    this.buffer = buffer;
    this.#view = new Float64Array(buffer);
    this.#opts = o;
    this.#advance(startMs);
  }

  /** Starts from a clock stored before a restart (never moves it back); `live`: the engine was live, so it is again (time passes for users without events even when none came for longer than liveWindowMs). */
  restore(ms: number, live = false): void {
    this.#advance(ms);
    if (live && this.#view[CLOCK]! > 0) this.#view[LIVE] = 1;
  }

  /** Takes a batch's times into account. */
  observe(b: BatchTimes, wallMs = Date.now()): void {
    if (b.inEraMs > 0) this.#advance(b.inEraMs, wallMs);
    const limit = this.now(wallMs) + this.#opts.maxJumpMs;
    for (const [user, t] of b.ahead) {
      if (t <= limit) continue; // the clock has moved meanwhile: this one is in era now
      const seen = this.#pending.get(user);
      if (seen === undefined || t < seen) this.#pending.set(user, t);
    }
    // Only users still ahead of the clock count.
    for (const [user, t] of this.#pending) if (t <= limit) this.#pending.delete(user);
    if (this.#pending.size >= this.#opts.jumpQuorum) {
      this.#advance(Math.min(...this.#pending.values()), wallMs);
      this.#pending.clear();
    }
    // Bounded: the earliest times are the ones that can make a quorum.
    if (this.#pending.size > 4 * this.#opts.jumpQuorum) {
      const keep = [...this.#pending].sort((x, y) => x[1] - y[1]).slice(0, 2 * this.#opts.jumpQuorum);
      this.#pending.clear();
      for (const [u, t] of keep) this.#pending.set(u, t);
    }
  }

  #advance(t: number, wallMs = Date.now()): void {
    if (t > this.#view[CLOCK]!) this.#view[CLOCK] = t;
    if (liveAt(this.#view[CLOCK]!, wallMs, this.#opts)) this.#view[LIVE] = 1;
  }
}
