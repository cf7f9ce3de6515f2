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
 *   exactly the same targets from the same prefixes (a target outside their
 *   training vocabulary is a miss for them). The engine also learns from the
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
import type { DatasetEvent } from "../data/types.js";
import { BadRequestError } from "../errors.js";
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
        const r = await side.client.recommend(e.userId, { k: maxK, asOfMs: e.timestampMs });
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
    const vocab = buildVocab(trainSessions, "item");
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
