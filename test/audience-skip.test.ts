/**
 * The evaluations that skip audiences never miss an enter or an exit: on
 * random rules (every kind of leaf, nested all/any/not, references) and
 * random event sequences with their own timers, each user is kept twice,
 * one copy evaluated in whole every time and one as the shard evaluates it
 * (only the audiences the event types can change; after a change of the set,
 * a backfill of only the new and changed audiences and their dependents:
 * backfillSelection). Memberships after every step and the transitions
 * (audience, number, direction, time, reason) must be the same. Pure: no
 * broker, no store (but the last test: memberships round-trip through LMDB).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { backfillSelection, compileAudiences, eventBit, FIELDS, parseDefinition, type AudienceDefinition, type CompiledAudiences, type Rule } from "../src/actors/audience-rules.js";
import { DAY_MS, evaluateAudiences, newAudienceState, observeAudienceEvent, type Transition } from "../src/actors/audience-state.js";
import { open, type DatabaseOptions } from "lmdb";
import { MEMBERSHIPS_PART, PROFILE_PART, ProfileStore } from "../src/store/profile-store.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { EventType } from "../src/wire/proto.js";
import { ActorCache } from "../src/shard/actor-cache.js";
import { AudienceRunner, audienceCount, encodeTransition } from "../src/shard/audience-runner.js";

type Rnd = () => number;

function rng(seed: number): Rnd {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
}

const pick = <T>(rnd: Rnd, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;

/** Thresholds that the random events below cross often, per field. */
function threshold(rnd: Rnd, field: string): number {
  if (field.startsWith("revenue.") || field === "net") return pick(rnd, [0, 20, 100, 400]);
  if (field.startsWith("days")) return pick(rnd, [0.01, 0.5, 2, 10]);
  if (field.startsWith("rfm.")) return pick(rnd, [1, 2, 3, 4, 5]);
  if (field.startsWith("prediction.") || field.startsWith("risk.") || field.startsWith("review.")) return pick(rnd, [0, 0.5]);
  return pick(rnd, [0, 1, 2, 3, 5, 10]);
}

function randomLeaf(rnd: Rnd, refs: readonly string[]): Rule {
  const k = rnd();
  if (k < 0.45) {
    const field = pick(rnd, FIELDS);
    return { field, op: pick(rnd, [">", ">=", "<", "<=", "==", "!="] as const), value: threshold(rnd, field) };
  }
  if (k < 0.6) {
    return { affinity: { dimension: pick(rnd, ["category", "priceBand"] as const), key: pick(rnd, ["c0", "c1", "c2", "c3", "20-50", "50-100"]), ...(rnd() < 0.6 ? { topN: 1 + Math.floor(rnd() * 2) } : { minScore: pick(rnd, [0.5, 2, 4]) }) } };
  }
  if (k < 0.72) return { session: { category: pick(rnd, ["c0", "c1", "c2", "c3"]), topN: 1 + Math.floor(rnd() * 2) } };
  if (k < 0.82) return { cartAbandoned: { afterMinutes: pick(rnd, [5, 60, 600]) } };
  if (refs.length > 0) return { inAudience: pick(rnd, refs) };
  return { field: "orders", op: ">=", value: 1 };
}

function randomRule(rnd: Rnd, refs: readonly string[], depth = 0): Rule {
  const k = rnd();
  if (depth >= 2 || k < 0.5) return randomLeaf(rnd, refs);
  if (k < 0.7) return { all: [randomRule(rnd, refs, depth + 1), randomRule(rnd, refs, depth + 1)] };
  if (k < 0.9) return { any: [randomRule(rnd, refs, depth + 1), randomRule(rnd, refs, depth + 1)] };
  return { not: randomRule(rnd, refs, depth + 1) };
}

/** `n` random definitions; each may reference the ones before it (no cycles). */
function randomDefs(rnd: Rnd, n: number, prefix: string, refs: string[] = []): AudienceDefinition[] {
  const out: AudienceDefinition[] = [];
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${i}`;
    out.push(parseDefinition({ id, rule: randomRule(rnd, refs) }));
    refs.push(id);
  }
  return out;
}

const TYPES = [EventType.VIEW, EventType.VIEW, EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.REFUND, EventType.CLICK];

function randomEvent(rnd: Rnd, t: number, k: number): ProfileEvent {
  const type = pick(rnd, TYPES);
  return {
    type, timestampMs: t, itemId: `i${Math.floor(rnd() * 30)}`, categoryId: `c${Math.floor(rnd() * 4)}`, brand: "", price: 5 + Math.floor(rnd() * 80),
    quantity: 1, currency: "", sessionId: "", orderId: type === EventType.PURCHASE ? `o${k}` : "",
  };
}

function nextTime(rnd: Rnd, t: number): number {
  const gap = rnd();
  return t + (gap < 0.5 ? Math.floor(rnd() * 20 * 60_000) : gap < 0.85 ? Math.floor(rnd() * 6 * 3_600_000) : Math.floor(rnd() * 12 * DAY_MS));
}

const env = { profile: PROFILE_DEFAULTS };
const members = (u: UserState) => Object.entries(u.aud!.m).filter(([, m]) => m[0] > 0).map(([a, m]) => `${a}@${m[0]}`).sort();
const view = (ts: Transition[]) => ts.map((x) => `${x.audience}:${x.n}:${x.entered ? "in" : "out"}@${x.atMs}:${x.reason}`);

/** The set without its guards (CompiledAudiences.guards): every rule runs, as for the `whole` copy of a Pair. */
const unguardedSets = new WeakMap<CompiledAudiences, CompiledAudiences>();
function unguarded(set: CompiledAudiences): CompiledAudiences {
  let u = unguardedSets.get(set);
  if (u === undefined) unguardedSets.set(set, (u = { ...set, guards: set.guards.map(() => undefined) }));
  return u;
}

/** A user kept twice: `whole` evaluated in whole every time with every rule run (no guards), `skip` as the shard evaluates it. */
class Pair {
  readonly whole = newUserState();
  readonly skip = newUserState();
  readonly outWhole: Transition[] = [];
  readonly outSkip: Transition[] = [];
  constructor(readonly id: string) {}

  /** Time-driven evaluations up to `t`, at each due (as the shard's timers fire them). */
  timers(set: CompiledAudiences, t: number): void {
    for (const [u, out, s] of [[this.whole, this.outWhole, unguarded(set)], [this.skip, this.outSkip, set]] as const) {
      while (u.aud !== undefined && u.aud.due > 0 && u.aud.due <= t) out.push(...evaluateAudiences(this.id, u, s, u.aud.due, env, "time", 0));
    }
  }

  event(set: CompiledAudiences, e: ProfileEvent): void {
    this.timers(set, e.timestampMs);
    for (const [u, out, events, s] of [[this.whole, this.outWhole, undefined, unguarded(set)], [this.skip, this.outSkip, eventBit(e.type), set]] as const) {
      applyEvent(u, e, PROFILE_DEFAULTS);
      observeAudienceEvent(u, e, 0);
      out.push(...evaluateAudiences(this.id, u, s, e.timestampMs, env, "event", 0, events));
    }
  }

  backfill(set: CompiledAudiences, t: number, only: Uint8Array): void {
    this.outWhole.push(...evaluateAudiences(this.id, this.whole, unguarded(set), t, env, "backfill", 0));
    this.outSkip.push(...evaluateAudiences(this.id, this.skip, set, t, env, "backfill", 0, undefined, only));
  }

  same(): void {
    expect(members(this.skip)).toEqual(members(this.whole));
    expect(view(this.outSkip)).toEqual(view(this.outWhole));
  }
}

describe("audience evaluation - skipped audiences never miss a transition", () => {
  it("random rules x random events: evaluating by event type and guard gives the transitions of evaluating all", () => {
    let transitions = 0;
    let guarded = 0;
    for (let trial = 0; trial < 12; trial++) {
      const rnd = rng(1000 + trial);
      const set = compileAudiences(randomDefs(rnd, 25, "a"));
      guarded += set.guards.filter((g) => g !== undefined).length;
      for (let user = 0; user < 25; user++) {
        const pair = new Pair(`u${user}`);
        let t = Date.UTC(2026, 0, 1) + Math.floor(rnd() * DAY_MS);
        for (let k = 0; k < 50; k++) {
          t = nextTime(rnd, t);
          pair.event(set, randomEvent(rnd, t, k));
          expect(members(pair.skip)).toEqual(members(pair.whole));
        }
        pair.timers(set, t + 120 * DAY_MS);
        pair.same();
        transitions += pair.outWhole.length;
      }
    }
    // The rules flip: the comparison is not between two empty lists.
    expect(transitions).toBeGreaterThan(5000);
    // Guarded audiences are common enough to be tested.
    expect(guarded).toBeGreaterThan(40);
  });

  it("guards: a shop's set (category lovers, interests, browsing now, brands, references to them) over many categories gives the transitions of evaluating all", () => {
    const categories = Array.from({ length: 12 }, (_, c) => `c${c}`);
    const defs: AudienceDefinition[] = [
      { id: "buyers", rule: { field: "purchases.30d", op: ">=", value: 1 } },
      ...categories.flatMap((c): AudienceDefinition[] => [
        { id: `lovers-${c}`, rule: { all: [{ affinity: { dimension: "category", key: c, topN: 1 } }, { field: "events.30d", op: ">=", value: 1 }] } },
        { id: `interest-${c}`, rule: { affinity: { dimension: "category", key: c, minScore: 2 } } },
        { id: `browsing-${c}`, rule: { session: { category: c, topN: 1 } } },
        { id: `buyer-lovers-${c}`, rule: { all: [{ inAudience: "buyers" }, { inAudience: `lovers-${c}` }] } },
        { id: `band-${c}`, rule: { all: [{ affinity: { dimension: "priceBand", key: "20-50", topN: 2, minScore: 1 } }, { field: "daysSinceSeen", op: "<", value: 2 }] } },
      ]),
      // Brand keys are kept in lower case (the rule's key too).
      ...["Acme", "nova", "ZETA"].map((b): AudienceDefinition => ({ id: `brand-${b.toLowerCase()}`, rule: { all: [{ affinity: { dimension: "brand", key: b, topN: 1, minScore: 1.5 } }, { not: { field: "orders", op: ">=", value: 2 } }] } })),
    ].map((d) => parseDefinition(d));
    const set = compileAudiences(defs);
    expect(set.guards.filter((g) => g !== undefined).length).toBe(defs.length - 1);
    let transitions = 0;
    for (let user = 0; user < 60; user++) {
      const rnd = rng(3000 + user);
      const pair = new Pair(`u${user}`);
      let t = Date.UTC(2026, 0, 1) + Math.floor(rnd() * DAY_MS);
      const favourite = pick(rnd, categories);
      for (let k = 0; k < 60; k++) {
        t = nextTime(rnd, t);
        const e = randomEvent(rnd, t, k);
        e.categoryId = rnd() < 0.5 ? favourite : pick(rnd, categories);
        e.brand = pick(rnd, ["ACME", "Nova", "zeta", ""]);
        pair.event(set, e);
        expect(members(pair.skip)).toEqual(members(pair.whole));
      }
      pair.timers(set, t + 120 * DAY_MS);
      pair.same();
      transitions += pair.outWhole.length;
    }
    expect(transitions).toBeGreaterThan(2000);
  });

  it("random set changes: a backfill of only the new and changed audiences and their dependents gives the transitions of a whole one", () => {
    let transitions = 0;
    let selectedShare = 0;
    for (let trial = 0; trial < 12; trial++) {
      const rnd = rng(2000 + trial);
      const refs: string[] = [];
      const before = randomDefs(rnd, 20, "a", refs);
      // The change: two audiences deleted (not referenced: the set must stay valid), two changed, three added (which may
      // reference any), as `audience create|delete` do one at a time.
      const referenced = new Set(before.flatMap((d) => JSON.stringify(d.rule).match(/"inAudience":"[^"]+"/g) ?? []).map((x) => x.slice(14, -1)));
      const deletable = before.filter((d) => !referenced.has(d.id)).map((d) => d.id);
      const deleted = new Set(deletable.slice(0, 2));
      const kept = refs.filter((id) => !deleted.has(id));
      const changedIds = new Set([kept[3]!, kept[7]!]);
      const after = [
        ...before.filter((d) => !deleted.has(d.id)).map((d) => (changedIds.has(d.id) ? parseDefinition({ id: d.id, rule: randomLeaf(rnd, []) }) : d)),
        ...randomDefs(rnd, 3, "n", [...kept]),
      ];
      const setBefore = compileAudiences(before);
      const setAfter = compileAudiences(after);
      const only = backfillSelection(setBefore, setAfter);
      selectedShare += only.reduce((n, x) => n + x, 0) / only.length;
      for (let user = 0; user < 25; user++) {
        const pair = new Pair(`u${user}`);
        let t = Date.UTC(2026, 0, 1) + Math.floor(rnd() * DAY_MS);
        for (let k = 0; k < 30; k++) {
          t = nextTime(rnd, t);
          pair.event(setBefore, randomEvent(rnd, t, k));
        }
        // The backfill reaches the user some time after its last event (timers due before then fire first, as they do).
        const at = nextTime(rnd, t);
        pair.timers(setBefore, at);
        pair.backfill(setAfter, at, only);
        pair.same();
        for (let k = 30; k < 50; k++) {
          t = nextTime(rnd, Math.max(t, at));
          pair.event(setAfter, randomEvent(rnd, t, k));
        }
        pair.timers(setAfter, t + 120 * DAY_MS);
        pair.same();
        transitions += pair.outWhole.length;
      }
    }
    expect(transitions).toBeGreaterThan(3000);
    // The selection skips audiences (else this test would not test the skip).
    expect(selectedShare / 12).toBeLessThan(0.8);
  });

  it("affinity ranks: top n as defined (score, then key; ties included)", () => {
    const rnd = rng(77);
    const keys = ["c0", "c1", "c2", "c3", "c4", "c5"];
    const defs = keys.flatMap((key) => [1, 2, 3].map((topN) => ({ id: `${key}-top${topN}`, rule: { affinity: { dimension: "category", key, topN } } }) as AudienceDefinition));
    const set = compileAudiences(defs);
    for (let trial = 0; trial < 300; trial++) {
      const u = newUserState();
      const present = keys.filter(() => rnd() < 0.7);
      u.cat = { keys: present, scores: present.map(() => pick(rnd, [1, 2, 2, 3, 5])) };
      u.lastSeenMs = u.affRefMs = Date.UTC(2026, 0, 1);
      evaluateAudiences("u", u, set, u.lastSeenMs, env, "event", 0);
      const expected = defs.filter((d) => {
        const { key, topN } = (d.rule as { affinity: { key: string; topN: number } }).affinity;
        const i = present.indexOf(key);
        if (i < 0) return false;
        const raw = u.cat.scores[i]!;
        return present.filter((k, j) => u.cat.scores[j]! > raw || (u.cat.scores[j] === raw && k < key)).length < topN;
      }).map((d) => d.id).sort();
      expect(Object.entries(u.aud!.m).filter(([, m]) => m[0] > 0).map(([id]) => id).sort()).toEqual(expected);
    }
  });

  it("no audience defined: a partial evaluation keeps the due, a whole one clears it; a member of a deleted audience still exits", () => {
    const empty = compileAudiences([]);
    const t0 = Date.UTC(2026, 0, 1);
    const u = newUserState();
    u.lastSeenMs = t0;
    u.aud = { ...newAudienceState(0), w: 1, due: t0 + DAY_MS };
    // By event type, before the due: nothing can change, the due stays (as the evaluation of a set would keep it).
    expect(evaluateAudiences("u", u, empty, t0, env, "event", 0, eventBit(EventType.VIEW))).toEqual([]);
    expect([u.aud.due, u.aud.w]).toEqual([t0 + DAY_MS, 1]);
    // Whole (a timer, a merge): no rule, no time boundary.
    expect(evaluateAudiences("u", u, empty, t0, env, "time", 0)).toEqual([]);
    expect(u.aud.due).toBe(0);
    // A member of an audience no longer defined exits in a whole evaluation, not in one by event type.
    const v = newUserState();
    v.lastSeenMs = t0;
    v.aud = { ...newAudienceState(0), w: 1 };
    v.aud.m["gone"] = [t0 - DAY_MS, 1, 0];
    expect(evaluateAudiences("v", v, empty, t0, env, "event", 0, eventBit(EventType.VIEW))).toEqual([]);
    const out = evaluateAudiences("v", v, empty, t0, env, "time", 0);
    expect(out.map((x) => [x.audience, x.entered, x.reason])).toEqual([["gone", false, "deleted"]]);
    expect(v.aud.m["gone"]![0]).toBe(0);
  });

  it("backfill selection: new, changed, dependent and predictive audiences; not the others", () => {
    const a: AudienceDefinition[] = [
      { id: "buyers", rule: { field: "orders", op: ">=", value: 1 } },
      { id: "active", rule: { field: "events.7d", op: ">=", value: 1 } },
      { id: "active-buyers", rule: { all: [{ inAudience: "buyers" }, { inAudience: "active" }] } },
      { id: "churny", rule: { field: "prediction.churnRisk", op: ">=", value: 0.5 } },
      { id: "lovers", rule: { affinity: { dimension: "category", key: "c1", topN: 1 } } },
    ];
    const b = [...a.map((d) => (d.id === "active" ? { ...d, rule: { field: "events.7d", op: ">=", value: 2 } as Rule } : d)), { id: "new", rule: { inAudience: "lovers" } } as AudienceDefinition];
    const sb = compileAudiences(b);
    const only = backfillSelection(compileAudiences(a), sb);
    const selected = sb.defs.filter((_, i) => only[i] === 1).map((d) => d.id).sort();
    expect(selected).toEqual(["active", "active-buyers", "churny", "new"]);
  });

  it("store - memberships come back from LMDB as a dictionary (maps, not records): any id, 'constructor' included", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-store-"));
    try {
      let store = new ProfileStore({ dataDir: dir });
      for (let i = 0; i < 100; i++) {
        const u = newUserState();
        u.aud = newAudienceState(0);
        // A different key set per user (each would be a new msgpack record structure).
        for (let j = 0; j < i % 40; j++) u.aud.m[`a${(i * 7 + j) % 90}`] = [i, j + 1, j % 2];
        await store.commitBatch(0, i + 1, [[`u${i}`, u]]);
      }
      await store.close();
      store = new ProfileStore({ dataDir: dir });
      for (let i = 0; i < 100; i++) {
        const m = store.getState(`u${i}`)!.aud!.m;
        expect(Object.getPrototypeOf(m)).toBeNull();
        expect(Object.keys(m).length).toBe(i % 40);
        for (let j = 0; j < i % 40; j++) expect(m[`a${(i * 7 + j) % 90}`]).toEqual([i, j + 1, j % 2]);
        // An audience named "constructor" that the user never entered has no entry (not Object's constructor).
        expect(m["constructor"]).toBeUndefined();
      }
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("store - memberships records name audiences by number (one dictionary for every store on the data dir); records with id strings (the layout before) load and are found by members", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-numbers-"));
    const raw = () => {
      const env = open({ path: join(dir, "lmdb"), compression: false });
      return { env, memberships: env.openDB({ name: "memberships", encoding: "msgpack" }) };
    };
    try {
      // Written as ProfileStore wrote memberships records before: audience ids as strings.
      {
        const { env, memberships } = raw();
        const profiles = env.openDB({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures"), useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true } as DatabaseOptions & { name: string });
        const u = newUserState();
        const { m: _m, due: _due, ...aud } = newAudienceState(0);
        u.aud = aud as typeof u.aud;
        await profiles.put("old", u);
        await memberships.put("old", [12345, 1, 0, 0, "buyers", 777, 1, 1, "constructor", 0, 2, 0]);
        await env.close();
      }
      const store = new ProfileStore({ dataDir: dir });
      // Another store on the same data dir (a shard thread, the main thread) that loaded the dictionary before the numbers were given.
      const other = new ProfileStore({ dataDir: dir });
      const old = store.getState("old")!;
      expect({ ...old.aud!.m }).toEqual({ buyers: [777, 1, 1], constructor: [0, 2, 0] });
      expect([old.aud!.due, old.aud!.w]).toEqual([12345, 1]);
      store.registerAudiences(["buyers", "constructor"]);
      store.registerAudiences(["buyers", "vip"]);
      const u = newUserState();
      u.aud = newAudienceState(0);
      u.aud.m["buyers"] = [888, 1, 0];
      u.aud.m["vip"] = [0, 2, 1];
      u.aud.m["unnumbered"] = [5, 1, 0];
      await store.commitBatch(0, 1, [["new", u]]);
      expect({ ...other.getState("new")!.aud!.m }).toEqual({ buyers: [888, 1, 0], vip: [0, 2, 1], unnumbered: [5, 1, 0] });
      for (const s of [store, other]) {
        expect([...s.members("buyers")]).toEqual([["new", 888, 0], ["old", 777, 1]]);
        expect([...s.members("unnumbered")]).toEqual([["new", 5, 0]]);
        expect([...s.members("vip")]).toEqual([]);
      }
      // The old record is rewritten with numbers when its memberships change.
      old.aud!.m["buyers"] = [0, 2, 1];
      await store.commitBatch(0, 2, [["old", old, MEMBERSHIPS_PART]]);
      await store.close();
      await other.close();
      const { env, memberships } = raw();
      expect(memberships.get("new")).toEqual([0, 0, 0, 0, 1, 888, 1, 0, 3, 0, 2, 1, "unnumbered", 5, 1, 0]);
      expect(memberships.get("old")).toEqual([12345, 1, 0, 0, 1, 0, 2, 1, 2, 0, 2, 0]);
      await env.close();
      const again = new ProfileStore({ dataDir: dir });
      expect({ ...again.getState("old")!.aud!.m }).toEqual({ buyers: [0, 2, 1], constructor: [0, 2, 0] });
      expect({ ...again.getState("new")!.aud!.m }).toEqual({ buyers: [888, 1, 0], vip: [0, 2, 1], unnumbered: [5, 1, 0] });
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("store - a profile stored with its memberships inside (the layout before the memberships db) reads the same, and keeps them when only its profile is written", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-legacy-"));
    try {
      // Written as ProfileStore wrote profiles before: the whole state, memberships and due included, in the profiles db.
      const env = open({ path: join(dir, "lmdb"), compression: false });
      const profiles = env.openDB({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures"), useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true } as DatabaseOptions & { name: string });
      const u = newUserState();
      u.aud = { ...newAudienceState(0), due: 12345, w: 1, tm: 12000 };
      u.aud.m["constructor"] = [0, 2, 0];
      u.aud.m["buyers"] = [777, 1, 1];
      await profiles.put("old", u);
      await env.close();

      let store = new ProfileStore({ dataDir: dir });
      const read = store.getState("old")!;
      expect(Object.getPrototypeOf(read.aud!.m)).toBeNull();
      expect({ ...read.aud!.m }).toEqual({ constructor: [0, 2, 0], buyers: [777, 1, 1] });
      expect(read.aud!.due).toBe(12345);
      // Only the profile part is written: the memberships go to their own record with it.
      read.n = 5;
      await store.commitBatch(0, 1, [["old", read, PROFILE_PART]]);
      await store.close();
      store = new ProfileStore({ dataDir: dir });
      const again = store.getState("old")!;
      expect(again.n).toBe(5);
      expect({ ...again.aud!.m }).toEqual({ constructor: [0, 2, 0], buyers: [777, 1, 1] });
      expect([again.aud!.due, again.aud!.w]).toEqual([12345, 1]);
      // Then a memberships-only write changes the memberships, not the profile.
      again.aud!.m["buyers"] = [0, 2, 1];
      again.n = 99;
      await store.commitBatch(0, 2, [["old", again, MEMBERSHIPS_PART]]);
      await store.close();
      store = new ProfileStore({ dataDir: dir });
      const last = store.getState("old")!;
      expect(last.n).toBe(5);
      expect(last.aud!.m["buyers"]).toEqual([0, 2, 1]);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("store - a partition replaced from its changelog (cluster takeover): the restored memberships win over records left from before, and a user gone from it is no member", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-replace-"));
    try {
      let store = new ProfileStore({ dataDir: dir });
      store.registerAudiences(["buyers"]);
      const member = (since: number) => {
        const u = newUserState();
        u.aud = newAudienceState(3);
        u.aud.m["buyers"] = [since, 1, 0];
        return u;
      };
      // This node owned partition 3 before: "a" and "b" were members, "z" is another partition's.
      await store.commitBatch(3, 10, [["a", member(100)], ["b", member(200)]]);
      await store.commitBatch(4, 10, [["z", member(300)]]);
      // Meanwhile another node owned it: "a" left the audience, "b" was forgotten, "c" entered; the changelog holds that.
      const a = newUserState();
      a.n = 7;
      a.aud = newAudienceState(3);
      a.aud.m["buyers"] = [0, 2, 0];
      await store.replacePartition(3, (k) => k !== "z", [["a", a], ["c", member(500)]], 20);
      const check = (s: ProfileStore) => {
        expect(s.getState("a")!.n).toBe(7);
        expect({ ...s.getState("a")!.aud!.m }).toEqual({ buyers: [0, 2, 0] });
        expect(s.getState("b")).toBeUndefined();
        expect({ ...s.getState("c")!.aud!.m }).toEqual({ buyers: [500, 1, 0] });
        expect([...s.members("buyers")]).toEqual([["c", 500, 0], ["z", 300, 0]]);
      };
      check(store);
      expect(store.getAppliedSeq(3)).toBe(20);
      // The restored states' later writes of one part keep the other.
      const c = store.getState("c")!;
      c.n = 9;
      await store.commitBatch(3, 21, [["c", c, PROFILE_PART]]);
      await store.close();
      store = new ProfileStore({ dataDir: dir });
      check(store);
      expect(store.getState("c")!.n).toBe(9);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("store - a partition restored from its changelog gets the restored users' counts and timers, not those left from before (here and after a restart)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-adopt-"));
    try {
      const store = new ProfileStore({ dataDir: dir });
      // Left from this node's earlier ownership: a timer of a user gone since, and a count of 9 members.
      store.audienceWriteSync({ puts: [[["t", 0, 111, "gone"], 1], [["c", 0], ["buyers", 9]]], removes: [] });
      const runnerOf = () => new AudienceRunner({ shard: 0, partitions: [0], partitionCount: 1, store, actors: new ActorCache(store, 100), profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: false, backfillChunk: 100 });
      const runner = runnerOf();
      expect(audienceCount(store, "buyers")).toBe(9);
      const restored = (since: number, due: number) => {
        const u = newUserState();
        u.aud = newAudienceState(0);
        u.aud.m["buyers"] = [since, since > 0 ? 1 : 2, 0];
        u.aud.due = due;
        return u;
      };
      const states: [string, UserState][] = [["a", restored(100, 5000)], ["b", restored(0, 0)], ["c", restored(200, 7000)]];
      await store.replacePartition(0, () => true, states, 5, runner.adopt(0, states));
      expect(audienceCount(store, "buyers")).toBe(2);
      expect(runner.dueTimers(0, 6000)).toEqual([[5000, "a"]]);
      // After a restart: the stored index and counts are the restored ones.
      const again = runnerOf();
      expect(again.dueTimers(0, 10_000)).toEqual([[5000, "a"], [7000, "c"]]);
      expect(audienceCount(store, "buyers")).toBe(2);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("store - a data dir of the layout before (member index, a counter per audience and partition): at start each shard gives its indexed users their memberships records and folds its counters", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-index-"));
    try {
      // As written before: profiles with their memberships inside, and the member index ["m", audience, user] -> [since, holdout].
      const env = open({ path: join(dir, "lmdb"), compression: false });
      const profiles = env.openDB({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures"), useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true } as DatabaseOptions & { name: string });
      const aud = env.openDB({ name: "audiences", encoding: "msgpack" });
      const member = (id: string, m: Record<string, [number, number, number]>) => {
        const u = newUserState();
        u.aud = { ...newAudienceState(0), due: 0, w: 1 };
        Object.assign(u.aud.m, m);
        return profiles.put(id, u);
      };
      await member("u1", { buyers: [777, 1, 1], lapsed: [0, 2, 0] });
      await member("u2", { buyers: [0, 2, 0] });
      await member("u3", { buyers: [555, 3, 0] });
      await aud.put(["m", "buyers", "u1"], [777, 1]);
      await aud.put(["m", "buyers", "u3"], [555, 0]);
      await aud.put(["c", "buyers", 0], 2);
      await aud.put(["c", "lapsed", 0], 1);
      await aud.put(["c", "lapsed", 1], 4);
      await env.close();

      const store = new ProfileStore({ dataDir: dir });
      // u3 belongs to another shard: its entry stays for that shard.
      expect(store.dropMemberIndex((user) => user !== "u3")).toBe(1);
      expect(store.audienceRange(["m"], ["m", "\u{10FFFF}"]).map((x) => x.key)).toEqual([["m", "buyers", "u3"]]);
      expect([...store.members("buyers")]).toEqual([["u1", 777, 1]]);
      expect(store.dropMemberIndex(() => true)).toBe(1);
      expect(store.audienceRange(["m"], ["m", "\u{10FFFF}"])).toEqual([]);
      expect([...store.members("buyers")]).toEqual([["u1", 777, 1], ["u3", 555, 0]]);
      expect([...store.members("buyers", "u1")]).toEqual([["u3", 555, 0]]);
      expect([...store.members("lapsed")]).toEqual([]);
      // The records hold what the profiles held (u2, never indexed, keeps its memberships inside until its next write).
      expect({ ...store.getState("u1")!.aud!.m }).toEqual({ buyers: [777, 1, 1], lapsed: [0, 2, 0] });
      expect({ ...store.getState("u2")!.aud!.m }).toEqual({ buyers: [0, 2, 0] });
      // Counters of the layout before (one entry per audience and partition) are folded into the owned partitions' records at start.
      expect(audienceCount(store, "lapsed")).toBe(0);
      new AudienceRunner({ shard: 0, partitions: [0], partitionCount: 2, store, actors: new ActorCache(store, 100), profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: false, backfillChunk: 100 });
      expect(store.audienceGet(["c", 0])).toEqual(["buyers", 2, "lapsed", 1]);
      expect(store.audienceRange(["c", ""], ["c", "\u{10FFFF}"]).map((x) => x.key)).toEqual([["c", "lapsed", 1]]);
      expect([audienceCount(store, "buyers"), audienceCount(store, "lapsed")]).toEqual([2, 1]);
      new AudienceRunner({ shard: 1, partitions: [1], partitionCount: 2, store, actors: new ActorCache(store, 100), profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: false, backfillChunk: 100 });
      expect(store.audienceRange(["c", ""], ["c", "\u{10FFFF}"])).toEqual([]);
      expect([audienceCount(store, "buyers"), audienceCount(store, "lapsed")]).toEqual([2, 5]);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("store - outbox entries of both layouts (the messages' bytes; rows before) are republished at start with their subjects, ids and bytes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-outbox-"));
    try {
      const store = new ProfileStore({ dataDir: dir });
      const a: Transition = { audience: "lapsed-30", user: "ü-1", n: 3, entered: true, atMs: Date.UTC(2026, 0, 2), reason: "time", holdout: true };
      const b: Transition = { audience: "buyers", user: "u2", n: 2, entered: false, atMs: Date.UTC(2026, 0, 3), reason: "event", holdout: false };
      await store.commitBatch(0, 1, [], {
        puts: [
          [["o", 0, 7], [[b.audience, b.user, b.n, 0, b.atMs, b.reason, 0]]],
          [["o", 0, 8], [encodeTransition(a), encodeTransition(b)]],
        ],
        removes: [],
      });
      const runner = new AudienceRunner({ shard: 0, partitions: [0], partitionCount: 1, store, actors: new ActorCache(store, 100), profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: false, backfillChunk: 100 });
      const got = runner.pendingOutbox().map(({ partition, message: m }) => [partition, m.subject, m.msgId, Buffer.from(m.data).toString("hex"), m.outbox]);
      const hex = (t: Transition) => Buffer.from(encodeTransition(t)).toString("hex");
      expect(got).toEqual([
        [0, "t.audience.events.buyers", "buyers:u2:2", hex(b), 7],
        [0, "t.audience.events.lapsed-30", "lapsed-30:ü-1:3", hex(a), 8],
        [0, "t.audience.events.buyers", "buyers:u2:2", hex(b), 8],
      ]);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("backfill - the scan waits for the batches applied before the set to commit (it lists committed profiles only): a user still committing is not passed over", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-wait-"));
    try {
      const store = new ProfileStore({ dataDir: dir });
      await store.commitBatch(0, 1, [["u1", newUserState()]]);
      const runner = new AudienceRunner({ shard: 0, partitions: [0], partitionCount: 1, store, actors: new ActorCache(store, 100), profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: false, backfillChunk: 100 });
      let committed!: () => void;
      const applied = new Promise<void>((r) => (committed = r));
      runner.set([parseDefinition({ id: "everyone", rule: { field: "orders", op: ">=", value: 0 } })], applied);
      // A batch applied before the set commits a new user while the backfill waits: no keys yet, the backfill still runs.
      expect(runner.backfillKeys()).toEqual([]);
      expect(runner.progress().running).toBe(true);
      await store.commitBatch(0, 2, [["u2", newUserState()]]);
      expect(runner.backfillKeys()).toEqual([]);
      committed();
      await applied;
      expect(runner.backfillKeys()).toEqual([["u1", 0], ["u2", 0]]);
      expect(runner.backfillKeys()).toEqual([]);
      expect(runner.progress().running).toBe(false);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("backfill - with pseudonymised ids each stored user is read once: the owner's users come with their borrowed actor, another shard's are given back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portrait-aud-pseudo-"));
    try {
      const store = new ProfileStore({ dataDir: dir });
      const stored = (p: number) => {
        const u = newUserState();
        u.aud = newAudienceState(p);
        return u;
      };
      // Keys are pseudonyms: the partition is the state's, not the key's.
      await store.commitBatch(0, 1, [["k1", stored(1)], ["k2", stored(0)], ["k3", stored(1)]]);
      const actors = new ActorCache(store, 100);
      const runner = new AudienceRunner({ shard: 1, partitions: [1], partitionCount: 2, store, actors, profile: PROFILE_DEFAULTS, subjectPrefix: "t", pseudonymised: true, backfillChunk: 100 });
      runner.set([parseDefinition({ id: "everyone", rule: { field: "orders", op: ">=", value: 0 } })]);
      await Promise.resolve();
      const keys = runner.backfillKeys()!;
      expect(keys.map(([k, p]) => [k, p])).toEqual([["k1", 1], ["k3", 1]]);
      // Lent for the evaluation (the same actor a borrow gives), not cached; k2 was given back.
      expect(actors.lent).toBe(2);
      expect(actors.size).toBe(0);
      for (const [k, , a] of keys) expect(actors.borrow(k)).toBe(a);
      actors.giveBack(keys.map(([k, , a]) => [k, a!] as const));
      expect(actors.lent).toBe(0);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
