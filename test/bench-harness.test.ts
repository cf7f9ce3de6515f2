/**
 * The load-test harness (bench/): its latency measurements against known
 * artificial delays over a real nats-server, and a smoke run of every
 * scenario (real engine, publishers and baselines, CI-sized).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { pb } from "../src/wire/proto.js";
import { lineChartSvg } from "../bench/harness/chart.js";
import { openLoop, pctMs } from "../bench/harness/open-loop.js";
import { Rig } from "../bench/harness/rig.js";
import { startRedisServer, type RedisServerHandle } from "../bench/harness/redis-server.js";
import { runBench, SCENARIOS, usage } from "../bench/run.js";
import { freshnessProbes } from "../bench/scenarios/common.js";


describe("bench harness - measurement", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("bench harness - open-loop latency of a responder that answers after 30 ms is at least 30 ms and close to it", async () => {
    const responder = await connect({ servers: server.url });
    responder.subscribe("delay.30", { callback: (_e, m) => void setTimeout(() => m.respond(new Uint8Array(8)), 30) });
    responder.subscribe("delay.0", { callback: (_e, m) => m.respond(new Uint8Array(8)) });
    await responder.flush();
    // The same loop against a responder that answers at once: the loopback and scheduling cost on this machine now.
    const raw = await openLoop(40, 1, 100, 2000, () => nc.request("delay.0", new Uint8Array(8), { timeout: 2000 }));
    const r = await openLoop(40, 1, 100, 2000, () => nc.request("delay.30", new Uint8Array(8), { timeout: 2000 }));
    await responder.close();
    expect(raw.ok).toBe(raw.scheduled);
    expect(r.ok).toBe(r.scheduled);
    // A lower bound the measurement can never beat, and an upper one above the delay plus the same run's loopback
    // cost (its p90, and 10 ms for timer slack) but below a double count of the delay while that cost is under 20 ms.
    expect(pctMs(r.lat, 1)).toBeGreaterThanOrEqual(30);
    expect(pctMs(r.lat, 50)).toBeLessThan(30 + 10 + pctMs(raw.lat, 90));
  });

  it("bench harness - open loop counts queueing behind a stalled responder (no coordinated omission)", async () => {
    // The responder answers one request at a time, 20 ms each: 50/s. Offered 100/s for 1 s, the queue grows to
    // ~50 requests, so the last ones wait ~1 s. A closed-loop client would report 20 ms for every request.
    const responder = await connect({ servers: server.url });
    let busyUntil = 0;
    responder.subscribe("serial.20", {
      callback: (_e, m) => {
        const start = Math.max(performance.now(), busyUntil);
        busyUntil = start + 20;
        setTimeout(() => m.respond(new Uint8Array(8)), busyUntil - performance.now());
      },
    });
    await responder.flush();
    const r = await openLoop(100, 1, 1000, 5000, () => nc.request("serial.20", new Uint8Array(8), { timeout: 5000 }));
    await responder.close();
    expect(r.ok).toBe(r.scheduled);
    expect(pctMs(r.lat, 50)).toBeGreaterThan(200);
    expect(pctMs(r.lat, 99)).toBeGreaterThan(700);
  });

  it("bench harness - freshness probes measure a known 50 ms visibility delay", async () => {
    const rig = await Rig.start({ prefix: "fprobe", partitions: 4, publishers: 0 });
    // A stand-in engine: an event becomes visible in the profile 50 ms after it arrives.
    const fake = await connect({ servers: rig.server.url });
    const arrivals = new Map<string, number[]>();
    fake.subscribe(rig.s.eventsWildcard, {
      callback: (_e, m) => {
        const e = pb.Event.decode(m.data);
        arrivals.set(e.userId, [...(arrivals.get(e.userId) ?? []), performance.now()]);
      },
    });
    fake.subscribe(rig.s.profileGet, {
      callback: (_e, m) => {
        const userId = pb.ProfileRequest.decode(m.data).userId;
        const visible = (arrivals.get(userId) ?? []).filter((t) => performance.now() - t >= 50).length;
        m.respond(pb.ProfileReply.encode({ profile: { userId, eventsApplied: visible } }).finish());
      },
    });
    await fake.flush();
    try {
      const r = await freshnessProbes(rig, 1.5, { runId: "t", concurrency: 2, gapMs: 10 });
      expect(r.failed).toBe(0);
      expect(r.probes).toBeGreaterThan(5);
      expect(pctMs(r.freshness, 0)).toBeGreaterThanOrEqual(50);
      expect(pctMs(r.freshness, 50)).toBeLessThan(50 + 25);
    } finally {
      await fake.close();
      await rig.close();
    }
  });

  it("bench harness - the chart is an SVG with one line per series, and tolerates empty series", () => {
    const svg = lineChartSvg([{ name: "p50", points: [[100, 1], [200, 2]] }, { name: "p99", points: [[100, 5], [200, 50]] }, { name: "none", points: [] }], { title: "t<1>", xLabel: "x", yLabel: "y" });
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.match(/<polyline/g)?.length).toBe(2);
    expect(svg).toContain("t&lt;1&gt;");
  });
});

describe("bench harness - scenarios", () => {
  let out: string;
  let redis: RedisServerHandle;
  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), "portrait-bench-test-"));
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
    rmSync(out, { recursive: true, force: true });
  });

  const quiet = () => undefined;
  const run = async (argv: string[]) => {
    const r = await runBench([...argv, "--smoke", "--out", out], quiet, quiet);
    expect(r).toBeDefined();
    expect(existsSync(r!.jsonFile)).toBe(true);
    const json = JSON.parse(readFileSync(r!.jsonFile, "utf8")) as { rows: string[][]; raw: Record<string, unknown> };
    expect(json.rows.length).toBeGreaterThan(0);
    if (r!.svgFile) expect(readFileSync(r!.svgFile, "utf8")).toContain("<svg");
    return { ...r!, json };
  };

  it("bench - --help lists every scenario, and a bad flag or scenario is a clear error", async () => {
    for (const s of SCENARIOS) expect(usage()).toContain(s.name);
    await expect(runBench(["nope"], quiet, quiet)).rejects.toThrow(/unknown scenario "nope"/);
    await expect(runBench(["profile", "--rates", "fast", "--smoke"], quiet, quiet)).rejects.toThrow(/--rates must be/);
    await expect(runBench(["profile", "--bogus", "1"], quiet, quiet)).rejects.toThrow(/bogus/);
    await expect(runBench(["max-ingest", "--smoke", "--source", "nope"], quiet, quiet)).rejects.toThrow(/--source must be generator or one of/);
  });

  it("bench max-ingest --smoke - every event applied, beside raw consume and both Redis baselines", async () => {
    const { json } = await run(["max-ingest", "--redis", redis.url]);
    const raw = json.raw as { loaded: { events: number; applyPerSec: number; engine: { models: string[] } }; raw: { perSec: number }; redis: Array<{ mode: string; perSec: number }>; users: number };
    expect(raw.loaded.events).toBe(5000);
    // The engine runs the bundled models, as in production.
    expect(raw.loaded.engine.models.map((m) => m.split("@")[0]).sort()).toEqual(["churn", "deepfm", "lstm"]);
    expect(raw.loaded.applyPerSec).toBeGreaterThan(0);
    expect(raw.raw.perSec).toBeGreaterThan(0);
    expect(raw.redis.map((r) => r.mode)).toEqual(["pipeline", "lua"]);
  });

  it("bench freshness --smoke - probes see their events at each load level", async () => {
    const { json } = await run(["freshness", "--levels", "50"]);
    const levels = (json.raw as { levels: Array<{ p: Array<[number, number]> }> }).levels;
    expect(levels).toHaveLength(1);
    expect(levels[0]!.p.find(([q]) => q === 50)![1]).toBeGreaterThan(0);
  });

  it("bench profile --smoke --source rees46 - lookups of a real data set's users answered at the offered rate", async () => {
    const { json } = await run(["profile", "--source", "rees46"]);
    const p = (json.raw as { passes: Array<{ achieved: number; errors: Record<string, number>; serverCount: number }> }).passes[0]!;
    expect(p.achieved).toBeGreaterThan(0);
    // The engine's own histogram saw the pass's requests (the 5 % unknown users are answered UNKNOWN_USER).
    expect(p.serverCount).toBeGreaterThan(0);
  });

  it("bench recommend --smoke - recommendations with and without ingest", async () => {
    const { json } = await run(["recommend"]);
    const passes = (json.raw as { passes: Array<{ ingest: number; achieved: number }> }).passes;
    expect(passes.map((p) => p.ingest > 0)).toEqual([false, true]);
    for (const p of passes) expect(p.achieved).toBeGreaterThan(0);
  });

  it("bench mixed --smoke and soak --smoke - every stream answered, all ingest applied afterwards", async () => {
    for (const name of ["mixed", "soak"]) {
      const { json } = await run([name]);
      const raw = json.raw as { drained: boolean; profile: { ok: number }; recommend: { ok: number }; probes: { probes: number } };
      expect(raw.drained).toBe(true);
      expect(raw.profile.ok).toBeGreaterThan(0);
      expect(raw.recommend.ok).toBeGreaterThan(0);
      expect(raw.probes.probes).toBeGreaterThan(0);
      if (name === "soak") {
        // The soak's memory breakdown: /proc's split and the engine's own account, per sample.
        type Mem = { anonMiB: number; fileMiB: number; engine?: { heaps: Record<string, number>; actors: Record<string, number>; gauges: Record<string, Record<string, number>> } };
        const mem = (json.raw as { samples: Array<{ mem?: Mem }> }).samples.map((x) => x.mem).at(-1)!;
        expect(mem.anonMiB).toBeGreaterThan(0);
        expect(mem.fileMiB).toBeGreaterThan(0);
        expect(mem.engine!.heaps["main/used"]).toBeGreaterThan(0);
        expect(mem.engine!.heaps["recs/total"]).toBeGreaterThan(0);
        expect(Object.keys(mem.engine!.actors).length).toBeGreaterThan(0);
        expect(Object.values(mem.engine!.gauges.portrait_shard_actor_cache_bytes!).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
        expect(json.rows.some((r) => r[0] === "memory: RssAnon")).toBe(true);
      }
    }
  });

  it("bench scale --smoke - every user's state on disk, restart to ready, sampled profiles exact", async () => {
    const { json } = await run(["scale"]);
    const raw = json.raw as { users: number; published: number; diskBytes: number; startMs: number; checked: number; wrong: number };
    expect(raw.published).toBe(raw.users * 2);
    expect(raw.diskBytes).toBeGreaterThan(0);
    expect(raw.startMs).toBeGreaterThan(0);
    expect(raw.wrong).toBe(0);
    expect(raw.checked).toBe(200);
  });
});

