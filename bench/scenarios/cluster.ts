/**
 * cluster: cluster mode (README "Scale-out") on a 3-node nats-server cluster
 * with R3 streams, engines as child processes of the CLI. Measures
 *  - live throughput with 1, 2 and 3 engine nodes (`--cluster`), and one
 *    engine without `--cluster` on the same R3 streams: the changelog's cost
 *    is the single engine against the 1-node cluster; each node's rate and
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
    const start = (prefix: string, id: string | undefined): Node => {
      const dir = mkdtempSync(join(tmpdir(), "portrait-bench-cluster-"));
      const args = [...(self.endsWith(".ts") ? ["--import", "tsx"] : []), CLI, "start", "--nats", nats.url, "--embedded-nats", "never", "--data-dir", dir,
        "--prefix", prefix, "--partitions", String(P), "--workers", "1", "--http-port", "-1", "--log-level", "warn", "--no-model-registry",
        "--deepfm", "off", "--inference-workers", "1", "--replicas", "3",
        ...(id !== undefined ? ["--cluster", "--node-id", id, "--lease-ms", String(leaseMs)] : [])];
      const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      proc.stdout!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
      proc.stderr!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
      const n = { id: id ?? "single", proc, dir, out: () => out };
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
      const throughput: { mode: string; perSec: number; cores: Record<string, number>; changelogRecords?: number }[] = [];
      for (const mode of ["single", "1", "2", "3"]) {
        const prefix = `bcl${process.pid % 1000}r${++run}`;
        const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: P, requestTimeoutMs: 5000 });
        try {
          const deadline = Date.now() + boundMs;
          const ids = mode === "single" ? [] : Array.from({ length: Number(mode) }, (_, i) => `n${i}`);
          const started = mode === "single" ? [start(prefix, undefined)] : ids.map((id) => start(prefix, id));
          if (mode === "single") {
            await until("single engine not answering", deadline, async () => c.getProfile(probes[0]!).then(() => true, (err: unknown) => err instanceof PortraitError && err.code === "UNKNOWN_USER"));
          } else {
            await served(c, ids, deadline);
          }
          const pids: Record<string, number> = Object.fromEntries([...started.map((n) => [`engine ${n.id}`, n.proc.pid!]), ...nats.nodes.map((s, i) => [`nats-server ${i}`, s.pid])]);
          const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procTicks(pid)]));
          const t0 = performance.now();
          await publish(c.nc, prefix);
          await until(`${mode}: events not all applied`, deadline, () => drained(c.nc, c.subjects.eventStream));
          const secs = (performance.now() - t0) / 1000;
          const cores = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, (procTicks(pid) - before[k]!) / CLK_TCK / secs]));
          // Changelog messages written (each stream's last sequence: writes, records and marks, purged or not), per event.
          let changelogRecords: number | undefined;
          if (mode !== "single") {
            const jsm = await c.nc.jetstreamManager();
            changelogRecords = 0;
            for (let p = 0; p < P; p++) changelogRecords += (await jsm.streams.info(changelogStream(prefix, p))).state.last_seq;
          }
          throughput.push({ mode, perSec: E / secs, cores, ...(changelogRecords !== undefined ? { changelogRecords } : {}) });
          ctx.log(`${mode}: ${(E / secs).toFixed(0)} events/s`);
          await Promise.all(started.map((n) => stop(n, "SIGTERM")));
        } finally {
          await c.close();
        }
      }
      raw.throughput = throughput;
      const single = throughput[0]!.perSec;
      for (const t of throughput) {
        const engines = Object.entries(t.cores).filter(([k]) => k.startsWith("engine"));
        const servers = Object.entries(t.cores).filter(([k]) => k.startsWith("nats"));
        rows.push([
          t.mode === "single" ? "1 engine, no --cluster (no changelog)" : `${t.mode} engine node${t.mode === "1" ? "" : "s"}, --cluster`,
          `${f0(t.perSec)} events/s`, t.mode === "single" ? "" : `${f0(t.perSec / Number(t.mode))} per node`, (t.perSec / single).toFixed(2),
          `engines ${engines.map(([, v]) => v.toFixed(2)).join(" + ")}; nats-servers ${servers.map(([, v]) => v.toFixed(2)).join(" + ")}`,
          t.changelogRecords === undefined ? "" : (t.changelogRecords / E).toFixed(2),
        ]);
      }

      // Takeover after SIGKILL, on three nodes with events flowing.
      const prefix = `bcl${process.pid % 1000}k`;
      const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: P, requestTimeoutMs: 5000 });
      const takeovers: number[] = [];
      try {
        const live = new Map<string, Node>(["a", "b", "c"].map((id) => [id, start(prefix, id)]));
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
          live.set(id, start(prefix, id));
          await served(c, [...live.keys()], deadline);
        }
        await Promise.all([...live.values()].map((n) => stop(n, "SIGTERM")));
      } finally {
        await c.close();
      }
      raw.takeoverSeconds = takeovers;
      const sorted = [...takeovers].sort((x, y) => x - y);
      if (sorted.length > 0) {
        rows.push([`takeover after SIGKILL (kill to all its partitions answering), ${sorted.length} kills`, `p50 ${f1(sorted[Math.floor((sorted.length - 1) / 2)]!)} s, max ${f1(sorted[sorted.length - 1]!)} s`, "", "", `lease ${leaseMs} ms`, ""]);
      }
      return {
        title: "cluster",
        header: ["run", "rate", "per node", "ratio to no --cluster", "CPU cores (engines; nats-servers)", "changelog messages per event"],
        rows,
        notes: [
          `${E} VIEW events over ${U} users and ${P} partitions per run, published at full speed (core publish with Nats-Msg-Id) into an R3 stream of a 3-node nats-server cluster on this machine; the rate is events over the time from the first publish to every partition's consumer having nothing pending or unacknowledged.`,
          "Engines: --workers 1, LSTM and churn on (the bundled models), DeepFM off, --replicas 3; every process on the same 2 cores, so the rates are CPU-bound and the split says where the CPU goes.",
          "The changelog's cost is the 1-node cluster against the engine without --cluster on the same streams: per changelog write (group commit: the batches committed while the previous write was in flight), one raw-deflated message holding each changed user's state once, stored R3, one PubAck, waited for before the acknowledgement; plus the compactions' per-user records. Changelog messages per event: the changelog streams' last sequences (writes, compaction records, marks) over the events.",
        ],
        raw,
      };
    } finally {
      await Promise.all(nodes.map((n) => stop(n, "SIGKILL")));
      await nats.stop();
    }
  },
};
