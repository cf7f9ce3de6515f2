/**
 * `npm run bench:audience-eval`: the shard-side cost of audiences per event,
 * without the broker, the main thread or other threads: the synthetic events
 * of bench/audiences.ts are applied as a shard applies them (batches per
 * partition; applyEvent, the audience observation, the evaluation of the
 * batch's users and of due timers by AudienceRunner, and the LMDB commit of
 * states and side writes by ProfileStore.commitBatch), once with no audience
 * and once with the 100 of a set, alternating, each on a fresh LMDB.
 *
 * Then a backfill of a new audience over --backfill-users stored profiles
 * (0 = none), selective and whole, alternating (backfillRuns).
 *
 *   node dist-bench/bench/audience-eval.js [--set shop|churny] [--events N] [--users N] [--rounds N] [--backfill-users N] [--timer-compaction default|eager] [--focus F] [--pseudonymised] [--no-record] [--only-with]
 *
 * Prints, per condition, µs per event of the thread (apply, evaluate, the
 * commit call: packing and queueing the writes, and the wait for the commit)
 * and of the process CPU, the LMDB writes (puts and removes) per event, the transitions per event and the mean
 * stored state size. The process is single-threaded here apart from lmdb-js's
 * write thread, so CPU per event is the cost a shard pays.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pack } from "msgpackr";
import type { Actor } from "../src/actors/actor.js";
import { compileAudiences, eventBit, type AudienceDefinition, type CompiledAudiences } from "../src/actors/audience-rules.js";
import { evaluateAudiences, observeAudienceEvent, type TransitionReason } from "../src/actors/audience-state.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import type { OutboundMessage } from "../src/bus/event-batch.js";
import { ActorCache } from "../src/shard/actor-cache.js";
import { AudienceRunner } from "../src/shard/audience-runner.js";
import { MEMBERSHIPS_PART, PROFILE_PART, ProfileStore, type SideWrites } from "../src/store/profile-store.js";
import { partitionOf } from "../src/wire/partition.js";
import { EventType } from "../src/wire/proto.js";
import { churnyAudiences, makeEvents, shopAudiences } from "./audience-sets.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    set: { type: "string", default: "shop" },
    events: { type: "string", default: "60000" },
    users: { type: "string", default: "8000" },
    "span-days": { type: "string" },
    rounds: { type: "string", default: "3" },
    "backfill-users": { type: "string", default: "100000" },
    "timer-compaction": { type: "string", default: "default" },
    "no-record": { type: "boolean", default: false },
    "only-with": { type: "boolean", default: false },
    focus: { type: "string", default: "0" },
    pseudonymised: { type: "boolean", default: false },
  },
});
/** `--only-with`: only the runs with the audiences, nothing printed or recorded (for a CPU profile: node --cpu-prof). */
const ONLY_WITH = a["only-with"];
/** Share of a user's events in its favourite category (bench/audience-sets.ts makeEvents); 0 = uniform. */
const FOCUS = Number(a.focus);
/** `--pseudonymised`: the backfill's runner reads each user's partition from its state, as with pseudonymised ids (the bench's ids are raw). */
const PSEUDONYMISED = a.pseudonymised;
/** `eager`: the timer index's passed entries are moved at every evaluation (the most writes the index can cost), not every 60 s or 4096 entries. */
const EAGER = a["timer-compaction"] === "eager";
const SET = a.set === "churny" ? "churny" : "shop";
const EVENTS = Number(a.events);
const USERS = Number(a.users);
const SPAN_DAYS = Number(a["span-days"] ?? (SET === "shop" ? "1" : "60"));
const ROUNDS = Number(a.rounds);
const BACKFILL_USERS = Number(a["backfill-users"]);
const PARTITIONS = 8;
/** Events per fetch: each fetch is split into one batch per partition, as the engine's consumers deliver them. */
const FETCH = 1024;

interface Run {
  applyUs: number;
  evalUs: number;
  commitUs: number;
  waitUs: number;
  writes: number;
  /** LMDB writes per event by kind: profile, memberships record, and the `audiences` db's keys by their first element (t timers, m members, c counts, o outbox, ...). */
  kinds: Record<string, number>;
  cpuUs: number;
  transitions: number;
  stateBytes: number;
  /** Mean stored bytes per user: its profile value and its memberships record (0 for a user without one). */
  storedProfile: number;
  storedMemberships: number;
}

async function run(defs: AudienceDefinition[]): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), "portrait-bench-audeval-"));
  const store = new ProfileStore({ dataDir: dir });
  const actors = new ActorCache(store, 1_000_000);
  const partitions = Array.from({ length: PARTITIONS }, (_, i) => i);
  const runner = new AudienceRunner({
    shard: 0, partitions, partitionCount: PARTITIONS, store, actors, profile: PROFILE_DEFAULTS, subjectPrefix: "bench", pseudonymised: false, backfillChunk: 5000,
    ...(EAGER ? { timerCompaction: { compactAt: 1, compactEveryMs: 0 } } : {}),
  });
  runner.set(defs);
  const t0 = Date.now() - SPAN_DAYS * 86_400_000 - 60_000;
  const events = makeEvents("m", EVENTS, USERS, t0, SPAN_DAYS * 86_400_000, FOCUS);
  let applyMs = 0;
  let evalMs = 0;
  let commitMs = 0;
  let waitMs = 0;
  let writes = 0;
  const kinds: Record<string, number> = {};
  const tally = (k: string, n: number) => { kinds[k] = (kinds[k] ?? 0) + n; };
  let transitions = 0;
  let batchNo = 0;
  const seqs = new Map<number, number>();
  const cpu0 = process.cpuUsage();
  for (let f = 0; f < events.length; f += FETCH) {
    const byPartition = new Map<number, ProfileEvent[] & { users?: string[] }>();
    const users = new Map<number, string[]>();
    for (const e of events.slice(f, f + FETCH)) {
      const p = partitionOf(e.userId!, PARTITIONS);
      if (!byPartition.has(p)) {
        byPartition.set(p, []);
        users.set(p, []);
      }
      byPartition.get(p)!.push({
        type: e.type!, timestampMs: Number(e.timestampMs), itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", brand: "", price: e.price ?? 0,
        quantity: e.quantity ?? 0, currency: "", sessionId: "", orderId: e.orderId ?? "",
      });
      users.get(p)!.push(e.userId!);
    }
    const commits: Promise<void>[] = [];
    for (const [p, evs] of byPartition) {
      batchNo++;
      const ta = performance.now();
      const ids = users.get(p)!;
      const dirty = new Map<string, Actor>();
      const types = new Map<string, number>();
      let now = 0;
      for (let i = 0; i < evs.length; i++) {
        const e = evs[i]!;
        const actor = actors.actor(ids[i]!);
        applyEvent(actor.state, e, PROFILE_DEFAULTS);
        runner.observe(actor.state, e, p);
        actor.lastBatch = batchNo;
        dirty.set(ids[i]!, actor);
        types.set(ids[i]!, (types.get(ids[i]!) ?? 0) | eventBit(e.type));
        if (e.timestampMs > now) now = e.timestampMs;
      }
      const tb = performance.now();
      const side: SideWrites = { puts: [], removes: [] };
      const out: OutboundMessage[] = [];
      const evaluated: [string, Actor, TransitionReason, number?][] = [...dirty].map(([id, actor]) => [id, actor, "event", types.get(id)]);
      const nEvents = evaluated.length;
      // Due timers, as the batch applier collects them (batch-applier.ts #collectDue).
      for (const [, key] of runner.dueTimers(p, now)) {
        const actor = actors.actor(key);
        if (!dirty.has(key)) {
          dirty.set(key, actor);
          evaluated.push([key, actor, "time"]);
        }
      }
      const changed = runner.evaluate(p, evaluated, now, side, out);
      transitions += out.length;
      // As batch-applier.ts writes them: the profiles of the batch's users, and the memberships that changed.
      const states: [string, UserState, number][] = [];
      evaluated.forEach(([id, x], i) => {
        const parts = (i < nEvents ? PROFILE_PART : 0) | (changed.get(id) ?? 0);
        if (parts !== 0) states.push([id, x.state, parts]);
      });
      const tc = performance.now();
      const seq = (seqs.get(p) ?? 0) + evs.length;
      seqs.set(p, seq);
      writes += states.reduce((n, [, , parts]) => n + (parts === 3 ? 2 : 1), 0) + side.puts.length + side.removes.length;
      for (const [, , parts] of states) {
        if (parts & PROFILE_PART) tally("profile", 1);
        if (parts & MEMBERSHIPS_PART) tally("memberships", 1);
      }
      for (const [k] of side.puts) tally(`${k[0]} put`, 1);
      for (const k of side.removes) tally(`${k[0]} remove`, 1);
      commits.push(store.commitBatch(p, seq, states, side));
      const td = performance.now();
      applyMs += tb - ta;
      evalMs += tc - tb;
      commitMs += td - tc;
    }
    const tw = performance.now();
    await Promise.all(commits);
    waitMs += performance.now() - tw;
    actors.evict(batchNo);
  }
  const cpu = process.cpuUsage(cpu0);
  let bytes = 0;
  let storedProfile = 0;
  let storedMemberships = 0;
  let n = 0;
  for (let i = 0; i < USERS; i += 97) {
    const s = actors.state(`u${i}`);
    if (s !== undefined) {
      bytes += pack(s).length;
      const b = store.storedBytes(`u${i}`);
      storedProfile += b.profile;
      storedMemberships += b.memberships;
      n++;
    }
  }
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  const per = 1000 / EVENTS;
  return { applyUs: applyMs * per, evalUs: evalMs * per, commitUs: commitMs * per, waitUs: waitMs * per, writes: writes / EVENTS, kinds: Object.fromEntries(Object.entries(kinds).map(([k, n]) => [k, n / EVENTS])), cpuUs: (cpu.user + cpu.system) / EVENTS, transitions: transitions / EVENTS, stateBytes: bytes / n, storedProfile: storedProfile / n, storedMemberships: storedMemberships / n };
}

/**
 * A backfill as a shard's ticks run it (batch-applier.ts tick), without the
 * tick's pacing: chunks of stored ids, their states borrowed (not cached), the
 * evaluation per partition and the commit of what changed. Returns profiles per second.
 */
async function backfill(runner: AudienceRunner, actors: ActorCache, store: ProfileStore, now: number): Promise<{ rate: number; transitions: number }> {
  const t0 = performance.now();
  let profiles = 0;
  let transitions = 0;
  let batchNo = 1_000_000;
  for (;;) {
    const keys = runner.backfillKeys();
    if (keys === undefined) break;
    batchNo++;
    const work = new Map<number, [string, Actor, TransitionReason][]>();
    const lent: [string, Actor][] = [];
    for (const [user, p, borrowed] of keys) {
      // Borrowed, as the tick does: not cached, given back once committed.
      const actor = borrowed ?? actors.borrow(user);
      if (actor === undefined) continue;
      lent.push([user, actor]);
      actor.lastBatch = batchNo;
      let w = work.get(p);
      if (w === undefined) work.set(p, (w = []));
      w.push([user, actor, "backfill"]);
      profiles++;
    }
    const commits: Promise<void>[] = [];
    for (const [p, users] of work) {
      const side: SideWrites = { puts: [], removes: [] };
      const out: OutboundMessage[] = [];
      const changed = runner.evaluate(p, users, now, side, out);
      transitions += out.length;
      commits.push(store.commitBatch(p, 0, users.filter(([id]) => changed.has(id)).map(([id, x]) => [id, x.state, changed.get(id)!] as const), side));
    }
    await Promise.all(commits);
    actors.giveBack(lent);
    actors.evict(batchNo);
  }
  return { rate: profiles / ((performance.now() - t0) / 1000), transitions };
}

/**
 * Backfill of a new audience that every stored profile enters, over
 * BACKFILL_USERS profiles that were evaluated against the 100 audiences of
 * the set: selective (the runner knows the set before: only the new audience
 * is evaluated) and whole (a runner started with the new set: every audience
 * is evaluated, as a backfill after a restart is), alternating.
 */
async function backfillRuns(defs: AudienceDefinition[], rows: string[][]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "portrait-bench-audbf-"));
  const store = new ProfileStore({ dataDir: dir });
  const partitions = Array.from({ length: PARTITIONS }, (_, i) => i);
  const runnerOf = (actors: ActorCache) => new AudienceRunner({
    shard: 0, partitions, partitionCount: PARTITIONS, store, actors, profile: PROFILE_DEFAULTS, subjectPrefix: "bench", pseudonymised: PSEUDONYMISED, backfillChunk: 5000,
  });
  // The stored profiles: 3 events each within the last day, evaluated against the set (their memberships and timers stored).
  const fill = new ActorCache(store, 10_000);
  const runner = runnerOf(fill);
  runner.set(defs);
  const now = Date.now();
  const t0 = now - 86_400_000;
  const events = makeEvents("b", BACKFILL_USERS * 3, BACKFILL_USERS, t0, 86_400_000 - 60_000);
  for (let i = 0; i < BACKFILL_USERS; i++) events[i]!.userId = `u${i}`; // every user has at least one event
  const batch = 4096;
  for (let f = 0, batchNo = 1; f < events.length; f += batch, batchNo++) {
    const byP = new Map<number, Map<string, Actor>>();
    for (const e of events.slice(f, f + batch)) {
      const p = partitionOf(e.userId!, PARTITIONS);
      const actor = fill.actor(e.userId!);
      const pe: ProfileEvent = { type: e.type!, timestampMs: Number(e.timestampMs), itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", brand: "", price: e.price ?? 0, quantity: 1, currency: "", sessionId: "", orderId: e.orderId ?? "" };
      applyEvent(actor.state, pe, PROFILE_DEFAULTS);
      runner.observe(actor.state, pe, p);
      actor.lastBatch = batchNo;
      if (!byP.has(p)) byP.set(p, new Map());
      byP.get(p)!.set(e.userId!, actor);
    }
    const commits: Promise<void>[] = [];
    for (const [p, users] of byP) {
      const side: SideWrites = { puts: [], removes: [] };
      runner.evaluate(p, [...users].map(([id, x]) => [id, x, "event"] as const), now, side, []);
      commits.push(store.commitBatch(p, 0, [...users].map(([id, x]) => [id, x.state] as const), side));
    }
    await Promise.all(commits);
    fill.evict(batchNo);
  }
  // Time passes to `now` as the engine's timers pass it (a backfill meets users whose due is ahead), and the set's own
  // backfill (the runner started with it) is done before the measures.
  for (const p of partitions) {
    for (let due = runner.dueTimers(p, now); due.length > 0; due = runner.dueTimers(p, now)) {
      const side: SideWrites = { puts: [], removes: [] };
      const users = due.map(([, key]) => [key, fill.actor(key), "time"] as const);
      runner.evaluate(p, users, now, side, []);
      await store.commitBatch(p, 0, users.map(([id, x]) => [id, x.state] as const), side);
    }
  }
  await backfill(runner, fill, store, now);
  const results: Record<string, number[]> = { selective: [], whole: [] };
  let current = defs;
  for (let r = 1; r <= 2; r++) {
    for (const mode of ["selective", "whole"] as const) {
      const added = (current = [...current, { id: `backfilled-${mode}-${r}`, rule: { field: "events.90d", op: ">=", value: 1 } } as AudienceDefinition]);
      // Selective: the runner that has the set before; whole: a runner started with the new set (it knows no set before).
      // Each with an empty actor cache (the other runner's writes are in LMDB, not in a cache).
      const actors = new ActorCache(store, 10_000);
      const x = mode === "selective" ? runner : runnerOf(actors);
      x.set(added);
      const c0 = process.cpuUsage();
      const { rate, transitions } = await backfill(x, actors, store, now);
      const cpu = process.cpuUsage(c0);
      results[mode]!.push(rate);
      rows.push([`backfill ${r}`, mode, `${BACKFILL_USERS} profiles, ${transitions} enter events`, `${rate.toFixed(0)} profiles/s`, `${((cpu.user + cpu.system) / BACKFILL_USERS).toFixed(1)} µs CPU/profile`, `1M in ${(1e6 / rate).toFixed(0)} s`, "", "", "", "", "", ""]);
      if (mode === "whole") runner.set(added); // the measured runner's set before, for the next selective round
    }
  }
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The rules alone: every user's state after the run's events (applied and
 * evaluated as the shard does) evaluated again at its last event's time, 20
 * times (no transitions: the memberships are current), with the set's guards
 * and with the same set without them (every rule run), alternating, 3 rounds.
 * Returns rows of CPU µs per user evaluation.
 */
function ruleRuns(defs: AudienceDefinition[]): string[][] {
  const set = compileAudiences(defs);
  const unguarded: CompiledAudiences = { ...set, guards: set.guards.map(() => undefined) };
  const env = { profile: PROFILE_DEFAULTS };
  const t0 = Date.now() - SPAN_DAYS * 86_400_000 - 60_000;
  const users = new Map<string, UserState>();
  let last = t0;
  for (const e of makeEvents("r", EVENTS, USERS, t0, SPAN_DAYS * 86_400_000, FOCUS)) {
    const pe: ProfileEvent = { type: e.type!, timestampMs: Number(e.timestampMs), itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", brand: "", price: e.price ?? 0, quantity: 1, currency: "", sessionId: "", orderId: e.orderId ?? "" };
    let u = users.get(e.userId!);
    if (u === undefined) users.set(e.userId!, (u = newUserState()));
    applyEvent(u, pe, PROFILE_DEFAULTS);
    observeAudienceEvent(u, pe, 0);
    evaluateAudiences(e.userId!, u, set, pe.timestampMs, env, "event", 0, eventBit(pe.type));
    last = pe.timestampMs;
  }
  const rows: string[][] = [];
  const ran: Record<string, number[]> = { guarded: [], unguarded: [] };
  for (let r = 1; r <= 3; r++) {
    for (const [mode, s] of [["guarded", set], ["unguarded", unguarded]] as const) {
      const c0 = process.cpuUsage();
      for (let k = 0; k < 20; k++) for (const [id, u] of users) evaluateAudiences(id, u, s, last, env, "event", 0, eventBit(EventType.VIEW));
      const cpu = process.cpuUsage(c0);
      ran[mode]!.push((cpu.user + cpu.system) / (20 * users.size));
    }
  }
  for (const mode of ["guarded", "unguarded"] as const) rows.push(["rules", mode, `${users.size} users x 20 view evaluations`, `${ran[mode]!.map((x) => x.toFixed(2)).join(" / ")} µs CPU per evaluation`, "", "", "", "", "", "", ""]);
  return rows;
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const defs = SET === "shop" ? shopAudiences() : churnyAudiences();
  const rows: string[][] = [];
  const ratios: number[] = [];
  let kindsNote = "";
  if (ONLY_WITH) {
    for (let r = 0; r <= ROUNDS; r++) await run(defs);
    return;
  }
  // One warm-up of each (JIT), not reported.
  await run([]);
  await run(defs);
  for (let r = 1; r <= ROUNDS; r++) {
    const none = await run([]);
    const with100 = await run(defs);
    for (const [name, x] of [["none", none], ["100", with100]] as const) {
      rows.push([`${r}`, name, x.applyUs.toFixed(1), x.evalUs.toFixed(1), x.commitUs.toFixed(1), x.waitUs.toFixed(1), x.writes.toFixed(2), x.cpuUs.toFixed(1), x.transitions.toFixed(3), x.stateBytes.toFixed(0), `${x.storedProfile.toFixed(0)} + ${x.storedMemberships.toFixed(0)}`]);
    }
    ratios.push(1 - none.cpuUs / with100.cpuUs);
    if (r === ROUNDS) kindsNote = `LMDB writes per event by kind, with the 100 audiences: ${Object.entries(with100.kinds).sort((x, y) => y[1] - x[1]).map(([k, n]) => `${k} ${n.toFixed(2)}`).join(", ")} (t = timer index, c = counts, o = outbox).`;
    rows.push([`${r}`, "cost (CPU)", "", "", "", "", "", `${(100 * ratios[ratios.length - 1]!).toFixed(1)}%`, "", "", ""]);
  }
  rows.push(...ruleRuns(defs));
  if (BACKFILL_USERS > 0) await backfillRuns(defs, rows);
  const header = ["round", "audiences", "apply µs/event", "evaluate µs/event", "commit µs/event", "await commit µs/event", "LMDB writes/event", "process CPU µs/event", "transitions/event", "state bytes", "stored bytes (profile + memberships)"];
  const load = `Load average (1, 5, 15 min) before: ${load0}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${cpus().length} cores.`;
  const notes = [
    `Timer index compaction: ${EAGER ? "eager (at every evaluation: the most writes the index costs)" : "default (4096 passed entries per partition or 60 s: a run shorter than that moves none)"}.`,
    `${EVENTS} synthetic events over ${USERS} users, ${SPAN_DAYS} days of event time, ${FOCUS > 0 ? `${FOCUS * 100}% of each user's events in its favourite category` : "categories uniform"}, ${PARTITIONS} partitions in one thread, fetches of ${FETCH} events split per partition; set "${SET}"; no models, no broker.`,
    "Cost (CPU) = 1 - CPU per event without audiences / with: the shard's share of the target (≤ 20%) without the main thread's publishing of transitions.",
    "State bytes: msgpack of the whole state in memory (with its memberships, their ids as strings), sampled users; stored bytes: the same users' values in LMDB as written, the profile (shared record structures, without the memberships) and the memberships record (none for a user that never entered an audience).",
    "Rules rows: the rules alone (no store, no transitions): each user's state after the events evaluated again at the last event's time, with the set's guards (a non-member whose affinity or session guard is false is not evaluated) and without (every rule runs), alternating; the figures of the 3 rounds.",
    `Backfill rows: a new audience every stored profile enters (events.90d >= 1), over ${BACKFILL_USERS} stored profiles evaluated against the set, in one thread without the ticks' pacing (a shard's capacity; the engine's two shards each evaluate half the profiles, beside ingest); selective = the shard knows the set before (only the new audience is evaluated), whole = every audience (a runner started with the new set).`,
    kindsNote,
    load,
  ];
  printTable(`audience evaluation per event (${SET})`, header, rows);
  for (const n of notes) console.log(`- ${n}`);
  if (!a["no-record"]) appendResults(`audience evaluation per event (${SET})`, `npm run bench:audience-eval -- --set ${SET} --events ${EVENTS} --users ${USERS} --rounds ${ROUNDS} --backfill-users ${BACKFILL_USERS} --timer-compaction ${EAGER ? "eager" : "default"}${FOCUS > 0 ? ` --focus ${FOCUS}` : ""}`, header, rows, notes.map((n) => `- ${n}`));
}

await main();
