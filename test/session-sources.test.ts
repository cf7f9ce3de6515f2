/**
 * The session sources of the recs worker (sequential rules, V-SKNN over
 * recent sessions) and the ranking policy, on hand-made logs whose scores
 * are computed by hand in the comments.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../src/errors.js";
import { generateCandidates } from "../src/recs/candidates.js";
import { choosePolicy, DEFAULT_POLICY, orderCandidates, readPolicyFile, resolvePolicy } from "../src/recs/ranking-policy.js";
import { createRecsIndex, observeItemEvent, type RecsIndex } from "../src/recs/recs-index.js";
import { compileRecsOptions, type RecsOptions } from "../src/recs/recs-options.js";
import { SequentialRules } from "../src/recs/sequential-rules.js";
import { sessionKnnScores } from "../src/recs/session-knn.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { EventType } from "../src/wire/proto.js";

const T0 = Date.UTC(2024, 4, 1);
const MIN = 60_000;

function index(o: RecsOptions = {}): RecsIndex {
  return createRecsIndex(compileRecsOptions(o));
}

function view(idx: RecsIndex, userId: string, itemId: string, t: number, type = EventType.VIEW): void {
  observeItemEvent(idx, { userId, itemId, type, timestampMs: t });
}

function asObject(m: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...m].map(([k, v]) => [k, Number(v.toFixed(6))]));
}

describe("sequential rules", () => {
  it("sequential rules - 1/gap weights within a session, repeats and self-rules kept, a gap starts a new session", () => {
    const idx = index();
    // Session of u1: a, b, c, a.
    //   b: a->b +1; c: b->c +1, a->c +1/2; a: c->a +1, b->a +1/2, a->a +1/3.
    ["a", "b", "c", "a"].forEach((item, i) => view(idx, "u1", item, T0 + i * MIN));
    // 31 minutes later: a new session; no rule from the old session's last item.
    view(idx, "u1", "d", T0 + 3 * MIN + 31 * MIN);
    // A zero-weight event type (impression) makes no rule.
    view(idx, "u1", "e", T0 + 35 * MIN, EventType.REC_IMPRESSION);
    const round = (l: Array<{ itemId: string; score: number }>) => l.map((s) => [s.itemId, Number(s.score.toFixed(6))]);
    expect(round(idx.rules.successors("a", 10))).toEqual([["b", 1], ["c", 0.5], ["a", 0.333333]]);
    expect(round(idx.rules.successors("b", 10))).toEqual([["c", 1], ["a", 0.5]]);
    expect(round(idx.rules.successors("c", 10))).toEqual([["a", 1]]);
    expect(idx.rules.successors("d", 10)).toEqual([]);
    expect(idx.sessions.current("u1")!.items).toEqual(["d"]);
  });

  it("sequential rules - only the last `steps` items reach; a full successor list keeps its strong rules", () => {
    const r = new SequentialRules(compileRecsOptions({ sequentialRules: { steps: 2, maxSuccessors: 2 } }).sequentialRules);
    r.observe(["p", "q", "r"], 3, "s"); // r->s 1, q->s 1/2; p is 3 back: no rule
    expect(r.successors("p", 5)).toEqual([]);
    expect(r.successors("q", 5)).toEqual([{ itemId: "s", score: 0.5 }]);
    r.observe(["x"], 1, "y");
    r.observe(["x"], 1, "y");
    r.observe(["x"], 1, "z");
    r.observe(["x"], 1, "w"); // 1 is not above the weakest (z, 1): dropped
    expect(r.successors("x", 5)).toEqual([{ itemId: "y", score: 2 }, { itemId: "z", score: 1 }]);
    r.observe(["x", "w"], 2, "v"); // x->v 1/2, w->v 1: x's list is full and 1/2 < 1, so v is not a successor of x
    expect(r.successors("x", 5).map((s) => s.itemId)).toEqual(["y", "z"]);
    expect(r.successors("w", 5)).toEqual([{ itemId: "v", score: 1 }]);
  });
});

describe("session-kNN", () => {
  function threeSessions(current: string[]): RecsIndex {
    const idx = index();
    // Past sessions: S1 (p1) = a, b, x ending at T0+2m; S2 (p2) = b, y ending at T0+5m.
    ["a", "b", "x"].forEach((item, i) => view(idx, "p1", item, T0 + i * MIN));
    ["b", "y"].forEach((item, i) => view(idx, "p2", item, T0 + (4 + i) * MIN));
    current.forEach((item, i) => view(idx, "u", item, T0 + (10 + i) * MIN));
    return idx;
  }

  it("session-kNN - position weights, similarity and 1/step score decay as computed by hand", () => {
    // Current [a, b]: w(a) = 1/2, w(b) = 2/2; 2 distinct items.
    // sim(S1) = (1/2 + 1) / 2 = 0.75, newest shared item b is 1 from the end: x1.
    // sim(S2) = 1 / 2 = 0.5, newest shared item b: x1.
    // a: 0.75, b: 0.75 + 0.5, x: 0.75, y: 0.5 (the current session itself is no neighbour).
    let idx = threeSessions(["a", "b"]);
    const o = compileRecsOptions().sessionKnn;
    expect(asObject(sessionKnnScores(idx.sessions, idx.sessions.current("u")!, o))).toEqual({ a: 0.75, b: 1.25, x: 0.75, y: 0.5 });
    // Current [b, a]: w(b) = 1/2, w(a) = 1.
    // sim(S1) = 1.5 / 2 = 0.75, newest shared a: x1. sim(S2) = 0.5 / 2 = 0.25, newest shared b is 2 from the end: x1/2.
    idx = threeSessions(["b", "a"]);
    expect(asObject(sessionKnnScores(idx.sessions, idx.sessions.current("u")!, o))).toEqual({ a: 0.75, b: 0.875, x: 0.75, y: 0.125 });
    // sampleSize 1: only the most recent candidate session (S2) is a neighbour.
    const one = compileRecsOptions({ sessionKnn: { sampleSize: 1 } }).sessionKnn;
    idx = threeSessions(["a", "b"]);
    expect(asObject(sessionKnnScores(idx.sessions, idx.sessions.current("u")!, one))).toEqual({ b: 0.5, y: 0.5 });
    // k 1: only the most similar (S1).
    const k1 = compileRecsOptions({ sessionKnn: { k: 1 } }).sessionKnn;
    expect(asObject(sessionKnnScores(idx.sessions, idx.sessions.current("u")!, k1))).toEqual({ a: 0.75, b: 0.75, x: 0.75 });
  });

  it("candidates - sknn and rules sources, normalised by their best, with reasons, and the policy's order", () => {
    const idx = threeSessions(["a", "b"]);
    const session = idx.sessions.current("u", T0 + 12 * MIN)!;
    const cands = generateCandidates({
      userId: "u", known: true, recentItems: ["b", "a"], topCategories: [], nextCategories: [], purchasedItems: [], exclude: [], nowMs: T0 + 12 * MIN, session,
    }, idx, compileRecsOptions().candidates);
    const by = new Map(cands.map((c) => [c.itemId, c]));
    // sknn / 1.25: b 1, a 0.6, x 0.6, y 0.4. Rules from b (the newest): b->x 1 (S1), b->y 1 (S2): / 1.
    expect(by.get("b")!.scores.sknn).toBeCloseTo(1, 9);
    expect(by.get("x")!.scores.sknn).toBeCloseTo(0.6, 9);
    expect(by.get("y")!.scores.sknn).toBeCloseTo(0.4, 9);
    expect(by.get("x")!.scores.rules).toBeCloseTo(1, 9);
    expect(by.get("y")!.sources.slice(0, 2)).toEqual(["sknn", "rules"]);
    expect(by.get("b")!.reason).toBe("viewed in sessions like yours");
    expect(by.get("x")!.reason).toBe("often viewed after b");
    const sknn = resolvePolicy({ policy: "source:sknn", policyFile: "", weights: {} });
    expect(orderCandidates(sknn, cands)[0]!.itemId).toBe("b");
    const rules = resolvePolicy({ policy: "source:rules", policyFile: "", weights: {} });
    expect(orderCandidates(rules, cands).slice(0, 2).map((c) => c.itemId).sort()).toEqual(["x", "y"]);
  });

  it("session store - memory caps hold under a long random stream", () => {
    const idx = index({
      sessions: { maxSessions: 100, maxUserSessions: 3, maxSessionItems: 8, maxSessionsPerItem: 5, maxItems: 50 },
      sequentialRules: { maxSuccessors: 4, maxItems: 30 },
    });
    const rnd = seededRandom(7);
    let t = T0;
    for (let i = 0; i < 20_000; i++) {
      t += Math.floor(rnd() * 5 * MIN);
      view(idx, `u${Math.floor(rnd() * 300)}`, `i${Math.floor(rnd() * 400)}`, t);
    }
    expect(idx.sessions.size).toBeLessThanOrEqual(100);
    expect(idx.sessions.itemCount).toBeLessThanOrEqual(50);
    expect(idx.rules.size).toBeLessThanOrEqual(30);
    for (let i = 0; i < 400; i++) {
      expect(idx.sessions.sessionsOf(`i${i}`).length).toBeLessThan(10);
      expect(idx.rules.successors(`i${i}`, 100).length).toBeLessThanOrEqual(4);
    }
    for (let u = 0; u < 300; u++) {
      expect(idx.sessions.history(`u${u}`).length).toBeLessThanOrEqual(3);
      const s = idx.sessions.current(`u${u}`);
      if (s !== undefined) {
        expect(s.items.length).toBeLessThanOrEqual(8);
        expect(s.distinct.size).toBeLessThanOrEqual(8);
      }
    }
  });

  it("session store - forgetting a user removes all of its sessions from the neighbours", () => {
    const idx = threeSessions(["a", "b"]);
    idx.sessions.forgetUser("p1");
    const o = compileRecsOptions().sessionKnn;
    expect(asObject(sessionKnnScores(idx.sessions, idx.sessions.current("u")!, o))).toEqual({ b: 0.5, y: 0.5 });
  });
});

describe("repeat source", () => {
  it("repeat - the user's kept sessions (1/(j+1) by recency) and bought items, only with excludePurchased off", () => {
    const idx = index({ sessions: { lastSessionMaxAgeMs: 86_400_000 } });
    const H = 3_600_000;
    ["a", "b"].forEach((it, i) => view(idx, "u", it, T0 + i * MIN));
    ["b", "c"].forEach((it, i) => view(idx, "u", it, T0 + 2 * H + i * MIN));
    view(idx, "u", "c", T0 + 4 * H);
    expect(idx.sessions.history("u").map((s) => s.items)).toEqual([["c"], ["b", "c"], ["a", "b"]]);
    // The last session is used by a request 1 h later (lastSessionMaxAgeMs 1 day), not with the default 30 minutes.
    expect(idx.sessions.forRequest("u", T0 + 5 * H)!.items).toEqual(["c"]);
    expect(index().sessions.forRequest("u", T0 + 5 * H)).toBeUndefined();
    // c: 1 + 1/2 = 1.5; b: 1/2 + 1/3; a: 1/3 + 1 (bought, newest). Normalised by 1.5.
    const ctx = {
      userId: "u", known: true, recentItems: [], topCategories: [], nextCategories: [], purchasedItems: ["a"], exclude: [],
      nowMs: T0 + 5 * H, history: idx.sessions.history("u"),
    };
    const off = compileRecsOptions({ candidates: { excludePurchased: false } }).candidates;
    const by = new Map(generateCandidates(ctx, idx, off).map((c) => [c.itemId, c]));
    expect(by.get("c")!.scores.repeat).toBeCloseTo(1, 9);
    expect(by.get("a")!.scores.repeat).toBeCloseTo(4 / 3 / 1.5, 9);
    expect(by.get("b")!.scores.repeat).toBeCloseTo(5 / 6 / 1.5, 9);
    expect(by.get("a")!.reason).toBe("bought before");
    expect(by.get("c")!.reason).toBe("from your earlier sessions");
    // excludePurchased on: no repeat source, and the bought item is gone.
    const on = generateCandidates(ctx, idx, compileRecsOptions().candidates);
    expect(on.some((c) => c.sources.includes("repeat"))).toBe(false);
    expect(on.map((c) => c.itemId)).not.toContain("a");
  });

  it("allowRecent off - the recent and current-session items are never candidates", () => {
    const idx = index();
    ["a", "b", "c"].forEach((it, i) => view(idx, "p", it, T0 + i * MIN));
    ["a", "b"].forEach((it, i) => view(idx, "u", it, T0 + (10 + i) * MIN));
    const session = idx.sessions.forRequest("u", T0 + 12 * MIN)!;
    const ctx = { userId: "u", known: true, recentItems: ["b"], topCategories: [], nextCategories: [], purchasedItems: [], exclude: [], nowMs: T0 + 12 * MIN, session };
    expect(generateCandidates(ctx, idx, compileRecsOptions().candidates).map((c) => c.itemId)).toEqual(expect.arrayContaining(["a", "b", "c"]));
    const ids = generateCandidates(ctx, idx, compileRecsOptions({ candidates: { allowRecent: false } }).candidates).map((c) => c.itemId);
    expect(ids).toContain("c");
    expect(ids).not.toContain("a");
    expect(ids).not.toContain("b");
  });
});

describe("ranking policy", () => {
  const results = {
    "source:sknn": { "HR@20": 0.63, "MRR@20": 0.34 },
    "source:rules": { "HR@20": 0.57, "MRR@20": 0.32 },
    prior: { "HR@20": 0.62, "MRR@20": 0.36 },
  };

  it("ranking policy - a planted ranker worse than the best source is not chosen, one that beats it is", () => {
    // prior beats sknn on MRR but not on HR: not chosen.
    expect(choosePolicy(results)).toBe("source:sknn");
    expect(choosePolicy({ ...results, deepfm: { "HR@20": 0.31, "MRR@20": 0.21 } })).toBe("source:sknn");
    expect(choosePolicy({ ...results, blend: { "HR@20": 0.62, "MRR@20": 0.35 } })).toBe("source:sknn");
    expect(choosePolicy({ ...results, blend: { "HR@20": 0.67, "MRR@20": 0.37 } })).toBe("blend");
    expect(choosePolicy({ ...results, "source:rules": { "HR@20": 0.6, "MRR@20": 0.4 } })).toBe("source:rules");
    expect(() => choosePolicy({})).toThrow(ConfigError);
  });

  it("ranking policy - without a policy file DeepFM is not served; a file that serves a losing ranker is refused", () => {
    expect(DEFAULT_POLICY).not.toBe("deepfm");
    expect(resolvePolicy({ policy: "auto", policyFile: "", weights: {} }).name).toBe(DEFAULT_POLICY);
    const dir = mkdtempSync(join(tmpdir(), "portrait-policy-"));
    try {
      const bad = join(dir, "bad.json");
      writeFileSync(bad, JSON.stringify({ policy: "deepfm", metric: "MRR@20", validation: "planted", results: { ...results, deepfm: { "HR@20": 0.3, "MRR@20": 0.2 } } }));
      expect(() => readPolicyFile(bad)).toThrow(/deepfm is not the best on its own validation results \(source:sknn is\)/);
      const good = join(dir, "good.json");
      writeFileSync(good, JSON.stringify({
        policy: "blend", weights: { sknn: 1, recent: 0.5 }, metric: "MRR@20", validation: "planted",
        results: { ...results, blend: { "HR@20": 0.66, "MRR@20": 0.37 } },
      }));
      const p = resolvePolicy({ policy: "auto", policyFile: good, weights: {} });
      expect(p.name).toBe("blend");
      expect(p.weights).toEqual({ sknn: 1, recent: 0.5 });
      expect(() => compileRecsOptions({ ranking: { policy: "magic" as "prior" } })).toThrow(/options\.ranking\.policy must be/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
