/**
 * cluster: cluster mode (README "Scale-out") on a 3-node nats-server cluster
 * with R3 streams, engines as child processes of the CLI. Measures
 *  - live throughput with 1, 2 and 3 engine nodes (`--cluster`), and one
 *    engine without `--cluster` on the same R3 streams: the changelog's cost
 *    is the single engine against the 1-node cluster on streams of the same replicas; each node's rate and
 *    the CPU split (engines, nats-servers) over the run;
 *  - takeover after SIGKILL: from the kill until every partition of the dead
 *    node is leased to a live one and answers a query, p50 and max over a
 *    bounded number of kills (each followed by a restarted node).
 * Everything on 127.0.0.1; every loop is bounded in count and time.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { headers, type NatsConnection } from "nats";
import { PortraitClient } from "../../src/client/portrait-client.js";
import { changelogStream } from "../../src/bus/changelog.js";
import { clusterStatus } from "../../src/cluster/cluster-status.js";
import { PortraitError } from "../../src/errors.js";
import { partitionOf } from "../../src/wire/partition.js";
import { EventType, pb } from "../../src/wire/proto.js";
import { freePort } from "../../src/bus/server-process.js";
import { startNatsCluster } from "../harness/nats-cluster.js";
import { procTicks } from "../harness/proc-stats.js";
import { f0, f1, num, type Scenario } from "./scenario.js";

const CLK_TCK = 100;
const self = fileURLToPath(import.meta.url);
const CLI = self.endsWith(".ts") ? fileURLToPath(new URL("../../src/cli/portrait.ts", import.meta.url)) : fileURLToPath(new URL("../../src/cli/portrait.js", import.meta.url));

interface Node {
  id: string;
  proc: ChildProcess;
  dir: string;
  out: () => string;
  /** Port of the engine's /metrics. */
  httpPort: number;
}

/** Sums of the engine metrics that say where cluster mode's time goes (one sample per series, labels summed). */
const SCRAPED = {
  batches: "portrait_ingest_batch_size_messages_count",
  batchMessages: "portrait_ingest_batch_size_messages_sum",
  changelogRecords: "portrait_changelog_records_total",
  changelogBytes: "portrait_changelog_bytes_total",
  changelogWaits: "portrait_changelog_append_seconds_count",
  changelogWaitSeconds: "portrait_changelog_append_seconds_sum",
  batchSeconds: "portrait_ingest_batch_seconds_sum",
  applySeconds: "portrait_ingest_batch_apply_seconds_sum",
} as const;

async function scrape(port: number): Promise<Record<keyof typeof SCRAPED, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const out = {} as Record<keyof typeof SCRAPED, number>;
  for (const k of Object.keys(SCRAPED) as (keyof typeof SCRAPED)[]) {
    out[k] = 0;
    const re = new RegExp(`^${SCRAPED[k]}(?:\\{[^}]*\\})? (\\S+)$`, "gm");
    for (const m of text.matchAll(re)) out[k] += Number(m[1]);
  }
  return out;
}

/** A nats-server's message and byte counters (clients and routes, in and out), from its monitoring /varz. */
async function varz(monitorUrl: string): Promise<{ inMsgs: number; outMsgs: number; inBytes: number; outBytes: number; routeInMsgs: number; routeInBytes: number }> {
  const v = await (await fetch(`${monitorUrl}/varz`, { signal: AbortSignal.timeout(5000) })).json() as Record<string, number>;
  const r = await (await fetch(`${monitorUrl}/routez`, { signal: AbortSignal.timeout(5000) })).json() as { routes?: { in_msgs: number; in_bytes: number }[] };
  const routes = r.routes ?? [];
  return {
    inMsgs: v.in_msgs!, outMsgs: v.out_msgs!, inBytes: v.in_bytes!, outBytes: v.out_bytes!,
    routeInMsgs: routes.reduce((a, x) => a + x.in_msgs, 0), routeInBytes: routes.reduce((a, x) => a + x.in_bytes, 0),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, deadline: number, f: () => Promise<boolean>): Promise<void> {
  while (!(await f().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`bench cluster: ${what} (time bound reached)`);
    await sleep(100);
  }
}

export const cluster: Scenario = {
  name: "cluster",
  summary: "cluster mode on a 3-node NATS cluster (R3): throughput with 1-3 engine nodes and without --cluster (the changelog's cost), takeover time after SIGKILL",
  flags: {
    events: { default: "20000", smoke: "1500", help: "events published in each throughput run" },
    users: { default: "2000", smoke: "200", help: "distinct users of those events" },
    partitions: { default: "6", smoke: "3", help: "partitions" },
    modes: { default: "single,1,2,3", help: "throughput runs, in order: single (one engine without --cluster, R3 streams), N (N = 1-3 --cluster nodes, R3 streams); single-r1 and N-r1: the same on R1 streams (the changelog without the replication)" },
    "count-subjects": { default: "0", help: "1: count the messages of every subject kind seen in the account during each throughput run (a wildcard subscription: it costs the servers a copy of each, so rates are lower)" },
    kills: { default: "10", smoke: "1", help: "SIGKILLs measured for the takeover time" },
    "lease-ms": { default: "2000", help: "the engines' --lease-ms" },
    "timeout-s": { default: "600", smoke: "180", help: "bound on each phase" },
  },
  async run(ctx) {
    const E = num(ctx, "events", 1, 5_000_000);
    const U = num(ctx, "users", 1, 1_000_000);
    const P = num(ctx, "partitions", 1, 256);
    const K = num(ctx, "kills", 0, 50);
    const leaseMs = num(ctx, "lease-ms", 300, 60_000);
    const boundMs = num(ctx, "timeout-s", 10, 7200) * 1000;
    const nats = await startNatsCluster(3);
    const nodes: Node[] = [];
    const probes = Array.from({ length: P }, (_, p) => {
      for (let i = 0; ; i++) if (partitionOf(`__probe__${i}`, P) === p) return `__probe__${i}`;
    });
    let run = 0;
    const start = async (prefix: string, id: string | undefined, replicas = 3): Promise<Node> => {
      const httpPort = await freePort();
      const dir = mkdtempSync(join(tmpdir(), "portrait-bench-cluster-"));
      const args = [...(self.endsWith(".ts") ? ["--import", "tsx"] : []), CLI, "start", "--nats", nats.url, "--embedded-nats", "never", "--data-dir", dir,
        "--prefix", prefix, "--partitions", String(P), "--workers", "1", "--http-port", String(httpPort), "--log-level", "warn", "--no-model-registry",
        "--deepfm", "off", "--inference-workers", "1", "--replicas", String(replicas),
        ...(id !== undefined ? ["--cluster", "--node-id", id, "--lease-ms", String(leaseMs)] : [])];
      const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      proc.stdout!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
      proc.stderr!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
      const n = { id: id ?? "single", proc, dir, out: () => out, httpPort };
      nodes.push(n);
      return n;
    };
    const stop = async (n: Node, signal: NodeJS.Signals) => {
      if (n.proc.exitCode === null && n.proc.signalCode === null) {
        const gone = new Promise((r) => n.proc.once("exit", r));
        n.proc.kill(signal);
        await gone;
      }
      rmSync(n.dir, { recursive: true, force: true });
    };
    /** Every partition leased to one of `ids`, balanced, each answering a probe. */
    const served = async (c: PortraitClient, ids: string[], deadline: number) => {
      const ok = new Set<number>();
      await until(`partitions not served by ${ids.join(",")}`, deadline, async () => {
        const st = await clusterStatus(c.nc, c.subjects);
        const owned = new Map<string, number>();
        for (const p of st.partitions) owned.set(p.node, (owned.get(p.node) ?? 0) + 1);
        if (st.partitions.length < P || !st.partitions.every((p) => ids.includes(p.node)) || ids.some((n) => !owned.has(n) || owned.get(n)! > Math.ceil(P / ids.length))) {
          ok.clear();
          return false;
        }
        for (let p = 0; p < P; p++) {
          if (ok.has(p)) continue;
          try {
            await c.getProfile(probes[p]!);
            ok.add(p);
          } catch (err) {
            if (err instanceof PortraitError && err.code === "UNKNOWN_USER") ok.add(p);
          }
        }
        return ok.size === P;
      });
    };
    const publish = async (nc: NatsConnection, prefix: string) => {
      for (let i = 0; i < E; i++) {
        const u = i % U;
        const e = { eventId: `${prefix}-${i}`, userId: `u${u}`, type: EventType.VIEW, timestampMs: Date.UTC(2024, 4, 1) + i, itemId: `i${i % 500}`, categoryId: `c${i % 13}` };
        const h = headers();
        h.set("Nats-Msg-Id", e.eventId);
        nc.publish(`${prefix}.events.${partitionOf(e.userId, P)}`, pb.Event.encode(e).finish(), { headers: h });
        if (i % 2000 === 1999) await nc.flush();
      }
      await nc.flush();
    };
    /** True once the stream holds E events and every partition's one consumer has nothing pending or unacknowledged. */
    const drained = async (nc: NatsConnection, stream: string) => {
      const jsm = await nc.jetstreamManager();
      if ((await jsm.streams.info(stream)).state.messages < E) return false;
      const cs = [];
      for await (const ci of jsm.consumers.list(stream)) cs.push(ci);
      return cs.length === P && cs.every((ci) => ci.num_pending === 0 && ci.num_ack_pending === 0);
    };

    const rows: string[][] = [];
    const raw: Record<string, unknown> = { events: E, users: U, partitions: P, leaseMs };
    try {
      const throughput: {
        mode: string; perSec: number; cores: Record<string, number>; mainCores: number[]; engine: Record<keyof typeof SCRAPED, number>;
        servers: { inMsgs: number; outMsgs: number; inBytes: number; outBytes: number; routeInMsgs: number; routeInBytes: number }; cpuUsPerEvent: number; changelogRecords?: number;
      }[] = [];
      const modes = String(ctx.flags.modes ?? "single,1,2,3").split(",").map((m) => m.trim());
      for (const m of modes) if (!/^(single|[123])(-r1)?$/.test(m)) throw new Error(`bench cluster: --modes ${m}: single, 1, 2, 3, or one of them with -r1`);
      for (const mode of modes) {
        const prefix = `bcl${process.pid % 1000}r${++run}`;
        const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: P, requestTimeoutMs: 5000 });
        try {
          const deadline = Date.now() + boundMs;
          const isSingle = mode.startsWith("single");
          const replicas = mode.endsWith("-r1") ? 1 : 3;
          const ids = Array.from({ length: isSingle ? 0 : Number(mode[0]) }, (_, i) => `n${i}`);
          const started = isSingle ? [await start(prefix, undefined, replicas)] : await Promise.all(ids.map((id) => start(prefix, id, replicas)));
          if (isSingle) {
            await until("single engine not answering", deadline, async () => c.getProfile(probes[0]!).then(() => true, (err: unknown) => err instanceof PortraitError && err.code === "UNKNOWN_USER"));
          } else {
            await served(c, ids, deadline);
          }
          const pids: Record<string, number> = Object.fromEntries([...started.map((n) => [`engine ${n.id}`, n.proc.pid!]), ...nats.nodes.map((s, i) => [`nats-server ${i}`, s.pid])]);
          const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procTicks(pid)]));
          // The engines' main threads (tid = pid): the NATS client, batching, deflate of changelog writes; the rest is shards and workers.
          const mainBefore = started.map((n) => procTicks(n.proc.pid!, n.proc.pid!));
          const scrapedBefore = await Promise.all(started.map((n) => scrape(n.httpPort)));
          const varzBefore = await Promise.all(nats.nodes.map((s) => varz(s.monitorUrl)));
          // Messages by kind (the subject's first tokens, numbers and ids folded), when asked for.
          const kinds = new Map<string, number>();
          const sub = ctx.flags["count-subjects"] === "1" ? c.nc.subscribe(">", {
            callback: (_e, m) => {
              const k = m.subject.split(".").slice(0, 4).map((t) => /\d/.test(t) ? "#" : t).join(".");
              kinds.set(k, (kinds.get(k) ?? 0) + 1);
            },
          }) : undefined;
          const t0 = performance.now();
          await publish(c.nc, prefix);
          await until(`${mode}: events not all applied`, deadline, () => drained(c.nc, c.subjects.eventStream));
          const secs = (performance.now() - t0) / 1000;
          sub?.unsubscribe();
          if (sub !== undefined) ctx.log(`${mode}: messages per event by kind: ${[...kinds].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${(n / E).toFixed(3)}`).join(", ")}`);
          const cores = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, (procTicks(pid) - before[k]!) / CLK_TCK / secs]));
          const mainCores = started.map((n, i) => (procTicks(n.proc.pid!, n.proc.pid!) - mainBefore[i]!) / CLK_TCK / secs);
          const scrapedAfter = await Promise.all(started.map((n) => scrape(n.httpPort)));
          const varzAfter = await Promise.all(nats.nodes.map((s) => varz(s.monitorUrl)));
          const engine = {} as Record<keyof typeof SCRAPED, number>;
          for (const k of Object.keys(SCRAPED) as (keyof typeof SCRAPED)[]) engine[k] = scrapedAfter.reduce((a, x, i) => a + x[k] - scrapedBefore[i]![k], 0);
          const servers = { inMsgs: 0, outMsgs: 0, inBytes: 0, outBytes: 0, routeInMsgs: 0, routeInBytes: 0 };
          for (const k of Object.keys(servers) as (keyof typeof servers)[]) servers[k] = varzAfter.reduce((a, x, i) => a + x[k] - varzBefore[i]![k], 0);
          // Changelog messages written (each stream's last sequence: writes, records and marks, purged or not), per event.
          let changelogRecords: number | undefined;
          if (!isSingle) {
            const jsm = await c.nc.jetstreamManager();
            changelogRecords = 0;
            for (let p = 0; p < P; p++) changelogRecords += (await jsm.streams.info(changelogStream(prefix, p))).state.last_seq;
          }
          const cpuUsPerEvent = Object.values(cores).reduce((a, v) => a + v, 0) * secs / E * 1e6;
          throughput.push({ mode, perSec: E / secs, cores, mainCores, engine, servers, cpuUsPerEvent, ...(changelogRecords !== undefined ? { changelogRecords } : {}) });
          ctx.log(`${mode}: ${(E / secs).toFixed(0)} events/s, CPU ${cpuUsPerEvent.toFixed(0)} µs/event (engines ${Object.entries(cores).filter(([k]) => k.startsWith("engine")).map(([, v]) => v.toFixed(2)).join("+")}, main threads ${mainCores.map((v) => v.toFixed(2)).join("+")}; ` +
            `nats ${Object.entries(cores).filter(([k]) => k.startsWith("nats")).map(([, v]) => v.toFixed(2)).join("+")}), ` +
            `batches ${engine.batches} of ${(engine.batchMessages / Math.max(1, engine.batches)).toFixed(1)} msgs, batch wait ${(1000 * engine.batchSeconds / Math.max(1, engine.batches)).toFixed(1)} ms, apply ${(1000 * engine.applySeconds / Math.max(1, engine.batches)).toFixed(1)} ms; ` +
            `changelog ${(engine.changelogBytes / E).toFixed(0)} B/event, ${(engine.changelogRecords / E).toFixed(2)} states/event, wait ${(1000 * engine.changelogWaitSeconds / Math.max(1, engine.changelogWaits)).toFixed(1)} ms; ` +
            `nats-servers in ${(servers.inMsgs / E).toFixed(1)} msgs/event ${(servers.inBytes / E).toFixed(0)} B/event (of which routes ${(servers.routeInMsgs / E).toFixed(1)} msgs, ${(servers.routeInBytes / E).toFixed(0)} B), out ${(servers.outMsgs / E).toFixed(1)} msgs/event ${(servers.outBytes / E).toFixed(0)} B/event`);
          await Promise.all(started.map((n) => stop(n, "SIGTERM")));
        } finally {
          await c.close();
        }
      }
      raw.throughput = throughput;
      // Each run against the engine without --cluster on streams of the same replicas.
      const singleOf = (mode: string) => throughput.find((t) => t.mode === (mode.endsWith("-r1") ? "single-r1" : "single"))?.perSec ?? NaN;
      for (const t of throughput) {
        const engines = Object.entries(t.cores).filter(([k]) => k.startsWith("engine"));
        const servers = Object.entries(t.cores).filter(([k]) => k.startsWith("nats"));
        const isSingle = t.mode.startsWith("single");
        const n = isSingle ? 1 : Number(t.mode[0]);
        const batches = Math.max(1, t.engine.batches);
        rows.push([
          `${isSingle ? "1 engine, no --cluster (no changelog)" : `${n} engine node${n === 1 ? "" : "s"}, --cluster`}${t.mode.endsWith("-r1") ? ", R1 streams" : ""}`,
          `${f0(t.perSec)} events/s`, isSingle ? "" : `${f0(t.perSec / n)} per node`, (t.perSec / singleOf(t.mode)).toFixed(2),
          `engines ${engines.map(([, v]) => v.toFixed(2)).join(" + ")}; nats-servers ${servers.map(([, v]) => v.toFixed(2)).join(" + ")}`,
          f0(t.cpuUsPerEvent),
          `${f0(t.engine.batchMessages / batches)}; ${(t.engine.changelogWaits === 0 ? 0 : 1000 * t.engine.changelogWaitSeconds / t.engine.changelogWaits).toFixed(0)} ms`,
          t.changelogRecords === undefined ? "" : `${(t.changelogRecords / E).toFixed(3)}; ${f0(t.engine.changelogBytes / E)} B`,
          `${(t.servers.inMsgs / E).toFixed(1)} (routes ${(t.servers.routeInMsgs / E).toFixed(1)}); ${f0(t.servers.inBytes / E)} B`,
        ]);
      }

      // Takeover after SIGKILL, on three nodes with events flowing (skipped with --kills 0).
      const prefix = `bcl${process.pid % 1000}k`;
      const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: P, requestTimeoutMs: 5000 });
      const takeovers: number[] = [];
      try {
        if (K > 0) {
          const live = new Map<string, Node>(await Promise.all(["a", "b", "c"].map(async (id) => [id, await start(prefix, id)] as const)));
          await served(c, [...live.keys()], Date.now() + boundMs);
          for (let k = 0; k < K; k++) {
            const deadline = Date.now() + boundMs;
            await publish(c.nc, `${prefix}x${k}`).catch(() => undefined);
            const st = await clusterStatus(c.nc, c.subjects);
            const counts = new Map<string, number>();
            for (const p of st.partitions) counts.set(p.node, (counts.get(p.node) ?? 0) + 1);
            const victim = [...counts].sort((x, y) => y[1] - x[1])[0]![0];
            const t0 = performance.now();
            await stop(live.get(victim)!, "SIGKILL");
            live.delete(victim);
            await served(c, [...live.keys()], deadline);
            takeovers.push((performance.now() - t0) / 1000);
            ctx.log(`kill ${k + 1}: partitions served again after ${takeovers[k]!.toFixed(2)} s`);
            const id = `r${k}`;
            live.set(id, await start(prefix, id));
            await served(c, [...live.keys()], deadline);
          }
          await Promise.all([...live.values()].map((n) => stop(n, "SIGTERM")));
        }
      } finally {
        await c.close();
      }
      raw.takeoverSeconds = takeovers;
      const sorted = [...takeovers].sort((x, y) => x - y);
      if (sorted.length > 0) {
        rows.push([`takeover after SIGKILL (kill to all its partitions answering), ${sorted.length} kills`, `p50 ${f1(sorted[Math.floor((sorted.length - 1) / 2)]!)} s, max ${f1(sorted[sorted.length - 1]!)} s`, "", "", `lease ${leaseMs} ms`, "", "", "", ""]);
      }
      return {
        title: "cluster",
        header: ["run", "rate", "per node", "ratio to no --cluster (same replicas)", "CPU cores (engines; nats-servers)", "CPU µs per event (all processes)", "events per batch; changelog wait",
          "changelog messages; bytes per event", "messages into the nats-servers per event (of them from routes); bytes"],
        rows,
        notes: [
          `${E} VIEW events over ${U} users and ${P} partitions per run, published at full speed (core publish with Nats-Msg-Id) into the events stream of a 3-node nats-server cluster on this machine; the rate is events over the time from the first publish to every partition's consumer having nothing pending or unacknowledged.`,
          "Streams: R3 (the README's recipe), or R1 where the run says so; each run's ratio is to the engine without --cluster on streams of the same replicas. So the changelog's cost is the 1-node cluster against the engine without --cluster; a run on R3 against the same on R1 is the cost of replicating the events stream and its consumers three times.",
          "Engines: --workers 1, LSTM and churn on (the bundled models), DeepFM off; every process on the same 2 cores, so the rates are CPU-bound and the split says where the CPU goes. CPU µs per event: all engines' and nats-servers' CPU time over the events.",
          "Events per batch: the engines' portrait_ingest_batch_size_messages; changelog wait: portrait_changelog_append_seconds (LMDB commit to the write stored: what the acknowledgement waits for), mean. Changelog messages per event: the changelog streams' last sequences (writes, compaction records, marks); bytes: portrait_changelog_bytes_total (writes as stored, deflated, once: the servers keep three copies in R3). Messages into the nats-servers: /varz in_msgs summed over the three servers (clients and routes; routes from /routez: Raft replication and forwarded client messages).",
        ],
        raw,
      };
    } finally {
      await Promise.all(nodes.map((n) => stop(n, "SIGKILL")));
      await nats.stop();
    }
  },
};
