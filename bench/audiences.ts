/**
 * `npm run bench:audiences`: what audiences cost and how fast they react, on a
 * real nats-server (127.0.0.1, free port, temp store) and an in-process engine
 * (models off, so the audience share of the work is the largest it can be):
 *
 * 1. Ingest throughput of the same pre-published stream with 0 and with 100
 *    active audiences (fresh engine and data dir each), same run.
 * 2. Membership change visible: at ~50% of the measured throughput, probe
 *    events that make their user enter an audience; latency = arrival of the
 *    enter event on the audience stream - publish time of the probe.
 * 3. Time-based transitions: users that leave "seen within the last N s" by
 *    time alone; lateness = arrival of the exit event - its due time.
 * 4. Backfill: a new audience over every stored profile while the 50% load
 *    goes on; profiles/s, and the time 1M profiles would take at that rate.
 *
 * The audience sets (--set):
 * - `shop` (default): what a shop runs: the starter audiences (RFM segments,
 *   churn risk, cart abandoners, a category-lovers audience per category) and
 *   rules typical of a shop (buyers, big spenders, lapsed, dormant, window
 *   shoppers, category interest, browsing now); most events flip nothing.
 *   Default span 1 day: events carry times of about the day they arrive, as
 *   a live shop's do (a replay compressing 60 days into seconds also runs
 *   60 midnights of time-driven re-evaluation inside the measured seconds).
 * - `churny`: the stress case: 100 rules over every kind, most on low
 *   thresholds of short windows and top-3/session ranks, so that an event flips
 *   2-3 memberships; default span 60 days.
 *
 *   node dist-bench/bench/audiences.js [--set shop|churny] [--events N] [--users N] [--span-days D] [--focus F] [--probes N] [--no-record]
 */
import { connect, type NatsConnection } from "nats";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { churnyAudiences, makeEvents, shopAudiences } from "./audience-sets.js";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "150000" },
    users: { type: "string", default: "20000" },
    set: { type: "string", default: "shop" },
    probes: { type: "string", default: "200" },
    "load-share": { type: "string", default: "0.5" },
    focus: { type: "string", default: "0" },
    "span-days": { type: "string" },
    "no-record": { type: "boolean", default: false },
    "no-live": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (a.help) {
  process.stdout.write(`npm run bench:audiences -- [options]: what 100 audiences cost and how fast they react (see the comment at the top of bench/audiences.ts)
  --set shop|churny   the audience set (default shop: starter audiences and typical rules; churny: the stress case)
  --events N          events pre-published for the throughput pair (default 150000)
  --users N           users they belong to (default 20000)
  --span-days D       event time they cover (default 1 for shop, 60 for churny)
  --probes N          probe users for the visibility and time measures (default 200)
  --focus F           share of a user's events in its favourite category (default 0: categories uniform, the most transitions)
  --load-share F      background load of measures 2-4 as a share of the 100-audience ingest rate (default 0.5)
  --no-live           the throughput pair only (no measures 2-4)
  --no-record         print only; do not append to bench/RESULTS.md
`);
  process.exit(0);
}
const EVENTS = Number(a.events);
/** Probe users of measure 2 and "fresh" users of measure 3 (each probe waits for its enter, up to 5 s). */
const PROBES = Number(a.probes);
const USERS = Number(a.users);
/** Event time the pre-published events cover: a long span makes every user's windows change at each midnight (time-driven re-evaluation). */
const SET = a.set === "churny" ? "churny" : a.set === "shop" ? "shop" : (() => { throw new Error(`--set: shop or churny, not ${a.set}`); })();
const SPAN_DAYS = Number(a["span-days"] ?? (SET === "shop" ? "1" : "60"));
const LOAD_SHARE = Number(a["load-share"]);
/** Share of a user's events in its favourite category (audience-sets.ts makeEvents); 0 = uniform. */
const FOCUS = Number(a.focus);
const PARTITIONS = 8;
const WORKERS = 2;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((x, y) => x - y);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function applied(engine: Engine): Promise<number> {
  return (await engine.metrics.eventsApplied.get()).values[0]?.value ?? 0;
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const nats = await startNatsServer({ readyTimeoutMs: 20_000 });
  // No async stack traces: nats.js otherwise builds two Error objects per request (each JetStream publish), which cost this
  // thread (shared with the in-process engine) more than the publishing itself (V8 profile of this bench).
  const nc: NatsConnection = await connect({ servers: nats.url, noAsyncTraces: true });
  const dirs: string[] = [];
  const engineAt = async (prefix: string) => {
    const dataDir = mkdtempSync(join(tmpdir(), "portrait-bench-aud-"));
    dirs.push(dataDir);
    return Engine.start({
      natsUrl: nats.url, embeddedNats: "never", partitions: PARTITIONS, workers: WORKERS, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
      lstmModel: "off", churnModel: "off", deepfmModel: "off",
    });
  };
  const rows: string[][] = [];
  const notes: string[] = [];
  try {
    // 1. Throughput with 0 and 100 audiences: the same events, pre-published, consumed from the stream's start.
    // Events end a minute before they are published: the engine clock ends the ingest live (within its live window), as a
    // live shop's does. (They used to end a day earlier: the first live event of measures 2-4 then moved the clock a day
    // ahead, every user's timers fired at once, and the probes waited behind that burst.)
    const t0 = Date.now() - SPAN_DAYS * 86_400_000 - 60_000;
    const rates: number[] = [];
    const cpus_: number[] = [];
    for (const [name, defs] of [["none", []], ["100", SET === "shop" ? shopAudiences() : churnyAudiences()]] as const) {
      const prefix = `ba${name}`;
      const client = new PortraitClient(nc, { partitions: PARTITIONS, subjectPrefix: prefix, requestTimeoutMs: 30_000 });
      // Streams and the definitions exist before the engine starts consuming: start, define, stop, publish, start again.
      const e0 = await engineAt(prefix);
      for (const d of defs) await client.audienceCreate(d);
      await e0.close();
      await client.publishMany(makeEvents(prefix, EVENTS, USERS, t0, SPAN_DAYS * 86_400_000, FOCUS));
      const dataDir = e0.config.dataDir;
      const engine = await Engine.start({
        natsUrl: nats.url, embeddedNats: "never", partitions: PARTITIONS, workers: WORKERS, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
        lstmModel: "off", churnModel: "off", deepfmModel: "off",
      });
      // From the engine being ready (start-up is not ingest) to the last event applied, counting every event: timing from
      // the first poll that saw an applied event gave absurd rates when most events were applied before that poll. Events the
      // consumers apply before start() resolves still count (an overstatement of both figures; use many events).
      const started = performance.now();
      const cpu0 = process.cpuUsage();
      while ((await applied(engine)) < EVENTS) await new Promise((r) => setTimeout(r, 5));
      const rate = EVENTS / ((performance.now() - started) / 1000);
      // CPU of this process (engine threads; the publisher is idle here) per event: unlike the rate, not divided among the
      // other processes of a shared machine. The broker's CPU (a separate process) is not in it.
      const cpu = process.cpuUsage(cpu0);
      const cpuPerEvent = (cpu.user + cpu.system) / EVENTS;
      cpus_.push(cpuPerEvent);
      const jsm = await nc.jetstreamManager();
      const transitions = (await jsm.streams.info(engine.subjects.audienceStream)).state.messages;
      // Before measures 2-4: the enter/exit events of the ingest still being published settle (stable for 1 s, at most 60 s).
      for (let last = -1, until = Date.now() + 60_000; Date.now() < until;) {
        const m = (await jsm.streams.info(engine.subjects.audienceStream)).state.messages;
        if (m === last) break;
        last = m;
        await new Promise((r) => setTimeout(r, 1000));
      }
      rates.push(rate);
      rows.push([`ingest, ${name === "none" ? "no audiences" : `100 active audiences (${SET})`} (events/s)`, rate.toFixed(0),
        `${transitions} enter/exit events published (${(transitions / EVENTS).toFixed(2)} per event); engine process CPU ${cpuPerEvent.toFixed(1)} µs per event`]);
      console.log(`- ${rows[rows.length - 1]!.join(": ")}`);
      if (name !== "none" && !a["no-live"]) {
        // 2-4 run on this engine (100 audiences, stored profiles of USERS users); a request that times out on a saturated
        // machine ends them with a note instead of losing the throughput figures.
        await liveMeasures(engine, client, rate, rows, notes).catch((err: unknown) => void notes.push(`Measures 2-4 stopped: ${(err as Error).message}.`));
      }
      await engine.close();
    }
    const cost = 1 - rates[1]! / rates[0]!;
    rows.splice(2, 0, ["throughput cost of 100 audiences", `${(cost * 100).toFixed(1)}%`, "target <= 20%"]);
    rows.splice(3, 0, ["throughput cost of 100 audiences from CPU per event (1 - without / with)", `${((1 - cpus_[0]! / cpus_[1]!) * 100).toFixed(1)}%`,
      `engine process CPU per event ${cpus_[1]!.toFixed(1)} / ${cpus_[0]!.toFixed(1)} µs with / without; read this one on a shared machine (a rate is divided among every process that runs, CPU per event is not)`]);
  } finally {
    await nc.close();
    await nats.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  const load = `Load average (1, 5, 15 min) before: ${load0}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${cpus().length} cores (above ${cpus().length}, other processes compete for the CPU).`;
  notes.push(`Engine in-process (main thread shared with the publisher), ${PARTITIONS} partitions, ${WORKERS} shard workers, models off; ${EVENTS} synthetic events over ${USERS} users (75% view, 17% cart, 8% purchase, 30 categories), ${SPAN_DAYS} days of event time; audience set "${SET}".`);
  notes.push(load);
  const header = ["measure", "value", "note"];
  printTable(`audiences (${SET})`, header, rows);
  for (const n of notes) console.log(`- ${n}`);
  if (!a["no-record"]) appendResults(`audiences (${SET})`, `npm run bench:audiences -- --set ${SET} --events ${EVENTS} --users ${USERS} --span-days ${SPAN_DAYS}${FOCUS > 0 ? ` --focus ${FOCUS}` : ""} --probes ${PROBES}`, header, rows, notes.map((n) => `- ${n}`));
}

async function liveMeasures(engine: Engine, client: PortraitClient, maxRate: number, rows: string[][], notes: string[]): Promise<void> {
  const nc = client.nc;
  const s = engine.subjects;
  const arrivals = new Map<string, number>();
  const sub = nc.subscribe(s.audienceWildcard, {
    callback: (_e, m) => {
      const t = pb.AudienceTransition.decode(m.data);
      arrivals.set(`${t.audienceId}:${t.userId}:${t.entered ? 1 : 0}`, Date.now());
    },
  });
  await client.audienceCreate({ id: "probe", rule: { field: "purchases.1d", op: ">=", value: 3 } });
  const ttlS = 3;
  await client.audienceCreate({ id: "fresh", rule: { all: [{ field: "daysSinceSeen", op: "<", value: ttlS / 86_400 }, { field: "carts.1d", op: ">=", value: 50 }] } });
  await new Promise((r) => setTimeout(r, 1000));

  // Background load: LOAD_SHARE of the measured 100-audience rate, live timestamps, the stored users. That rate was measured
  // on a pre-published stream; live, the publisher (this thread) and the broker share the 2 cores with the engine, so the
  // load the engine can follow is lower. A load it does not follow is no "50% load" (every probe would wait behind a growing
  // backlog, and 200 probes x 5 s wait outlast any run): after a 3 s warm-up the bench checks that the engine applied what
  // was sent (backlog under 1 s of load), and halves the load otherwise (at most 4 times), reporting the load it measured at.
  let target = maxRate * LOAD_SHARE;
  let stop = false;
  let sent = 0;
  let k = 0;
  let failedPublishes = 0;
  const startLoad = (rate: number) => {
    stop = false;
    const sent0 = sent;
    return (async () => {
      const startedAt = Date.now();
      while (!stop) {
        const due = sent0 + Math.floor(((Date.now() - startedAt) / 1000) * rate);
        const batch: IEvent[] = [];
        while (sent < due && batch.length < 2000) {
          batch.push({ eventId: `bg-${k}`, userId: `u${k % USERS}`, type: EventType.VIEW, timestampMs: Date.now(), itemId: `i${k % 5000}`, categoryId: `c${k % 30}` });
          k++;
          sent++;
        }
        if (batch.length > 0) {
          // A publish that times out (the broker shares the 2 cores) is counted, not fatal: the bench measures the engine.
          await client.publishMany(batch).catch(() => void (failedPublishes += batch.length));
        } else {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    })();
  };
  const appliedBase = await applied(engine);
  /** Background events sent and not yet applied (the probes' own events are few). */
  const backlog = async () => sent - ((await applied(engine)) - appliedBase);
  let bg = startLoad(target);
  const calibration: string[] = [];
  let loadShare = LOAD_SHARE;
  // The load stops however the measures end (a request timing out on a saturated machine ends them: the load must not go on).
  try {
  let halvings = 0;
  /** Stops the load, lets the engine catch up, and restarts it at half the rate. */
  const halve = async (why: string) => {
    calibration.push(`${target.toFixed(0)}/s: ${why}`);
    stop = true;
    await bg;
    const until = Date.now() + 120_000;
    while ((await backlog()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    target /= 2;
    halvings++;
    bg = startLoad(target);
    await new Promise((r) => setTimeout(r, 2000));
  };
  // Warm-up: 10 s, then the backlog must be under 1 s of load.
  for (;;) {
    await new Promise((r) => setTimeout(r, 10_000));
    const behind = await backlog();
    if (behind <= target || halvings >= 4) break;
    await halve(`backlog ${behind} after 10 s`);
  }

  /** A probe's publish, again on a timeout (the broker shares the loaded cores; the event id makes a second copy a duplicate). */
  const publishRetrying = async (e: IEvent) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await client.publish(e);
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  };
  // 2. Probes: a fresh user buys three times; the third purchase makes it enter "probe". A halving of the load (below)
  // restarts the measure: only probes at the final load count; 180 s at most from the last restart.
  let lat: number[] = [];
  let probed = 0;
  let backlogs: number[] = [];
  let roundMisses = 0;
  let probesUntil = Date.now() + 180_000;
  for (let i = 0; probed < PROBES && Date.now() < probesUntil; i++) {
    {
      // Before every probe (a probe on a saturated engine waits its whole 5 s): a backlog over 1 s of load, or 3 probes in
      // a row unseen within 5 s (applied is not visible: enter events can queue behind earlier transitions still being
      // published), halves the load.
      const behind = await backlog();
      const why = behind > target ? `backlog ${behind} during the probes` : roundMisses >= 3 ? `${roundMisses} probes in a row unseen within 5 s` : "";
      if (why !== "") roundMisses = 0;
      if (why !== "" && halvings < 4) {
        await halve(why);
        lat = [];
        backlogs = [];
        probed = 0;
        probesUntil = Date.now() + 180_000;
      }
    }
    probed++;
    backlogs.push(await backlog());
    const user = `probe${i}`;
    for (let j = 0; j < 2; j++) await publishRetrying({ eventId: `p${i}-${j}`, userId: user, type: EventType.PURCHASE, timestampMs: Date.now(), itemId: "x", price: 1, orderId: `po${i}-${j}` });
    const sentAt = Date.now();
    await publishRetrying({ eventId: `p${i}-2`, userId: user, type: EventType.PURCHASE, timestampMs: Date.now(), itemId: "x", price: 1, orderId: `po${i}-2` });
    const key = `probe:${user}:1`;
    const deadline = Date.now() + 5000;
    while (!arrivals.has(key) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
    if (arrivals.has(key)) {
      lat.push(arrivals.get(key)! - sentAt);
      roundMisses = 0;
    } else {
      roundMisses++;
    }
  }
  loadShare = target / maxRate;
  rows.push(["membership change visible after the event, p50 / p99 / max (ms)", `${pct(lat, 50)} / ${pct(lat, 99)} / ${Math.max(...lat)}`,
    `target p99 <= 20 ms at 50% load; ${lat.length}/${probed} probes seen within 5 s${probed < PROBES ? ` (the 180 s bound on this measure ended it)` : ""}; background load ${target.toFixed(0)} events/s = ${(loadShare * 100).toFixed(0)}% of the cold 100-audience rate; its backlog at the probes p50 ${pct(backlogs, 50)} / max ${Math.max(...backlogs)} events`]);

  // 3. Time: 200 users enter "fresh" (50 carts today) and leave it ttlS after their last event, by time alone.
  const dueOf = new Map<string, number>();
  for (let i = 0; i < PROBES; i++) {
    const user = `fresh${i}`;
    const now = Date.now();
    const evs: IEvent[] = Array.from({ length: 50 }, (_, j) => ({ eventId: `f${i}-${j}`, userId: user, type: EventType.ADD_TO_CART, timestampMs: now, itemId: "y" }));
    await client.publishMany(evs);
    dueOf.set(user, now + ttlS * 1000);
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, ttlS * 1000 + 2500));
  const late: number[] = [];
  for (const [user, due] of dueOf) {
    const t = arrivals.get(`fresh:${user}:0`);
    if (t !== undefined) late.push(t - due);
  }
  rows.push(["time-based exit on the stream after its due time, p50 / p99 / max (ms)", `${pct(late, 50)} / ${pct(late, 99)} / ${Math.max(...late)}`, `target <= 1000 ms; ${late.length}/${PROBES} exits seen`]);

  // 4. Backfill over every stored profile while the load goes on: from the create request to done (definition propagation
  // through the KV watch included), and from the first progress report to done (the scan itself).
  let profiles = 0;
  let firstSeen = 0;
  const b0 = performance.now();
  await client.audienceCreate({ id: "backfilled", rule: { field: "events.90d", op: ">=", value: 1 } });
  for (;;) {
    // A progress query that times out on the loaded engine is asked again (the 60 s bound below still ends the measure).
    const shown = await client.audienceShow("backfilled").catch(() => undefined);
    if (shown === undefined) {
      if (performance.now() - b0 > 120_000) break;
      continue;
    }
    const b = shown.backfill;
    if (b.running) {
      profiles = Math.max(profiles, b.total);
      if (firstSeen === 0) firstSeen = performance.now();
    } else if (profiles > 0 || performance.now() - b0 > 60_000) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const end = performance.now();
  const secs = (end - b0) / 1000;
  const scanSecs = (end - (firstSeen || b0)) / 1000;
  const bRate = profiles / secs;
  const scanRate = profiles / scanSecs;
  rows.push(["backfill of a new audience while ingest goes on (profiles/s)", `${bRate.toFixed(0)} (scan ${scanRate.toFixed(0)})`, `${profiles} profiles in ${secs.toFixed(1)} s from the create request, ${scanSecs.toFixed(1)} s from the first progress report`]);
  rows.push(["backfill of 1M profiles at the scan rate, extrapolated (s)", (1e6 / scanRate).toFixed(0), `target <= 60 s; bound: ${engine.config.audienceBackfillPerTick} profiles per 100 ms tick per shard`]);
  } finally {
    stop = true;
    await bg;
    sub.unsubscribe();
  }
  notes.push(`Background load during 2-4: ${target.toFixed(0)} events/s (${(loadShare * 100).toFixed(0)}% of the cold 100-audience ingest rate; asked ${(LOAD_SHARE * 100).toFixed(0)}%${calibration.length > 0 ? `, halved while the engine did not follow it: ${calibration.join("; ")}` : ""}), ${sent} events sent, ${failedPublishes} in batches whose publish failed (timeouts).`);
}

await main();
