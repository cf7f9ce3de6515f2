/**
 * Next-item evaluation: ranking metrics on hand-computed cases, the baselines
 * on tiny synthetic sessions, the evaluator's guarantee that a model never
 * sees the target or anything after it, and the split loaders on the real
 * data sets (../shared/data, or PORTRAIT_DATASETS) with a small limit.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { resolveDataFile } from "../src/data/datasets.js";
import { ItemKnnModel, PopularityModel, SessionPopModel, SknnModel, tuneOnValidation } from "../src/eval/baselines.js";
import {
  buildVocab,
  evaluateNextItem,
  lastDaysSessionSplit,
  prefixView,
  taobaoTimeSplit,
  timeSplitSessions,
  validationSplit,
  yoochooseSplit,
} from "../src/eval/next-item.js";
import type { NextItemModel, Session, Split, Vocab } from "../src/eval/next-item.js";
import { RankingAccumulator, rankOf } from "../src/metrics/ranking.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(REPO_ROOT, "../shared/data");

function requireData(format: "yoochoose" | "taobao"): void {
  try {
    resolveDataFile(DATA_DIR, format);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`missing test data: ${why} (tests look in ${DATA_DIR}; set PORTRAIT_DATASETS to override)`);
  }
}

/** A session of clicks one minute apart starting at `startMin` minutes. */
function session(id: string, items: string[], startMin = 0, categories?: string[]): Session {
  return {
    id,
    items,
    categories: categories ?? items.map(() => ""),
    types: items.map(() => 1),
    times: items.map((_, i) => (startMin + i) * 60_000),
  };
}

function split(train: Session[], test: Session[]): Split {
  return { name: "synthetic", protocol: "sessions", train, test, description: "synthetic" };
}

/** The vocabulary tokens of `model` ranked for `prefix`, best first. */
function ranking(model: NextItemModel, vocab: Vocab, prefix: Session): string[] {
  const out = new Float32Array(vocab.tokens.length);
  void model.scoreNext(prefixView(prefix, prefix.items.length), prefix.items.length, out);
  return [...vocab.tokens].sort((a, b) => out[vocab.index.get(b)!]! - out[vocab.index.get(a)!]!);
}

describe("ranking metrics", () => {
  it("ranking - HR@K and MRR@K on a hand-computed case, misses included in n", () => {
    const acc = new RankingAccumulator([1, 3]);
    for (const r of [1, 2, 5, undefined]) acc.add(r);
    expect(acc.result()).toEqual({ "HR@1": 0.25, "MRR@1": 0.25, "HR@3": 0.5, "MRR@3": (1 + 1 / 2) / 4, n: 4 });
  });

  it("ranking - default cut-offs are 10 and 20; a rank just past K counts nothing at K", () => {
    const acc = new RankingAccumulator();
    acc.add(10);
    acc.add(11);
    const r = acc.result();
    expect(Object.keys(r).sort()).toEqual(["HR@10", "HR@20", "MRR@10", "MRR@20", "n"]);
    expect(r["HR@10"]).toBe(0.5);
    expect(r["MRR@10"]).toBeCloseTo(0.1 / 2, 12);
    expect(r["HR@20"]).toBe(1);
    expect(r["MRR@20"]).toBeCloseTo((1 / 10 + 1 / 11) / 2, 12);
  });

  it("ranking - rejects bad ranks and cut-offs", () => {
    const acc = new RankingAccumulator();
    expect(() => acc.add(0)).toThrow(/positive integer/);
    expect(() => acc.add(1.5)).toThrow(/positive integer/);
    expect(() => new RankingAccumulator([])).toThrow(/at least one/);
    expect(() => new RankingAccumulator([0])).toThrow(/positive integers/);
  });

  it("rankOf - strictly greater scores and every tie rank above the target (pessimistic)", () => {
    const s = Float32Array.from([0.1, 0.5, 0.5, 0.9]);
    expect(rankOf(s, 3)).toBe(1);
    expect(rankOf(s, 1)).toBe(3);
    expect(rankOf(s, 2)).toBe(3);
    expect(rankOf(s, 0)).toBe(4);
    expect(rankOf(new Float32Array(7), 2)).toBe(7);
    expect(rankOf(Float32Array.from([NaN, 0.2, 0.1]), 1)).toBe(2);
    expect(rankOf(Float32Array.from([0.3, NaN, 0.1]), 1)).toBe(3);
    expect(rankOf(s, -1)).toBeUndefined();
    expect(rankOf(s, 4)).toBeUndefined();
  });
});

describe("baselines on synthetic sessions", () => {
  // C is the most popular item; A co-occurs twice with C but C is everywhere,
  // and once with the rare B.
  const train = [
    session("s1", ["A", "C"]),
    session("s2", ["A", "C"]),
    session("s3", ["A", "B"]),
    ...["D", "E", "F", "G", "H", "I", "J", "K"].map((x, i) => session(`c${i}`, ["C", x], 10 + i)),
  ];
  const vocab = buildVocab(train, "item");

  it("popularity - the most frequent training item first", () => {
    const pop = new PopularityModel();
    pop.fit(train, vocab);
    expect(ranking(pop, vocab, session("t", ["B"]))[0]).toBe("C");
  });

  it("item-kNN - lambda decides between a strong co-occurrence with a popular item and a rare one", () => {
    // supp: A 3, B 1, C 10. lambda 0: sim(A,B) = 1/sqrt(3*1) = .577 > sim(A,C) = 2/sqrt(3*10) = .365.
    const plain = new ItemKnnModel({ lambda: 0, alpha: 0.5 });
    plain.fit(train, vocab);
    expect(ranking(plain, vocab, session("t", ["C", "A"])).slice(0, 2)).toEqual(["B", "C"]);
    // lambda 20: sim(A,B) = 1/sqrt(23*21) = .0454 < sim(A,C) = 2/sqrt(23*30) = .0761.
    const regularised = new ItemKnnModel({ lambda: 20, alpha: 0.5 });
    regularised.fit(train, vocab);
    expect(ranking(regularised, vocab, session("t", ["C", "A"])).slice(0, 2)).toEqual(["C", "B"]);
  });

  it("item-kNN - only the last item counts, and items without neighbours fall back to popularity", async () => {
    const knn = new ItemKnnModel({ lambda: 0 });
    knn.fit(train, vocab);
    expect(ranking(knn, vocab, session("t", ["A", "D"]))[0]).toBe("C");
    const pop = new PopularityModel();
    pop.fit(train, vocab);
    expect(ranking(knn, vocab, session("t", ["A", "unseen"]))).toEqual(ranking(pop, vocab, session("t", ["A"])));
    // Through the evaluator: after A the next click is B (rank 1); after B (whose only neighbour is A) it is C (rank 2).
    const table = await evaluateNextItem(split(train, [session("t", ["A", "B", "C"], 100)]), [knn], { ks: [1, 2] });
    expect(table.rows[0]).toMatchObject({ model: "item-kNN", "HR@1": 0.5, "HR@2": 1, targets: 2, oov: 0 });
  });

  it("SKNN - neighbour sessions score their items, repeats included; the sample keeps the most recent sessions", () => {
    const sessions = [
      session("old", ["A", "B", "C"], 0),
      session("new", ["A", "B", "D"], 10),
      session("other", ["X", "Y"], 20),
    ];
    const v = buildVocab(sessions, "item");
    const sknn = new SknnModel({ k: 10, sampleSize: 10 });
    sknn.fit(sessions, v);
    const r = ranking(sknn, v, session("t", ["A", "B"], 30));
    expect(new Set(r.slice(0, 2))).toEqual(new Set(["A", "B"]));
    expect(new Set(r.slice(2, 4))).toEqual(new Set(["C", "D"]));
    const recent = new SknnModel({ k: 10, sampleSize: 1 });
    recent.fit(sessions, v);
    const r1 = ranking(recent, v, session("t", ["A", "B"], 30));
    expect(r1.indexOf("D")).toBeLessThan(r1.indexOf("C"));
    expect(r1.indexOf("D")).toBe(2);
  });

  it("S-POP - items of the prefix first, by count, then popularity", () => {
    const spop = new SessionPopModel();
    spop.fit(train, vocab);
    expect(ranking(spop, vocab, session("t", ["B", "D", "B"])).slice(0, 3)).toEqual(["B", "D", "C"]);
  });

  it("tuning - picks the grid entry with the best validation metric", async () => {
    const validation = split(train, [session("t", ["C", "A", "B"], 100), session("u", ["A", "B"], 100)]);
    const r = await tuneOnValidation(validation, [{ lambda: 20 }, { lambda: 0 }], (p) => new ItemKnnModel(p), { metric: "MRR@1" });
    expect(r.best).toEqual({ lambda: 0 });
    expect(r.trials.map((t) => t.value)).toEqual([1 / 3, 1]);
  });
});

describe("evaluator", () => {
  const train = [session("a", ["A", "B", "C"]), session("b", ["B", "C", "D"], 5), session("c", ["D", "A"], 9)];
  const test = [session("t1", ["A", "B", "C", "C"], 20), session("t2", ["D", "A", "Z"], 30), session("t3", ["B"], 40)];

  /** Scores the item at prefix.items[upTo] (the target) highest, if it can see it. */
  class Cheat implements NextItemModel {
    readonly name = "cheat";
    vocab: Vocab | undefined;
    calls: Array<[string, number, number]> = [];
    mutationErrors = 0;
    fit(_train: Session[], vocab: Vocab): void {
      this.vocab = vocab;
    }
    scoreNext(prefix: Session, upTo: number, out: Float32Array): void {
      this.calls.push([prefix.id, upTo, prefix.items.length]);
      const peek = prefix.items[upTo];
      const i = peek === undefined ? undefined : this.vocab!.index.get(peek);
      if (i !== undefined) out[i] = 1;
      try {
        (prefix.items as string[]).push("A");
      } catch {
        this.mutationErrors++;
      }
    }
  }

  it("evaluator - a model cannot see the target: a cheating model ranks every target last", async () => {
    const cheat = new Cheat();
    const table = await evaluateNextItem(split(train, test), [cheat], { ks: [1, 3] });
    // Targets: t1 B, C, C; t2 A, Z (Z not in training: a miss without a call); t3 has no target.
    // All-zero scores rank the target last (4 of 4) under pessimistic ties.
    expect(table.rows[0]).toMatchObject({ "HR@1": 0, "HR@3": 0, targets: 5, oov: 1, repeats: 1, vocab: 4 });
    expect(cheat.calls).toEqual([["t1", 1, 1], ["t1", 2, 2], ["t1", 3, 3], ["t2", 1, 1]]);
    expect(cheat.mutationErrors).toBe(4);
    // The test sessions are untouched.
    expect(test[0]!.items).toEqual(["A", "B", "C", "C"]);
  });

  it("evaluator - the prefix a model sees is the session's first upTo events, evalFrom context included", async () => {
    const seen: Session[] = [];
    const spy: NextItemModel = { name: "spy", scoreNext: (p) => void seen.push(p) };
    const withContext: Session = { ...session("u", ["A", "B", "C", "D"], 50, ["x", "x", "y", "y"]), evalFrom: 2 };
    await evaluateNextItem(split(train, [withContext]), [spy]);
    expect(seen.map((p) => p.items)).toEqual([["A", "B"], ["A", "B", "C"]]);
    expect(seen[1]).toEqual({ id: "u", items: ["A", "B", "C"], categories: ["x", "x", "y"], types: [1, 1, 1], times: [3_000_000, 3_060_000, 3_120_000] });
  });

  it("evaluator - scoreNextBatch is used in batches and gives the same table as scoreNext", async () => {
    const knn = new ItemKnnModel({ lambda: 0 });
    const sizes: number[] = [];
    const batched: NextItemModel = {
      name: "item-kNN",
      fit: (t, v) => knn.fit(t, v),
      scoreNext: () => {
        throw new Error("scoreNext must not be called when scoreNextBatch exists");
      },
      scoreNextBatch: (prefixes, outs) => {
        sizes.push(prefixes.length);
        prefixes.forEach(([p, upTo], b) => knn.scoreNext(p, upTo, outs[b]!));
      },
    };
    const s = split(train, test);
    const one = await evaluateNextItem(s, [new ItemKnnModel({ lambda: 0 })], { ks: [1, 2] });
    const many = await evaluateNextItem(s, [batched], { ks: [1, 2], batchSize: 3 });
    expect(sizes).toEqual([3, 1]);
    const strip = (t: typeof one) => t.rows.map(({ seconds: _, ...r }) => r);
    expect(strip(many)).toEqual(strip(one));
  });

  it("evaluator - categories: targets are next categories, empty categories are misses", async () => {
    const catTrain = [session("a", ["1", "2", "3"], 0, ["x", "y", "y"])];
    const catTest = [session("t", ["4", "5", "6"], 10, ["y", "y", ""])];
    const table = await evaluateNextItem(split(catTrain, catTest), [new SessionPopModel()], { token: "category", ks: [1] });
    expect(table.task).toBe("next-category");
    expect(table.rows[0]).toMatchObject({ "HR@1": 0.5, targets: 2, oov: 1, repeats: 1, vocab: 2 });
    await expect(evaluateNextItem(split(train, test), [new PopularityModel()], { token: "category" })).rejects.toThrow(/no category ids/);
  });
});

describe("splits", () => {
  it("timeSplitSessions - events before the cut train, each user's history is the test context", () => {
    const s = timeSplitSessions([session("u", ["A", "B", "C", "D"], 0), session("v", ["E", "F"], 5), session("w", ["G"], 0)], 0.5);
    // Range 0..6 min, cut at 3 min.
    expect(s.train.map((t) => [t.id, t.items])).toEqual([["u", ["A", "B", "C"]], ["w", ["G"]]]);
    expect(s.test.map((t) => [t.id, t.items, t.evalFrom])).toEqual([["u", ["A", "B", "C", "D"], 3], ["v", ["E", "F"], 0]]);
  });

  it("lastDaysSessionSplit - sessions ending in the last day are held out", () => {
    const day = 24 * 60;
    const s = lastDaysSessionSplit([session("a", ["A", "B"], 0), session("b", ["A"], day), session("c", ["B", "C"], 2 * day - 1)], 1);
    expect(s.train.map((x) => x.id)).toEqual(["a"]);
    expect(s.test.map((x) => x.id)).toEqual(["b", "c"]);
  });

  it("yoochooseSplit - real files: time-ordered sessions, no shared ids, every train session ends before every test session", async () => {
    requireData("yoochoose");
    const s = await yoochooseSplit(DATA_DIR, { limit: 3000 });
    expect(s.train.length).toBeGreaterThan(300);
    expect(s.test.length).toBeGreaterThan(300);
    for (const x of [...s.train, ...s.test]) {
      for (let i = 1; i < x.times.length; i++) expect(x.times[i]!).toBeGreaterThanOrEqual(x.times[i - 1]!);
      expect(x.items.every((it) => /^\d+$/.test(it))).toBe(true);
    }
    const trainIds = new Set(s.train.map((x) => x.id));
    expect(s.test.filter((x) => trainIds.has(x.id))).toEqual([]);
    const lastTrainEnd = Math.max(...s.train.map((x) => x.times.at(-1)!));
    const firstTestEnd = Math.min(...s.test.map((x) => x.times.at(-1)!));
    expect(lastTrainEnd).toBeLessThan(firstTestEnd);
    expect(s.description).toMatch(/0 session ids in both files/);
    const v = validationSplit(s);
    const trainSet = new Set(s.train);
    expect([...v.train, ...v.test].every((x) => trainSet.has(x))).toBe(true);
    expect(v.test.length).toBeGreaterThan(0);
  });

  it("taobaoTimeSplit - real file: train strictly before the cut, test targets at or after it, context = that user's training events", async () => {
    requireData("taobao");
    const s = await taobaoTimeSplit(DATA_DIR, { limit: 20_000 });
    const all = [...s.train, ...s.test].flatMap((x) => x.times);
    const cut = Math.min(...s.test.map((x) => x.times[x.evalFrom!]!));
    expect(Math.max(...s.train.map((x) => x.times.at(-1)!))).toBeLessThan(cut);
    expect(cut).toBeGreaterThan(Math.min(...all));
    const trainById = new Map(s.train.map((x) => [x.id, x]));
    let withContext = 0;
    for (const x of s.test) {
      for (let i = 1; i < x.times.length; i++) expect(x.times[i]!).toBeGreaterThanOrEqual(x.times[i - 1]!);
      const context = trainById.get(x.id);
      expect(x.evalFrom).toBe(context?.items.length ?? 0);
      if (context) {
        withContext++;
        expect(x.items.slice(0, x.evalFrom)).toEqual(context.items);
        expect(x.categories.slice(0, x.evalFrom)).toEqual(context.categories);
      }
    }
    expect(withContext).toBeGreaterThan(0);
    expect(s.test.every((x) => x.categories.every((c) => c !== ""))).toBe(true);
    const v = validationSplit(s);
    expect(Math.max(...[...v.train, ...v.test].flatMap((x) => x.times))).toBeLessThan(cut);
  });
});
