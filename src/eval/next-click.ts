/**
 * Next-click evaluation through the live engine (`portrait eval prequential
 * --targets next-click`): session-rec's protocol (../shared/DATA.md,
 * "Next-item"), measured on what the engine serves.
 *
 * - The training part is published through the typed client into an
 *   in-process engine (a real nats-server, shard workers, recs worker) and
 *   applied completely.
 * - The test part is replayed in time order (stable). Each click of a test
 *   session after its first is a target; before a target is published, the
 *   harness waits until the engine has applied everything published so far,
 *   checks (with `verify`) that the session's profile holds exactly the
 *   clicks before the target, asks `recommend` for the top max(ks) items at
 *   the target's time and scores the rank of the target's item (repeats
 *   allowed). Then the target is published like any other click.
 * - The offline baselines of src/eval/baselines.ts (SR, SKNN, item-kNN,
 *   S-POP, popularity) are fit on the training sessions only and score
 *   exactly the same targets from the same prefixes (their vocabulary also
 *   lists the test part's new items with count 0, so S-POP can predict a
 *   repeat of one; nothing else is learnt from the test part). The engine also learns from the
 *   test sessions that came before a target, as a live engine does.
 *
 * With more targets than maxTargets, maxTargets of them, evenly spaced in
 * time order, are scored (the others are replayed like any click).
 */
import { randomBytes } from "node:crypto";
import { basename } from "node:path";
import { connect, type NatsConnection } from "nats";
import { startNatsServer, type NatsServerHandle } from "../bus/nats-server-launcher.js";
import { subjects } from "../bus/subjects.js";
import type { PortraitClient } from "../client/portrait-client.js";
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../data/types.js";
import { EventType } from "../wire/proto.js";
import { BadRequestError, ErrorCode, PortraitError } from "../errors.js";
import { ItemKnnModel, PopularityModel, SequentialRulesModel, SessionPopModel, SknnModel } from "./baselines.js";
import type { EvalTable } from "./eval-table.js";
import { buildVocab, prefixView, type NextItemModel, type Session } from "./next-item.js";
import { Side, type LiveReplayOptions } from "./prequential.js";
import { DEFAULT_KS, RankingAccumulator, rankOf } from "../metrics/ranking.js";

export const NEXT_CLICK_FILES = Object.freeze({
  train: "yoochoose-100k/yoochoose-clicks-100k_train_tr.txt.gz",
  test: "yoochoose-100k/yoochoose-clicks-100k_train_valid.txt.gz",
});

/** One scored target, as `onTarget` sees it. Ranks are 1-based; undefined = not in the top max(ks). */
export interface NextClickTarget {
  event: DatasetEvent;
  /** Clicks of the session before the target (the prefix length). */
  position: number;
  engineRank: number | undefined;
  /** Items the engine returned, best first. */
  served: string[];
}

export interface RunNextClickOptions extends LiveReplayOptions {
  /** Score the offline baselines too. Default true. */
  baselines?: boolean;
  onTarget?: (t: NextClickTarget, client: PortraitClient) => void | Promise<void>;
}

export interface EvalNextClickOptions extends RunNextClickOptions {
  dataDir: string;
  /** Training and test files, relative to dataDir or absolute. Default NEXT_CLICK_FILES (Yoochoose 100k train_tr -> train_valid). */
  trainFile?: string;
  testFile?: string;
}

/** Events grouped by user, each group sorted by time (stable), groups in order of first event. */
export function sessionsOf(events: readonly DatasetEvent[]): Array<{ session: Session; events: DatasetEvent[] }> {
  const by = new Map<string, DatasetEvent[]>();
  for (const e of events) {
    if (!e.itemId) continue;
    let l = by.get(e.userId);
    if (l === undefined) by.set(e.userId, (l = []));
    l.push(e);
  }
  const out = [...by].map(([id, evs]) => {
    evs.sort((a, b) => a.timestampMs - b.timestampMs);
    return {
      session: { id, items: evs.map((e) => e.itemId!), categories: evs.map((e) => e.categoryId ?? ""), types: evs.map((e) => e.type), times: evs.map((e) => e.timestampMs) },
      events: evs,
    };
  });
  return out.sort((a, b) => a.session.times[0]! - b.session.times[0]! || (a.session.id < b.session.id ? -1 : 1));
}

interface Target { e: DatasetEvent; session: Session; position: number }

/**
 * recommend, asked again (up to 5 times, 0.2 s, 0.4 s, ... apart) when the
 * engine answers OVERLOADED: the engine has applied everything before the
 * target, so the question and the state are the same; this measures quality,
 * not latency, and a machine short of CPU should not end the run.
 */
async function recommendRetrying(client: PortraitClient, userId: string, k: number, asOfMs: number): ReturnType<PortraitClient["recommend"]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.recommend(userId, { k, asOfMs });
    } catch (err) {
      if (attempt >= 5 || !(err instanceof PortraitError) || err.code !== ErrorCode.OVERLOADED) throw err;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}

/** The engine and baselines on the same next-click targets. */
export async function runNextClick(train: readonly DatasetEvent[], test: readonly DatasetEvent[], name: string, o: RunNextClickOptions = {}): Promise<EvalTable> {
  const maxTargets = o.maxTargets ?? 2000;
  if (!Number.isInteger(maxTargets) || maxTargets < 1) throw new BadRequestError("options.maxTargets must be a positive integer");
  const ks = [...new Set(o.ks ?? DEFAULT_KS)].sort((a, b) => a - b);
  if (ks.length === 0 || ks.some((k) => !Number.isInteger(k) || k < 1 || k > 100)) throw new BadRequestError("options.ks must be integers in [1, 100]");
  const maxK = ks.at(-1)!;
  const applyTimeoutMs = o.applyTimeoutMs ?? 300_000;
  const t0 = performance.now();

  const byTime = (l: readonly DatasetEvent[]) => l.map((e, i) => ({ e, i })).sort((a, b) => a.e.timestampMs - b.e.timestampMs || a.i - b.i).map((x) => x.e);
  const trainLog = byTime(train.filter((e) => e.itemId));
  const testLog = byTime(test.filter((e) => e.itemId));
  const trainSessions = sessionsOf(trainLog).map((s) => s.session);
  const targetOf = new Map<DatasetEvent, Target>();
  for (const { session, events } of sessionsOf(testLog)) events.forEach((e, p) => p > 0 && targetOf.set(e, { e, session, position: p }));
  const all = testLog.filter((e) => targetOf.has(e));
  const chosen = new Set<DatasetEvent>();
  if (all.length <= maxTargets) all.forEach((e) => chosen.add(e));
  else for (let j = 0; j < maxTargets; j++) chosen.add(all[Math.floor((j * all.length) / maxTargets)]!);

  const engineAcc = new RankingAccumulator(ks);
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  let side: Side | undefined;
  const prefix = `nclk${randomBytes(3).toString("hex")}`;
  let policy = "";
  let engineSeconds = 0;
  try {
    if (o.natsUrl === undefined) server = await startNatsServer();
    const natsUrl = o.natsUrl ?? server!.url;
    nc = await connect({ servers: natsUrl, name: "portrait-next-click" });
    o.onProgress?.(0, chosen.size, "starting the engine");
    side = await Side.start("engine", natsUrl, nc, prefix, o.engine ?? {});
    for (let i = 0; i < trainLog.length; i += 4096) {
      await side.publish(trainLog.slice(i, i + 4096));
      o.onProgress?.(0, chosen.size, `published ${Math.min(i + 4096, trainLog.length)} of ${trainLog.length} training clicks`);
    }
    await side.settle(applyTimeoutMs);
    let pending: DatasetEvent[] = [];
    let scored = 0;
    for (const e of testLog) {
      if (chosen.has(e)) {
        await side.publish(pending);
        pending = [];
        await side.settle(applyTimeoutMs);
        if (o.verify ?? true) await side.verify(e.userId);
        const t1 = performance.now();
        const r = await recommendRetrying(side.client, e.userId, maxK, e.timestampMs);
        engineSeconds += (performance.now() - t1) / 1000;
        policy = r.modelVersion;
        const served = r.items.map((it) => it.itemId);
        const i = served.indexOf(e.itemId!);
        const rank = i < 0 ? undefined : i + 1;
        engineAcc.add(rank);
        await o.onTarget?.({ event: e, position: targetOf.get(e)!.position, engineRank: rank, served }, side.client);
        scored++;
        if (scored % 100 === 0 || scored === chosen.size) {
          o.onProgress?.(scored, chosen.size, `scored ${scored} targets, engine HR@${maxK} ${engineAcc.result()[`HR@${maxK}`]!.toFixed(3)}`);
        }
      }
      pending.push(e);
      if (pending.length >= 4096) {
        await side.publish(pending);
        pending = [];
      }
    }
  } finally {
    await side?.close();
    if (nc !== undefined && o.natsUrl !== undefined) {
      const jsm = await nc.jetstreamManager();
      const s = subjects(prefix);
      for (const stream of [s.eventStream, s.dlqStream, s.catalogStream]) await jsm.streams.delete(stream).catch(() => false);
    }
    await nc?.close();
    await server?.stop();
  }

  const rows: EvalTable["rows"] = [];
  const row = (model: string, acc: RankingAccumulator, seconds: number) => {
    const r = acc.result();
    const out: Record<string, string | number> = { model };
    for (const k of ks) {
      out[`HR@${k}`] = r[`HR@${k}`]!;
      out[`MRR@${k}`] = r[`MRR@${k}`]!;
    }
    out.targets = r.n!;
    out.seconds = Number(seconds.toFixed(1));
    rows.push(out);
  };
  row(`engine (live; ${policy})`, engineAcc, engineSeconds);

  if (o.baselines ?? true) {
    // Training counts only; the items first seen in the test part are added
    // with count 0 (after every trained item, by id), so a baseline can still
    // predict a repeat of an item its session showed (S-POP does) without
    // learning anything from the test part.
    const trained = buildVocab(trainSessions, "item");
    const unseen = [...new Set(testLog.map((e) => e.itemId!))].filter((i) => !trained.index.has(i)).sort();
    const vocab = {
      ...trained,
      tokens: [...trained.tokens, ...unseen],
      index: new Map([...trained.index, ...unseen.map((t, j) => [t, trained.tokens.length + j] as const)]),
      counts: Int32Array.from([...trained.counts, ...unseen.map(() => 0)]),
    };
    const targets = testLog.filter((e) => chosen.has(e)).map((e) => targetOf.get(e)!);
    const models: NextItemModel[] = [
      new SequentialRulesModel(), new SknnModel({ k: 100, sampleSize: 1000, similarity: "cosine" }),
      new ItemKnnModel({ lambda: 500, alpha: 0.9 }), new SessionPopModel(), new PopularityModel(),
    ];
    const out = new Float32Array(vocab.tokens.length);
    for (const m of models) {
      const t1 = performance.now();
      await m.fit?.(trainSessions, vocab);
      const acc = new RankingAccumulator(ks);
      for (const t of targets) {
        const idx = vocab.index.get(t.e.itemId!);
        if (idx === undefined) {
          acc.add(undefined);
          continue;
        }
        out.fill(0);
        await m.scoreNext(prefixView(t.session, t.position), t.position, out);
        const r = rankOf(out, idx);
        acc.add(r !== undefined && r <= maxK ? r : undefined);
      }
      row(`${m.name} (offline, train only)`, acc, (performance.now() - t1) / 1000);
      o.onProgress?.(chosen.size, chosen.size, `baseline ${m.name} done`);
    }
  }
  const sampled = chosen.size < all.length ? `${chosen.size} of the ${all.length} next-click targets scored (evenly spaced in time order)` : `all ${all.length} next-click targets scored`;
  return {
    task: `next click through the live engine, ${name}`,
    split: `${name}: ${trainLog.length} training clicks published first, then ${testLog.length} test clicks (${new Set(testLog.map((e) => e.userId)).size} sessions) replayed in time order; ` +
      `${sampled}, each before it is applied; top ${maxK} asked; ${((performance.now() - t0) / 1000).toFixed(0)} s wall`,
    columns: ["model", ...ks.flatMap((k) => [`HR@${k}`, `MRR@${k}`]), "targets", "seconds"],
    rows,
  };
}

/**
 * Session-rec's validation carve of a training log: the sessions (users)
 * whose last click is within the last `days` days of the log are the
 * validation part, the rest the earlier part.
 */
export function carveValidation(events: readonly DatasetEvent[], days = 1): { earlier: DatasetEvent[]; validation: DatasetEvent[]; description: string } {
  const end = new Map<string, number>();
  let last = -Infinity;
  for (const e of events) {
    end.set(e.userId, Math.max(end.get(e.userId) ?? -Infinity, e.timestampMs));
    last = Math.max(last, e.timestampMs);
  }
  const threshold = last - days * 86_400_000;
  const earlier: DatasetEvent[] = [];
  const validation: DatasetEvent[] = [];
  for (const e of events) (end.get(e.userId)! >= threshold ? validation : earlier).push(e);
  return {
    earlier, validation,
    description: `sessions ending in the last ${days} day(s) (from ${new Date(threshold).toISOString()}) are validation: ${earlier.length} earlier clicks, ${validation.length} validation clicks`,
  };
}

/** Reads the training file only (the validation is carved from it). */
export async function readNextClickTrain(o: Pick<EvalNextClickOptions, "dataDir" | "trainFile">): Promise<{ path: string; events: DatasetEvent[] }> {
  const path = resolveDataFile(o.dataDir, "yoochoose", o.trainFile ?? NEXT_CLICK_FILES.train);
  const events: DatasetEvent[] = [];
  for await (const e of readDataset("yoochoose", path)) events.push(e);
  return { path, events };
}

/** Reads the train and test files (Yoochoose format) and runs runNextClick. */
export async function evalNextClick(o: EvalNextClickOptions): Promise<EvalTable> {
  const read = async (file: string) => {
    const path = resolveDataFile(o.dataDir, "yoochoose", file);
    const out: DatasetEvent[] = [];
    for await (const e of readDataset("yoochoose", path)) out.push(e);
    return { path, out };
  };
  o.onProgress?.(0, 1, "reading the training and test files");
  const tr = await read(o.trainFile ?? NEXT_CLICK_FILES.train);
  const te = await read(o.testFile ?? NEXT_CLICK_FILES.test);
  return runNextClick(tr.out, te.out, `yoochoose ${basename(tr.path)} -> ${basename(te.path)}`, o);
}

/** Session data sets other than Yoochoose: one log, split by time (splitSessionsByTime). */
export const NEXT_CLICK_SPLIT_FILES = Object.freeze({
  diginetica: "diginetica/sample_train-item-views.csv.gz",
  rees46: "rees46/2019-Oct_head_sample.csv.gz",
  taobao: "taobao/UserBehavior_first_users.csv.gz",
} satisfies Partial<Record<DatasetFormat, string>>);
export type NextClickSplitFormat = keyof typeof NEXT_CLICK_SPLIT_FILES;
export const NEXT_CLICK_SPLIT_FORMATS = Object.keys(NEXT_CLICK_SPLIT_FILES) as NextClickSplitFormat[];

/** Where a log has no session id (Taobao), a user's session ends after this much idle time (session-rec's 30 min). */
export const SESSION_GAP_MS = 30 * 60_000;

/**
 * The clicks of a log as anonymous sessions, session-rec's preprocessing:
 * views and clicks with an item only (cart, purchase and other events are
 * left out), each event's userId replaced by its session's key (the log's
 * session id where it has one, Diginetica and REES46; else the user and a
 * count of idle gaps longer than gapMs, Taobao), so the engine sees one
 * anonymous user per session, as it does with Yoochoose.
 */
export function clickSessions(events: readonly DatasetEvent[], gapMs = SESSION_GAP_MS): DatasetEvent[] {
  const clicks = events
    .map((e, i) => ({ e, i }))
    .filter(({ e }) => e.itemId && (e.type === EventType.VIEW || e.type === EventType.CLICK))
    .sort((a, b) => a.e.timestampMs - b.e.timestampMs || a.i - b.i)
    .map(({ e }) => e);
  const open = new Map<string, { n: number; lastMs: number }>();
  return clicks.map((e) => {
    if (e.sessionId) return { ...e, userId: `s-${e.sessionId}` };
    let s = open.get(e.userId);
    if (s === undefined) open.set(e.userId, (s = { n: 0, lastMs: e.timestampMs }));
    else if (e.timestampMs - s.lastMs > gapMs) s.n++;
    s.lastMs = e.timestampMs;
    return { ...e, userId: `s-${e.userId}-${s.n}` };
  });
}

/**
 * A strict time split of sessions (session-rec's): the threshold is the time
 * of the event at (1 - testShare) of the log in time order; the sessions whose
 * last event is at or after it are the test part, the others (all ended
 * before it) the training part.
 */
export function splitSessionsByTime(events: readonly DatasetEvent[], testShare = 0.2): { train: DatasetEvent[]; test: DatasetEvent[]; description: string } {
  if (!(testShare > 0 && testShare < 1)) throw new BadRequestError("testShare must be in (0, 1)");
  if (events.length === 0) throw new BadRequestError("no click events to split");
  const times = events.map((e) => e.timestampMs).sort((a, b) => a - b);
  const threshold = times[Math.min(times.length - 1, Math.floor(times.length * (1 - testShare)))]!;
  const end = new Map<string, number>();
  for (const e of events) end.set(e.userId, Math.max(end.get(e.userId) ?? -Infinity, e.timestampMs));
  const train: DatasetEvent[] = [];
  const test: DatasetEvent[] = [];
  for (const e of events) (end.get(e.userId)! >= threshold ? test : train).push(e);
  return {
    train, test,
    description: `sessions ending at or after ${new Date(threshold).toISOString()} (the last ${Math.round(testShare * 100)}% of the clicks in time order) are the test part`,
  };
}

export interface EvalNextClickSplitOptions extends RunNextClickOptions {
  dataDir: string;
  format: NextClickSplitFormat;
  /** The log, relative to dataDir or absolute. Default NEXT_CLICK_SPLIT_FILES[format]. */
  file?: string;
  /** Share of the clicks (in time order) after the split time. Default 0.2. */
  testShare?: number;
}

/** Next click on Diginetica, REES46 or Taobao: clickSessions, splitSessionsByTime, runNextClick. */
export async function evalNextClickSplit(o: EvalNextClickSplitOptions): Promise<EvalTable> {
  if (!(o.format in NEXT_CLICK_SPLIT_FILES)) throw new BadRequestError(`next-click targets are read from ${["yoochoose", ...NEXT_CLICK_SPLIT_FORMATS].join(", ")} logs, not ${o.format}`);
  const path = resolveDataFile(o.dataDir, o.format, o.file ?? NEXT_CLICK_SPLIT_FILES[o.format]);
  o.onProgress?.(0, 1, `reading ${basename(path)}`);
  const events: DatasetEvent[] = [];
  for await (const e of readDataset(o.format, path)) events.push(e);
  const clicks = clickSessions(events);
  const split = splitSessionsByTime(clicks, o.testShare ?? 0.2);
  const name = `${o.format} ${basename(path)} (${clicks.length} views of ${events.length} events, as ${new Set(clicks.map((e) => e.userId)).size} sessions; ${split.description})`;
  return runNextClick(split.train, split.test, name, o);
}
