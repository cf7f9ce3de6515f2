/**
 * Next-item / next-click evaluation (../shared/DATA.md, "Next-item"):
 * for each event of a test sequence after the first, every model ranks the
 * whole training vocabulary given the events so far, and the rank of the
 * event that really came next is scored with HR@K and MRR@K.
 *
 * Protocol details, the same for every model:
 * - Splits are by time. Yoochoose uses the session-rec files as they are
 *   (`train_tr` -> `train_valid`, whole sessions split by their end time);
 *   Taobao cuts the time range at a fraction: training holds every event
 *   before the cut, and a user's test sequence is the user's whole history
 *   with the events before the cut as context only (`Session.evalFrom`).
 * - The vocabulary of candidate tokens (items or categories) is built from
 *   the training events only. A target outside it cannot be ranked and counts
 *   as a miss at every K; the tables report how many there were (`oov`).
 * - Repeats are kept: the next click is often the item just clicked, and a
 *   model must be able to rank it.
 * - A model sees a prefix through a copy that holds events [0, upTo) only
 *   (frozen arrays), so it cannot read the target or anything after it.
 * - Ties are pessimistic (see `rankOf` in src/metrics/ranking.ts).
 */
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetFormat, ReadOptions } from "../data/types.js";
import { BadRequestError } from "../errors.js";
import type { EvalTable } from "./eval-table.js";
import { DEFAULT_KS, RankingAccumulator, rankOf } from "../metrics/ranking.js";

export type { EvalTable };

/**
 * One user's (or one anonymous session's) events, sorted by time (stable:
 * events with the same timestamp keep their file order). The arrays are
 * parallel: event i is (items[i], categories[i], types[i], times[i]).
 */
export interface Session {
  /** The user id (Yoochoose: "yc-<SessionId>"). */
  id: string;
  items: readonly string[];
  /** Category ids; "" where the data set has none (Yoochoose has none). */
  categories: readonly string[];
  /** EventType numbers (src/wire/proto.ts). */
  types: readonly number[];
  /** Epoch milliseconds, non-decreasing. */
  times: readonly number[];
  /**
   * Test sequences only: events before this index are context (they belong
   * to the training period) and are not targets. Targets are the events at
   * index >= max(1, evalFrom). Undefined = 0.
   */
  evalFrom?: number;
}

/** What is predicted: the next event's item id or its category id. */
export type TokenKind = "item" | "category";

export interface Split {
  /** Short name for tables, e.g. "yoochoose-100k train_tr -> train_valid". */
  name: string;
  /**
   * "sessions": train and test are disjoint sets of whole sessions.
   * "time": train holds every event before a cut; test sequences are users'
   * full histories with `evalFrom` at the cut.
   */
  protocol: "sessions" | "time";
  train: Session[];
  test: Session[];
  /** Human-readable account of the split: files, sizes, time ranges, caveats. */
  description: string;
}

/**
 * The candidate tokens: every token in the training sessions, most frequent
 * first (ties by id), so index 0 is the most popular. This is the same order
 * as src/models/lstm-features.ts `Vocab.fromCounts(counts, 1, Infinity)`
 * shifted by its two reserved slots (lstm index = eval index + 2).
 */
export interface Vocab {
  token: TokenKind;
  /** tokens[i] is the id at index i. */
  tokens: readonly string[];
  index: ReadonlyMap<string, number>;
  /** Training events per token (all event types). */
  counts: Int32Array;
}

/**
 * A next-token model. `fit` (when present) is called once per evaluation with
 * the training sessions and the vocabulary. Scores are written over
 * `vocab.tokens` (out[i] = score of vocab.tokens[i]; higher is better; `out`
 * is zero-filled before each call); a model without `fit` must already use
 * the vocabulary `buildVocab(split.train, token)` returns.
 */
export interface NextItemModel {
  name: string;
  fit?(train: Session[], vocab: Vocab): void | Promise<void>;
  /**
   * Scores for the next token after `prefix`. `prefix` is a copy of the test
   * sequence cut at the target: it holds exactly `upTo` events (the ones
   * before the target), so `prefix.items.length === upTo`. Calls come in
   * test-session order with `upTo` increasing within a session (targets
   * outside the vocabulary are skipped, so `upTo` may jump), which lets a
   * recurrent model step a cached state forward instead of replaying.
   */
  scoreNext(prefix: Session, upTo: number, out: Float32Array): void | Promise<void>;
  /**
   * Optional batched form, used instead of `scoreNext` when present: scores
   * `prefixes[b]` (same meaning as above) into `out[b]`. Batches hold at most
   * `batchSize` prefixes (default 256).
   */
  scoreNextBatch?(prefixes: Array<[Session, number]>, out: Float32Array[]): void | Promise<void>;
}

export interface NextItemOptions {
  /** What to predict (default "item"). */
  token?: TokenKind;
  /** Cut-offs for HR@K and MRR@K (default [10, 20]). */
  ks?: readonly number[];
  /** Prefixes per `scoreNextBatch` call (default 256). */
  batchSize?: number;
  /** Default: `buildVocab(split.train, token)`. */
  vocab?: Vocab;
  /** Progress over all models' targets; `note` names the model. */
  onProgress?(done: number, total: number, note: string): void;
}

export interface LoadOptions {
  /** Read at most this many events of the file (default: all). */
  limit?: number;
  onSkip?: ReadOptions["onSkip"];
}

const DAY_MS = 86_400_000;
const YOOCHOOSE_TRAIN = "yoochoose-100k/yoochoose-clicks-100k_train_tr.txt.gz";
const YOOCHOOSE_TEST = "yoochoose-100k/yoochoose-clicks-100k_train_valid.txt.gz";

/** Reads a data set file and groups its events into per-user sessions sorted by time; sessions ordered by (first time, id). */
export async function loadSessions(format: DatasetFormat, file: string, options: LoadOptions = {}): Promise<Session[]> {
  interface Ev { item: string; category: string; type: number; time: number }
  const byUser = new Map<string, Ev[]>();
  const readOptions: ReadOptions = {};
  if (options.limit !== undefined) readOptions.limit = options.limit;
  if (options.onSkip !== undefined) readOptions.onSkip = options.onSkip;
  for await (const e of readDataset(format, file, readOptions)) {
    let evs = byUser.get(e.userId);
    if (!evs) byUser.set(e.userId, (evs = []));
    evs.push({ item: e.itemId ?? "", category: e.categoryId ?? "", type: e.type, time: e.timestampMs });
  }
  const sessions: Session[] = [];
  for (const [id, evs] of byUser) {
    evs.sort((a, b) => a.time - b.time);
    sessions.push({
      id,
      items: evs.map((e) => e.item),
      categories: evs.map((e) => e.category),
      types: evs.map((e) => e.type),
      times: evs.map((e) => e.time),
    });
  }
  return sessions.sort((a, b) => a.times[0]! - b.times[0]! || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function slice(s: Session, from: number, to: number): Session {
  return {
    id: s.id,
    items: s.items.slice(from, to),
    categories: s.categories.slice(from, to),
    types: s.types.slice(from, to),
    times: s.times.slice(from, to),
  };
}

/** A copy of the first `upTo` events of `s` with frozen arrays: what a model is shown. */
export function prefixView(s: Session, upTo: number): Session {
  const v = slice(s, 0, upTo);
  Object.freeze(v.items);
  Object.freeze(v.categories);
  Object.freeze(v.types);
  Object.freeze(v.times);
  return Object.freeze(v);
}

const eventCount = (ss: readonly Session[]) => ss.reduce((n, s) => n + s.items.length, 0);
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

function timeRange(ss: readonly Session[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of ss) {
    if (s.times.length === 0) continue;
    lo = Math.min(lo, s.times[0]!);
    hi = Math.max(hi, s.times[s.times.length - 1]!);
  }
  return [lo, hi];
}

/**
 * Cuts every user's events at `start + fraction * (end - start)` of the
 * sessions' overall time range: training gets each user's events before the
 * cut, and each user with events at or after the cut becomes a test sequence
 * holding the whole history, with `evalFrom` = the number of events before
 * the cut (context, not targets).
 */
export function timeSplitSessions(sessions: readonly Session[], fraction: number, name = "time split"): Split {
  if (!(fraction > 0 && fraction < 1)) throw new BadRequestError(`fraction must be in (0, 1), got ${fraction}`);
  const [lo, hi] = timeRange(sessions);
  if (!(hi > lo)) throw new BadRequestError("timeSplitSessions needs events spanning a time range");
  const cut = lo + fraction * (hi - lo);
  const train: Session[] = [];
  const test: Session[] = [];
  for (const s of sessions) {
    let k = 0;
    while (k < s.times.length && s.times[k]! < cut) k++;
    if (k > 0) train.push(slice(s, 0, k));
    if (k < s.times.length) test.push({ ...s, evalFrom: k });
  }
  const withContext = test.filter((s) => s.evalFrom! > 0).length;
  const description =
    `${name}: events ${iso(lo)} .. ${iso(hi)} cut at ${iso(Math.round(cut))} (${fraction * 100}% of the range); ` +
    `train ${train.length} users / ${eventCount(train)} events before the cut; ` +
    `test ${test.length} users with events after the cut (${test.reduce((n, s) => n + s.items.length - s.evalFrom!, 0)} test events), ` +
    `${withContext} of them with training events as context`;
  return { name, protocol: "time", train, test, description };
}

/**
 * Session-rec's validation carve: sessions whose last event is within the
 * last `days` days of the sessions' time range become the test part, the
 * rest the training part.
 */
export function lastDaysSessionSplit(sessions: readonly Session[], days: number, name = "last-days split"): Split {
  if (!(days > 0)) throw new BadRequestError(`days must be positive, got ${days}`);
  const [, hi] = timeRange(sessions);
  const threshold = hi - days * DAY_MS;
  const train: Session[] = [];
  const test: Session[] = [];
  for (const s of sessions) {
    if (s.times.length === 0) continue;
    (s.times[s.times.length - 1]! >= threshold ? test : train).push(s);
  }
  const description =
    `${name}: sessions ending at or after ${iso(threshold)} (last ${days} day(s)) are test; ` +
    `train ${train.length} sessions / ${eventCount(train)} events, test ${test.length} sessions / ${eventCount(test)} events`;
  return { name, protocol: "sessions", train, test, description };
}

/**
 * A validation split carved from `split.train` only (never from the test
 * part), for tuning: "sessions" splits hold out the sessions ending in the
 * last day; "time" splits cut the training period again at 80%.
 */
export function validationSplit(split: Split): Split {
  return split.protocol === "sessions"
    ? lastDaysSessionSplit(split.train, 1, `validation of ${split.name}`)
    : timeSplitSessions(split.train, 0.8, `validation of ${split.name}`);
}

/**
 * Yoochoose 100k as prepared by session-rec: train_tr -> train_valid. The two
 * files hold disjoint session ids (checked and stated in the description);
 * were one shared, its test events would still be evaluated on their own,
 * without the training part as context. session-rec splits whole sessions by
 * their END time, so a test session may start before the last training click.
 */
export async function yoochooseSplit(dataDir: string, options: LoadOptions = {}): Promise<Split> {
  const trainFile = resolveDataFile(dataDir, "yoochoose", YOOCHOOSE_TRAIN);
  const testFile = resolveDataFile(dataDir, "yoochoose", YOOCHOOSE_TEST);
  const train = await loadSessions("yoochoose", trainFile, options);
  const test = await loadSessions("yoochoose", testFile, options);
  const trainIds = new Set(train.map((s) => s.id));
  const shared = test.filter((s) => trainIds.has(s.id)).length;
  const lastEnd = (ss: Session[]) => Math.max(...ss.map((s) => s.times[s.times.length - 1]!));
  const firstEnd = Math.min(...test.map((s) => s.times[s.times.length - 1]!));
  const [testStart] = timeRange(test);
  const name = "yoochoose-100k train_tr -> train_valid";
  const description =
    `${name}${options.limit !== undefined ? ` (first ${options.limit} events of each file)` : ""}: ` +
    `train ${train.length} sessions / ${eventCount(train)} clicks, test ${test.length} sessions / ${eventCount(test)} clicks; ` +
    `${shared} session ids in both files (test sessions are evaluated on their own clicks only); ` +
    `train sessions end by ${iso(lastEnd(train))}, test sessions end from ${iso(firstEnd)} (first test click ${iso(testStart)})`;
  return { name, protocol: "sessions", train, test, description };
}

/** Taobao (default file: the 2 h timeslice), all four behaviours, cut at `trainFraction` (default 0.8) of its time range. */
export async function taobaoTimeSplit(dataDir: string, options: LoadOptions & { file?: string; trainFraction?: number } = {}): Promise<Split> {
  const file = resolveDataFile(dataDir, "taobao", options.file);
  const sessions = await loadSessions("taobao", file, options);
  const name = `taobao ${file.split("/").pop()} time split`;
  return timeSplitSessions(sessions, options.trainFraction ?? 0.8, name);
}

export function tokensOf(s: Session, token: TokenKind): readonly string[] {
  return token === "item" ? s.items : s.categories;
}

/** The vocabulary of `token` over the training sessions (empty ids skipped). */
export function buildVocab(train: readonly Session[], token: TokenKind): Vocab {
  const counts = new Map<string, number>();
  for (const s of train) for (const t of tokensOf(s, token)) if (t !== "") counts.set(t, (counts.get(t) ?? 0) + 1);
  const sorted = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return {
    token,
    tokens: sorted.map(([t]) => t),
    index: new Map(sorted.map(([t], i) => [t, i])),
    counts: Int32Array.from(sorted, ([, n]) => n),
  };
}

interface Target {
  session: Session;
  upTo: number;
  /** Vocabulary index, -1 when out of vocabulary. */
  index: number;
}

function collectTargets(test: readonly Session[], vocab: Vocab): Target[] {
  const targets: Target[] = [];
  for (const s of test) {
    const tokens = tokensOf(s, vocab.token);
    for (let t = Math.max(1, s.evalFrom ?? 0); t < tokens.length; t++) {
      targets.push({ session: s, upTo: t, index: vocab.index.get(tokens[t]!) ?? -1 });
    }
  }
  return targets;
}

/**
 * Evaluates each model on `split` (fit on split.train, scored on every target
 * of split.test). Rows: model, HR@K and MRR@K for each K, targets (n),
 * oov (targets outside the vocabulary, counted as misses), repeats (targets
 * equal to the previous token), vocab size, and seconds (fit + scoring).
 */
export async function evaluateNextItem(split: Split, models: readonly NextItemModel[], options: NextItemOptions = {}): Promise<EvalTable> {
  const token = options.token ?? "item";
  const ks = options.ks ?? DEFAULT_KS;
  const batchSize = options.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new BadRequestError(`options.batchSize must be a positive integer, got ${batchSize}`);
  const vocab = options.vocab ?? buildVocab(split.train, token);
  if (vocab.token !== token) throw new BadRequestError(`options.vocab is a ${vocab.token} vocabulary but token is ${token}`);
  if (vocab.tokens.length === 0) throw new BadRequestError(`the training part of ${split.name} has no ${token} ids`);

  const targets = collectTargets(split.test, vocab);
  const oov = targets.filter((t) => t.index < 0).length;
  const repeats = targets.filter((t) => {
    const tokens = tokensOf(t.session, token);
    return tokens[t.upTo] === tokens[t.upTo - 1];
  }).length;
  const total = targets.length * models.length;
  const metricColumns = new RankingAccumulator(ks).ks.flatMap((k) => [`HR@${k}`, `MRR@${k}`]);
  const rows: EvalTable["rows"] = [];
  let done = 0;

  for (const model of models) {
    const started = performance.now();
    await model.fit?.(split.train, vocab);
    const acc = new RankingAccumulator(ks);
    const ranked = targets.filter((t) => t.index >= 0);
    for (let i = 0; i < oov; i++) acc.add(undefined);
    const outs = Array.from({ length: model.scoreNextBatch ? Math.min(batchSize, ranked.length) : 1 }, () => new Float32Array(vocab.tokens.length));
    for (let from = 0; from < ranked.length; from += outs.length) {
      const batch = ranked.slice(from, from + outs.length);
      for (const out of outs) out.fill(0);
      if (model.scoreNextBatch) {
        await model.scoreNextBatch(batch.map((t) => [prefixView(t.session, t.upTo), t.upTo]), outs.slice(0, batch.length));
      } else {
        const t = batch[0]!;
        await model.scoreNext(prefixView(t.session, t.upTo), t.upTo, outs[0]!);
      }
      batch.forEach((t, b) => acc.add(rankOf(outs[b]!, t.index)));
      done += batch.length;
      options.onProgress?.(done + oov, total, model.name);
    }
    if (ranked.length === 0) options.onProgress?.(done + oov, total, model.name);
    done += oov;
    const result = acc.result();
    const row: Record<string, string | number> = { model: model.name };
    for (const c of metricColumns) row[c] = result[c]!;
    Object.assign(row, { targets: targets.length, oov, repeats, vocab: vocab.tokens.length, seconds: (performance.now() - started) / 1000 });
    rows.push(row);
  }
  return {
    task: `next-${token}`,
    split: split.description,
    columns: ["model", ...metricColumns, "targets", "oov", "repeats", "vocab", "seconds"],
    rows,
  };
}
