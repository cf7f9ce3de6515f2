/**
 * Prequential evaluation (../shared/DATA.md, "Prequential replay"): a real
 * log is replayed in time order through running engines, and before each
 * target event (a purchase; optionally also a view or click) is applied, the
 * engines are asked for their top K and the rank of the event's item is
 * scored with HR@K and MRR@K. Three variants, each seeing the same log:
 *
 * - "fresh": an engine fed every event as the replay goes.
 * - "daily snapshot": the same system (same options, same models), fed only at
 *   each UTC day boundary of event time, with all of the previous day's
 *   events at once: its profiles and its recommendation index are a snapshot
 *   up to the end of yesterday.
 * - "popularity": items ranked by their count among all events replayed so
 *   far (every event with an item, any type; ties by item id), excluding
 *   nothing (the engines leave out items the user bought before).
 *
 * What "before" means: events are grouped by timestamp (a stable sort keeps
 * the file order within one). Every target of a group is scored on the state
 * after all earlier groups and before any event of its own group: a target
 * never sees an event at its own time, so the other lines of the same
 * Online Retail invoice (one timestamp) are not used to predict each other.
 * Before scoring, the harness waits until each engine's ingest metrics show
 * every event published to it applied (or dead-lettered), then makes one
 * recommendation round trip so the recs worker has taken in the item events
 * the shards posted after committing them. With `verify` (default on) it
 * also reads the target user's profile from both engines and fails if
 * `eventsApplied` differs from the number of that user's events published to
 * the engine: a target, or anything after it, visible before it is scored is
 * an error, not a better score.
 *
 * Cost: two engines in this process (4 partitions and 1 shard worker each by
 * default, overridable), a nats-server, two recommendation queries and two
 * profile reads per target, and the whole (limited) log in memory.
 *
 * The bundled DeepFM ranker was trained on the Taobao time slice
 * (src/models/artifacts.ts; manifest training.data), so results on that file
 * are partly in-sample for the ranker; the other data sets are not.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "nats";
import { startNatsServer, type NatsServerHandle } from "../bus/nats-server-launcher.js";
import { subjects } from "../bus/subjects.js";
import { PortraitClient } from "../client/portrait-client.js";
import type { EngineOptions } from "../config/engine-options.js";
import { DEFAULT_DATA_FILES, readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../data/types.js";
import { Engine } from "../engine.js";
import { BadRequestError, ErrorCode, PortraitError } from "../errors.js";
import { EventType } from "../wire/proto.js";
import type { EvalTable } from "./eval-table.js";
import { DEFAULT_KS, RankingAccumulator } from "../metrics/ranking.js";

export type { EvalTable };

/** Which events are scored: purchases only, or purchases, views and clicks. */
export type PrequentialTargets = "purchase" | "purchase+click";

export const PREQUENTIAL_VARIANTS = ["fresh", "daily snapshot", "popularity"] as const;
export type PrequentialVariant = (typeof PREQUENTIAL_VARIANTS)[number];

/**
 * The default file per format: the format's default file, except Taobao,
 * where the 9-day histories of 43 users replace the 2 h 10 min time slice
 * (which lies inside one UTC day, so a daily snapshot would never refresh).
 */
export const PREQUENTIAL_DEFAULT_FILES: Readonly<Record<DatasetFormat, string>> = Object.freeze({
  ...DEFAULT_DATA_FILES,
  taobao: "taobao/UserBehavior_first_users.csv.gz",
});

export const DEFAULT_MAX_TARGETS = 2000;

/** Engine options both engines get unless `engine` overrides them: two engines share the machine. */
/** The evaluated engines run the models their options name (modelsDir), not what a registry on the same server promotes. */
export const PREQUENTIAL_ENGINE_DEFAULTS: Readonly<EngineOptions> = Object.freeze({ partitions: 4, workers: 1, logLevel: "warn", modelRegistry: false });

/** One scored target, as `onTarget` sees it. Ranks are 1-based; undefined = not in the top max(ks). */
export interface PrequentialTarget {
  /** 0-based position of the event in the time-sorted log. */
  index: number;
  event: DatasetEvent;
  ranks: Record<PrequentialVariant, number | undefined>;
  /** Events of this user published to each engine before the target was scored. */
  published: { fresh: number; daily: number };
}

/** The engines' clients, for checks from `onTarget` (the tests plant theirs here). */
export interface PrequentialProbe {
  fresh: PortraitClient;
  daily: PortraitClient;
}

/** What every replay through live engines takes (purchases here, next clicks in next-click.ts). */
export interface LiveReplayOptions {
  /**
   * Most targets scored. When the log has more target events, maxTargets of
   * them evenly spaced in time order (target floor(j * count / maxTargets) for
   * j = 0..maxTargets-1) are scored; the others are replayed like any event.
   * A positive integer; default 2000.
   */
  maxTargets?: number;
  /** Cut-offs of HR@K and MRR@K, positive integers <= 100. Default [10, 20]; the engines are asked for max(ks) items. */
  ks?: number[];
  /** A running nats-server with JetStream; default: an embedded one started (and stopped) here. */
  natsUrl?: string;
  /**
   * Engine options (models, recs, partitions, workers, logLevel...), over the
   * evaluation's defaults. natsUrl, embeddedNats, dataDir, subjectPrefix and
   * httpPort are set by the evaluation and may not be given.
   */
  engine?: EngineOptions;
  /** Check each target's eventsApplied before scoring (see the module comment). Default true. */
  verify?: boolean;
  /** Max wait for an engine to apply what was published, ms. Default 120000 (next clicks: 300000). */
  applyTimeoutMs?: number;
  /** Progress: targets scored of the targets selected. */
  onProgress?: (done: number, total: number, note: string) => void;
}

export interface RunPrequentialOptions extends LiveReplayOptions {
  /** Which events are scored. Default "purchase". */
  targets?: PrequentialTargets;
  /** Sees each scored target (awaited when it returns a promise). */
  onTarget?: (t: PrequentialTarget, probe: PrequentialProbe) => void | Promise<void>;
}

export interface EvalPrequentialOptions extends RunPrequentialOptions {
  /** Directory of the data sets (../shared/data). */
  dataDir: string;
  format: DatasetFormat;
  /** Data file, relative to dataDir or absolute. Default PREQUENTIAL_DEFAULT_FILES[format]. */
  file?: string;
  /** Read only the first `limit` events of the file (file order, before sorting by time). Default all. */
  limit?: number;
}

/** What the log and the run looked like; goes into the table's split text. */
export interface PrequentialSummary {
  name: string;
  events: number;
  firstMs: number;
  lastMs: number;
  targetEvents: number;
  dayBoundaries: number;
  seconds: number;
  /** Model versions both engines loaded, e.g. ["deepfm 2026-11-22.1"]. */
  models: string[];
}

const MS_PER_DAY = 86_400_000;
const CHUNK = 4096;
const FORBIDDEN_ENGINE_KEYS = ["natsUrl", "embeddedNats", "dataDir", "subjectPrefix", "httpPort"] as const;

function isTarget(type: number, targets: PrequentialTargets): boolean {
  if (type === EventType.PURCHASE) return true;
  return targets === "purchase+click" && (type === EventType.VIEW || type === EventType.CLICK);
}

interface Compiled {
  targets: PrequentialTargets;
  maxTargets: number;
  ks: number[];
  verify: boolean;
  applyTimeoutMs: number;
}

function compile(o: RunPrequentialOptions): Compiled {
  const targets = o.targets ?? "purchase";
  if (targets !== "purchase" && targets !== "purchase+click") throw new BadRequestError('options.targets must be "purchase" or "purchase+click"');
  const maxTargets = o.maxTargets ?? DEFAULT_MAX_TARGETS;
  if (!Number.isInteger(maxTargets) || maxTargets < 1) throw new BadRequestError("options.maxTargets must be a positive integer");
  const ks = o.ks ?? [...DEFAULT_KS];
  if (ks.length === 0 || ks.some((k) => !Number.isInteger(k) || k < 1 || k > 100)) throw new BadRequestError("options.ks must be integers in [1, 100]");
  const applyTimeoutMs = o.applyTimeoutMs ?? 120_000;
  if (!Number.isInteger(applyTimeoutMs) || applyTimeoutMs < 1) throw new BadRequestError("options.applyTimeoutMs must be a positive integer");
  for (const k of FORBIDDEN_ENGINE_KEYS) {
    if (o.engine?.[k] !== undefined) throw new BadRequestError(`options.engine.${k} is set by the prequential harness and may not be given`);
  }
  return { targets, maxTargets, ks: [...new Set(ks)].sort((a, b) => a - b), verify: o.verify ?? true, applyTimeoutMs };
}

/**
 * Item popularity over the events so far: counts, and the 1-based rank of an
 * item with ties broken by item id (the same order a sorted list would give).
 */
export class PopularityCounter {
  readonly #counts = new Map<string, number>();

  add(itemId: string): void {
    this.#counts.set(itemId, (this.#counts.get(itemId) ?? 0) + 1);
  }

  /** Rank of `itemId` in (count desc, id asc) order, or undefined when it is unseen or ranked below `maxRank`. */
  rank(itemId: string, maxRank: number): number | undefined {
    const c = this.#counts.get(itemId);
    if (c === undefined) return undefined;
    let above = 0;
    for (const [id, n] of this.#counts) {
      if (n > c || (n === c && id < itemId)) {
        if (++above >= maxRank) return undefined;
      }
    }
    return above + 1;
  }
}

/** One engine of the comparison, with its client and the counts of what was published to it (also the next-click evaluation's engine). */
export class Side {
  readonly perUser = new Map<string, number>();
  published = 0;
  queryMs = 0;
  #base = 0;
  #failed: unknown;

  private constructor(readonly name: string, readonly engine: Engine, readonly client: PortraitClient) {
    engine.done.catch((err: unknown) => (this.#failed = err));
  }

  static async start(name: string, natsUrl: string, nc: NatsConnection, prefix: string, o: EngineOptions): Promise<Side> {
    const dataDir = mkdtempSync(join(tmpdir(), `portrait-preq-${name}-`));
    let engine: Engine;
    try {
      engine = await Engine.start({
        ...PREQUENTIAL_ENGINE_DEFAULTS, ...o, natsUrl, embeddedNats: "never", dataDir, subjectPrefix: prefix, httpPort: -1,
      });
    } catch (err) {
      rmSync(dataDir, { recursive: true, force: true });
      throw err;
    }
    const side = new Side(name, engine, new PortraitClient(nc, { subjectPrefix: prefix, partitions: engine.config.partitions, requestTimeoutMs: 30_000 }));
    side.#base = await side.#done();
    return side;
  }

  async #done(): Promise<number> {
    const m = this.engine.metrics;
    return (await m.total(m.eventsApplied)) + (await m.total(m.deadLetters));
  }

  async publish(events: DatasetEvent[]): Promise<void> {
    if (events.length === 0) return;
    const r = await this.client.publishMany(events);
    if (r.duplicates > 0) throw new PortraitError(ErrorCode.INTERNAL, `${this.name}: ${r.duplicates} events were dropped as duplicates (repeated event ids in the log?)`);
    this.published += r.stored;
    for (const e of events) this.perUser.set(e.userId, (this.perUser.get(e.userId) ?? 0) + 1);
  }

  /** Waits until every event published so far is applied or dead-lettered, then lets the recs worker catch up. */
  async settle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#failed !== undefined) throw this.#failed;
      const n = (await this.#done()) - this.#base;
      if (n > this.published) throw new PortraitError(ErrorCode.INTERNAL, `${this.name}: ${n} events applied, only ${this.published} published`);
      if (n === this.published) break;
      if (Date.now() > deadline) throw new PortraitError(ErrorCode.TIMEOUT, `${this.name}: only ${n} of ${this.published} events applied within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
    // The shards post item events to the recs worker after each commit, before the
    // metrics count it; one full round trip through the worker takes them in.
    await this.client.recommend("__prequential_settle__", { k: 1, candidates: 1 });
  }

  async deadLetters(): Promise<number> {
    return this.engine.metrics.total(this.engine.metrics.deadLetters);
  }

  async rank(e: DatasetEvent, k: number): Promise<number | undefined> {
    const t0 = performance.now();
    const r = await this.client.recommend(e.userId, { k, asOfMs: e.timestampMs });
    this.queryMs += performance.now() - t0;
    const i = r.items.findIndex((it) => it.itemId === e.itemId);
    return i < 0 ? undefined : i + 1;
  }

  /** Fails when the user's profile shows a count other than what was published (fewer is allowed only after dead letters). */
  async verify(userId: string): Promise<void> {
    const expected = this.perUser.get(userId) ?? 0;
    let got = 0;
    try {
      got = (await this.client.getProfile(userId)).eventsApplied;
    } catch (err) {
      if (!(err instanceof PortraitError && err.code === ErrorCode.UNKNOWN_USER)) throw err;
    }
    if (got > expected) {
      throw new PortraitError(ErrorCode.INTERNAL, `${this.name}: user ${userId} has ${got} events applied before the target is scored, but only ${expected} were published: the target or a later event is visible`);
    }
    if (got < expected && (await this.deadLetters()) === 0) {
      throw new PortraitError(ErrorCode.INTERNAL, `${this.name}: user ${userId} has ${got} events applied, ${expected} published and none dead-lettered`);
    }
  }

  async close(): Promise<void> {
    await this.engine.close();
    rmSync(this.engine.config.dataDir, { recursive: true, force: true });
  }
}

/** Indexes of the target events to score: all, or maxTargets evenly spaced over them in time order (the first included). */
function selectTargets(events: readonly DatasetEvent[], c: Compiled): { chosen: Set<number>; targetEvents: number } {
  const all: number[] = [];
  events.forEach((e, i) => {
    if (e.itemId && isTarget(e.type, c.targets)) all.push(i);
  });
  if (all.length <= c.maxTargets) return { chosen: new Set(all), targetEvents: all.length };
  const chosen = new Set<number>();
  for (let j = 0; j < c.maxTargets; j++) chosen.add(all[Math.floor((j * all.length) / c.maxTargets)]!);
  return { chosen, targetEvents: all.length };
}

function splitText(s: PrequentialSummary, c: Compiled, n: number): string {
  const day = (ms: number) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  const kind = c.targets === "purchase" ? "purchases" : "purchases, views and clicks";
  const sampled = n < s.targetEvents ? `${n} of the ${s.targetEvents} ${kind} scored (evenly spaced in time order)` : `all ${n} ${kind} scored`;
  const daily = s.dayBoundaries === 0
    ? "the log lies within one UTC day, so the daily snapshot never refreshes (its engine stays empty: cold start for every target)"
    : `the daily snapshot was refreshed ${s.dayBoundaries} times (at UTC day boundaries of event time)`;
  return `${s.name}: ${s.events} events ${day(s.firstMs)}..${day(s.lastMs)} UTC replayed in time order; ${sampled}, ` +
    `each before any event at its own timestamp is applied; ${daily}; top ${Math.max(...c.ks)} asked; ` +
    `models: ${s.models.length > 0 ? s.models.join(", ") : "none (candidates ranked by their priors)"}; ${s.seconds.toFixed(0)} s wall`;
}

/**
 * Replays `events` (any order; sorted here by time, stably) through a fresh
 * and a daily-snapshot engine and scores the targets. The building block of
 * evalPrequential; tests call it with a synthetic log.
 */
export async function runPrequential(events: readonly DatasetEvent[], name: string, o: RunPrequentialOptions = {}): Promise<EvalTable> {
  const c = compile(o);
  const t0 = performance.now();
  const log = events.map((e, i) => ({ e, i })).sort((a, b) => a.e.timestampMs - b.e.timestampMs || a.i - b.i).map((x) => x.e);
  const { chosen, targetEvents } = selectTargets(log, c);
  const maxK = Math.max(...c.ks);
  const acc = {
    fresh: new RankingAccumulator(c.ks), "daily snapshot": new RankingAccumulator(c.ks), popularity: new RankingAccumulator(c.ks),
  } satisfies Record<PrequentialVariant, RankingAccumulator>;
  const popularity = new PopularityCounter();
  let popularityMs = 0;
  let dayBoundaries = 0;

  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  const sides: Side[] = [];
  const run = randomBytes(3).toString("hex");
  const prefixes = [`preq${run}f`, `preq${run}d`];
  try {
    if (o.natsUrl === undefined) server = await startNatsServer();
    const natsUrl = o.natsUrl ?? server!.url;
    nc = await connect({ servers: natsUrl, name: "portrait-prequential" });
    o.onProgress?.(0, chosen.size, "starting the fresh and the daily-snapshot engines");
    const fresh = await Side.start("fresh", natsUrl, nc, prefixes[0]!, o.engine ?? {});
    sides.push(fresh);
    const daily = await Side.start("daily", natsUrl, nc, prefixes[1]!, o.engine ?? {});
    sides.push(daily);
    const probe: PrequentialProbe = { fresh: fresh.client, daily: daily.client };
    const models = (await fresh.engine.metrics.modelInfo.get()).values.map((v) => `${v.labels.model} ${v.labels.version}`).sort();

    let pendingFresh: DatasetEvent[] = [];
    let today: DatasetEvent[] = [];
    let day = log.length > 0 ? Math.floor(log[0]!.timestampMs / MS_PER_DAY) : 0;
    let scored = 0;
    for (let i = 0; i < log.length;) {
      const ts = log[i]!.timestampMs;
      let j = i;
      while (j < log.length && log[j]!.timestampMs === ts) j++;
      const d = Math.floor(ts / MS_PER_DAY);
      if (d > day) {
        await daily.publish(today);
        today = [];
        day = d;
        dayBoundaries++;
      }
      const group: number[] = [];
      for (let x = i; x < j; x++) if (chosen.has(x)) group.push(x);
      if (group.length > 0) {
        await fresh.publish(pendingFresh);
        pendingFresh = [];
        await Promise.all([fresh.settle(c.applyTimeoutMs), daily.settle(c.applyTimeoutMs)]);
        for (const x of group) {
          const e = log[x]!;
          if (c.verify) await Promise.all([fresh.verify(e.userId), daily.verify(e.userId)]);
          const [rf, rd] = await Promise.all([fresh.rank(e, maxK), daily.rank(e, maxK)]);
          const tp = performance.now();
          const rp = popularity.rank(e.itemId!, maxK);
          popularityMs += performance.now() - tp;
          acc.fresh.add(rf);
          acc["daily snapshot"].add(rd);
          acc.popularity.add(rp);
          await o.onTarget?.({
            index: x, event: e, ranks: { fresh: rf, "daily snapshot": rd, popularity: rp },
            published: { fresh: fresh.perUser.get(e.userId) ?? 0, daily: daily.perUser.get(e.userId) ?? 0 },
          }, probe);
          scored++;
        }
        const r = acc.fresh.result();
        o.onProgress?.(scored, chosen.size, `scored ${scored} targets, fresh HR@${maxK} ${r[`HR@${maxK}`]!.toFixed(3)}`);
      }
      for (let x = i; x < j; x++) {
        const e = log[x]!;
        pendingFresh.push(e);
        today.push(e);
        if (e.itemId) popularity.add(e.itemId);
      }
      if (pendingFresh.length >= CHUNK) {
        await fresh.publish(pendingFresh);
        pendingFresh = [];
      }
      i = j;
    }
    const summary: PrequentialSummary = {
      name, events: log.length, firstMs: log[0]?.timestampMs ?? 0, lastMs: log.at(-1)?.timestampMs ?? 0,
      targetEvents, dayBoundaries, seconds: (performance.now() - t0) / 1000, models,
    };
    const seconds: Record<PrequentialVariant, number> = { fresh: fresh.queryMs / 1000, "daily snapshot": daily.queryMs / 1000, popularity: popularityMs / 1000 };
    return {
      task: `prequential top-${maxK} next ${c.targets === "purchase" ? "purchase" : "purchase/click"}, ${name}`,
      split: splitText(summary, c, acc.fresh.n),
      columns: ["variant", ...c.ks.flatMap((k) => [`HR@${k}`, `MRR@${k}`]), "targets", "query seconds"],
      rows: PREQUENTIAL_VARIANTS.map((v) => {
        const r = acc[v].result();
        const row: Record<string, string | number> = { variant: v };
        for (const k of c.ks) {
          row[`HR@${k}`] = r[`HR@${k}`]!;
          row[`MRR@${k}`] = r[`MRR@${k}`]!;
        }
        row.targets = r.n!;
        row["query seconds"] = Number(seconds[v].toFixed(2));
        return row;
      }),
    };
  } finally {
    for (const s of sides.reverse()) await s.close();
    if (nc !== undefined && o.natsUrl !== undefined) {
      // On a server we did not start, remove the streams this run created.
      const jsm = await nc.jetstreamManager();
      for (const p of prefixes) {
        const s = subjects(p);
        for (const stream of [s.eventStream, s.dlqStream, s.catalogStream]) await jsm.streams.delete(stream).catch(() => false);
      }
    }
    await nc?.close();
    await server?.stop();
  }
}

/**
 * Prequential evaluation of a data set (see the module comment): reads the
 * file (at most `limit` events, file order), sorts it by time and replays it
 * through a fresh and a daily-snapshot engine, with popularity alongside.
 * Returns one row per variant: HR@K and MRR@K for each K, the targets scored,
 * and the seconds spent answering that variant's queries; the split text
 * says what was replayed and sampled and how long it took.
 */
export async function evalPrequential(opts: EvalPrequentialOptions): Promise<EvalTable> {
  compile(opts);
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 1)) throw new BadRequestError("options.limit must be a positive integer");
  const path = resolveDataFile(opts.dataDir, opts.format, opts.file ?? PREQUENTIAL_DEFAULT_FILES[opts.format]);
  opts.onProgress?.(0, 1, `reading ${path}`);
  const events: DatasetEvent[] = [];
  for await (const e of readDataset(opts.format, path, opts.limit !== undefined ? { limit: opts.limit } : {})) events.push(e);
  if (events.length === 0) throw new BadRequestError(`${path} holds no events`);
  return runPrequential(events, `${opts.format} ${basename(path)}`, opts);
}
