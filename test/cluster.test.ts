/**
 * Cluster mode (README "Scale-out") on a real 3-node nats-server cluster with
 * R3 streams, and 3 engine nodes as child processes of the built CLI
 * (dist/cli/portrait.js, so `npm run build` first; npm test does). Each test
 * has its own prefix; the NATS cluster is shared by the file. Counts are
 * compared with a reference computed from the published events.
 */
import { spawn } from "node:child_process";
import { AckPolicy, DeliverPolicy } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { changelogStream } from "../src/bus/changelog.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { clusterStatus, type ClusterStatus } from "../src/cluster/cluster-status.js";
import { PortraitError } from "../src/errors.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { partitionOf } from "../src/wire/partition.js";
import { T0, countByUser, expectExactCounts, removeDir, uniquePrefix, type ChildEngine } from "./helpers/engine.js";
import { startTestNatsCluster, type TestNatsCluster } from "./helpers/nats-cluster.js";
import { readStream, tmpDir, waitFor } from "./helpers/nats.js";

const PARTITIONS = 6;
const LEASE_MS = 2000;
/** A user id in each partition, never published: a query of it is answered UNKNOWN_USER by the partition's owner. */
const PROBES = Array.from({ length: PARTITIONS }, (_, p) => {
  for (let i = 0; ; i++) if (partitionOf(`__probe__${i}`, PARTITIONS) === p) return `__probe__${i}`;
});

let cluster: TestNatsCluster;
const children: ChildEngine[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  cluster = await startTestNatsCluster(3);
}, 60_000);

afterAll(async () => {
  for (const c of children) {
    if (c.proc.signalCode === "SIGSTOP") c.proc.kill("SIGCONT");
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  }
  await Promise.all(children.map((c) => c.exited));
  dirs.forEach(removeDir);
  await cluster?.stop();
});

/** `portrait start --cluster` of the built CLI in a child process. */
function startNode(prefix: string, node: string, extra: string[] = []): ChildEngine {
  const dataDir = tmpDir(`portrait-cl-${node}`);
  dirs.push(dataDir);
  const proc = spawn(process.execPath, ["dist/cli/portrait.js", "start",
    "--nats", cluster.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
    "--partitions", String(PARTITIONS), "--workers", "1", "--http-port", "-1", "--log-level", "warn", "--max-batch", "32",
    "--no-model-registry", "--deepfm", "off", "--inference-workers", "1",
    "--cluster", "--node-id", node, "--lease-ms", String(LEASE_MS), "--replicas", "3", ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  const c: ChildEngine = { proc, exited, output: () => out };
  children.push(c);
  return c;
}

/** Users' purchases with amounts: the money each user spent is a second reference beside the counts. */
function events(prefix: string, users: number, perUser: number): IEvent[] {
  const out: IEvent[] = [];
  for (let k = 0; k < perUser; k++) {
    for (let u = 0; u < users; u++) {
      const buy = k % 5 === 4;
      out.push({
        eventId: `${prefix}-u${u}-e${k}`, userId: `${prefix}-u${u}`, type: buy ? EventType.PURCHASE : EventType.VIEW,
        timestampMs: T0 + k * 1000, itemId: `i${k}`, categoryId: `c${k % 3}`, ...(buy ? { price: 1 + (u % 7), quantity: 1 } : {}),
      });
    }
  }
  return out;
}

/**
 * Waits until every partition is leased to one of `nodes`, balanced (at most
 * ceil(P/N) each, every node some), and a query of each partition has been
 * answered by its owner (UNKNOWN_USER for a probe user, not UNAVAILABLE) since
 * the leases looked so.
 */
async function waitServed(c: PortraitClient, nodes: string[], what: string): Promise<ClusterStatus> {
  let st: ClusterStatus | undefined;
  let probe = "";
  const answered = new Set<number>();
  await waitFor(async () => {
    st = await clusterStatus(c.nc, c.subjects);
    const owned = ownerCounts(st);
    if (st.partitions.length < PARTITIONS || !st.partitions.every((p) => nodes.includes(p.node)) ||
      nodes.some((n) => (owned.get(n) ?? 0) === 0 || owned.get(n)! > Math.ceil(PARTITIONS / nodes.length))) {
      answered.clear();
      return false;
    }
    for (let p = 0; p < PARTITIONS; p++) {
      if (answered.has(p)) continue;
      try {
        await c.getProfile(PROBES[p]!);
      } catch (err) {
        if (!(err instanceof PortraitError && err.code === "UNKNOWN_USER")) {
          probe = `partition ${p}: ${(err as Error).message}`;
          continue;
        }
      }
      answered.add(p);
    }
    return answered.size === PARTITIONS;
  }, { timeoutMs: 60_000, intervalMs: 200, message: `${what}: partitions not served by ${nodes.join(", ")}` }).catch((err: unknown) => {
    const logs = children.map((ch, i) => `--- child ${i} ---\n${ch.output().slice(-3000)}`).join("\n");
    throw new Error(`${(err as Error).message}; status ${JSON.stringify(st)}; probe ${probe}\n${logs}`);
  });
  return st!;
}

function ownerCounts(st: ClusterStatus): Map<string, number> {
  const m = new Map<string, number>();
  for (const p of st.partitions) m.set(p.node, (m.get(p.node) ?? 0) + 1);
  return m;
}

async function spentByUser(c: PortraitClient, evs: IEvent[]): Promise<void> {
  const want = new Map<string, number>();
  for (const e of evs) if (e.type === EventType.PURCHASE) want.set(e.userId!, (want.get(e.userId!) ?? 0) + e.price! * e.quantity!);
  for (const [u, money] of want) {
    // UNAVAILABLE (a partition moving) is retried as its hint says; anything else fails.
    const p = await waitFor(() => c.getProfile(u).catch((err: unknown) => {
      if (err instanceof PortraitError && err.code === "UNAVAILABLE") return undefined;
      throw err;
    }), { timeoutMs: 30_000, intervalMs: 100, message: `profile of ${u}` });
    expect(p!.rfm.monetary, `money of ${u}`).toBeCloseTo(money, 6);
  }
}

describe("cluster - failover", { timeout: 180_000 }, () => {
  it("cluster - SIGKILL of a node mid-stream, then of its successor: 0 lost, 0 applied twice; queries meanwhile get the owner's answer or a typed error (UNAVAILABLE, OVERLOADED)", async () => {
    const prefix = uniquePrefix("clkill");
    const c = await PortraitClient.connect({ natsUrl: cluster.url, subjectPrefix: prefix, partitions: PARTITIONS, requestTimeoutMs: 5000 });
    try {
      const nodes = { a: startNode(prefix, "a"), b: startNode(prefix, "b"), n3: startNode(prefix, "c") };
      await waitServed(c, ["a", "b", "c"], "start");

      const evs = events(prefix, 60, 30);
      const watched = Array.from({ length: 12 }, (_, u) => `${prefix}-u${u}`);
      // Queries all along: each answer's count never goes back (no stale profile), errors are only the typed UNAVAILABLE.
      const seen = new Map<string, number>();
      let unavailable = 0;
      let timeouts = 0;
      let overloaded = 0;
      let answers = 0;
      let querying = true;
      const wrong: string[] = [];
      const queries = (async () => {
        while (querying) {
          for (const u of watched) {
            try {
              const n = (await c.getProfile(u)).eventsApplied;
              answers++;
              if (n < (seen.get(u) ?? 0)) wrong.push(`${u}: ${n} after ${seen.get(u)}`);
              seen.set(u, n);
            } catch (err) {
              const code = err instanceof PortraitError ? err.code : String(err);
              if (code === "UNAVAILABLE") unavailable++;
              // The engine's own load shedding (a shard busy on a loaded machine): typed and retryable, no data.
              else if (code === "OVERLOADED") overloaded++;
              // A query taken by a node at the moment it is SIGKILLed dies with it (no reply, never a wrong one): at most one per kill here.
              else if (code === "TIMEOUT") timeouts++;
              else if (code === "UNKNOWN_USER" && !seen.has(u)) continue;
              else wrong.push(`${u}: ${code} ${(err as Error).message}`);
            }
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })();

      const publishing = c.publishMany(evs);
      // Kill "a" once it has applied something of the stream.
      await waitFor(async () => (await c.getProfile(`${prefix}-u0`).then((p) => p.eventsApplied, () => 0)) > 0, { timeoutMs: 60_000, message: "nothing applied" });
      const st1 = await clusterStatus(c.nc, c.subjects);
      const victim = [...ownerCounts(st1)].sort((x, y) => y[1] - x[1])[0]![0];
      const procs: Record<string, ChildEngine> = { a: nodes.a, b: nodes.b, c: nodes.n3 };
      const lostParts = st1.partitions.filter((p) => p.node === victim).map((p) => p.partition);
      procs[victim]!.proc.kill("SIGKILL");
      expect((await procs[victim]!.exited).signal).toBe("SIGKILL");
      const rest = ["a", "b", "c"].filter((n) => n !== victim);
      const st2 = await waitServed(c, rest, "after the first kill");
      // The successor: the node that took the first of the victim's partitions; killed in turn once it serves them.
      const successor = st2.partitions.find((p) => p.partition === lostParts[0])!.node;
      procs[successor]!.proc.kill("SIGKILL");
      expect((await procs[successor]!.exited).signal).toBe("SIGKILL");
      const last = rest.find((n) => n !== successor)!;
      const replacement = startNode(prefix, `${victim}2`);
      await waitServed(c, [last, `${victim}2`], "after the second kill");
      await publishing;
      await expectExactCounts(c, countByUser(evs), 90_000);
      querying = false;
      await queries;
      await spentByUser(c, evs);
      for (let u = 0; u < 60; u += 13) expect((await c.getProfile(`${prefix}-u${u}`)).recentItems[0]).toBe("i29");
      expect(wrong, "stale or wrong answers").toEqual([]);
      expect(answers).toBeGreaterThan(0);
      expect(timeouts, "queries lost with a killed node").toBeLessThanOrEqual(2);
      // The takeovers restored from the changelog: the last node never applied most of these events itself.
      expect(procs[last]!.output() + replacement.output()).not.toMatch(/engine failed/);
      void unavailable;
      void overloaded;
      for (const n of [procs[last]!, replacement]) n.proc.kill("SIGTERM");
      for (const n of [procs[last]!, replacement]) expect((await n.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });

  it("cluster - a node paused past its lease (SIGSTOP, SIGCONT) is fenced: it commits nothing for the partitions it lost, and counts stay exact", async () => {
    const prefix = uniquePrefix("clstop");
    const c = await PortraitClient.connect({ natsUrl: cluster.url, subjectPrefix: prefix, partitions: PARTITIONS, requestTimeoutMs: 5000 });
    try {
      // Models off here (the SIGKILL test restores LSTM state): this test is about fencing, and the machine is small.
      const light = ["--lstm", "off", "--churn", "off", "--propensity", "off", "--sentiment", "off"];
      const procs: Record<string, ChildEngine> = { a: startNode(prefix, "a", light), b: startNode(prefix, "b", light), c: startNode(prefix, "c", light) };
      await waitServed(c, ["a", "b", "c"], "start");
      const evs = events(prefix, 40, 25);
      const publishing = c.publishMany(evs);
      await waitFor(async () => (await c.getProfile(`${prefix}-u0`).then((p) => p.eventsApplied, () => 0)) > 0, { timeoutMs: 60_000, message: "nothing applied" });
      const st1 = await clusterStatus(c.nc, c.subjects);
      const victim = [...ownerCounts(st1)].sort((x, y) => y[1] - x[1])[0]![0];
      const lostParts = st1.partitions.filter((p) => p.node === victim).map((p) => p.partition);
      procs[victim]!.proc.kill("SIGSTOP");
      // Past its lease: the others take its partitions while it sleeps, and events keep flowing to them.
      const others = ["a", "b", "c"].filter((n) => n !== victim);
      await waitServed(c, others, "while paused");
      procs[victim]!.proc.kill("SIGCONT");
      await publishing;
      await expectExactCounts(c, countByUser(evs), 90_000);
      // It joins again: the partitions are balanced over the three once more.
      await waitServed(c, ["a", "b", "c"], "after SIGCONT");
      await expectExactCounts(c, countByUser(evs), 30_000);
      await spentByUser(c, evs);
      // It noticed: fenced for what it lost (logged), and it joined again afterwards (it is alive and heartbeating).
      await waitFor(() => /partition fenced|lease lost/.test(procs[victim]!.output()), { timeoutMs: 30_000, message: "the paused node never noticed it was fenced" });
      // Nothing of it landed in the changelog of a partition it lost after a newer owner wrote there: along each
      // changelog, the lease epochs of the records and marks (in their message ids) never go back.
      const jsm = await c.nc.jetstreamManager();
      const js = c.nc.jetstream();
      for (const p of lostParts) {
        const stream = changelogStream(prefix, p);
        const info = await jsm.streams.info(stream);
        const consumer = await js.consumers.get(stream);
        const msgs = await consumer.consume({ max_messages: 256 });
        const epochs: number[] = [];
        for await (const m of msgs) {
          const id = (m.headers?.get("Nats-Msg-Id") ?? "").split(":");
          epochs.push(Number(id[0] === "mark" ? id[2] : id[1]));
          if (m.seq >= info.state.last_seq) break;
        }
        await msgs.close();
        const back = epochs.findIndex((e, i) => i > 0 && e < epochs[i - 1]!);
        expect(back, `partition ${p}: epochs along its changelog ${epochs.join(",")}`).toBe(-1);
        expect(new Set(epochs).size, `partition ${p} changed owner`).toBeGreaterThan(1);
      }
      for (const n of Object.values(procs)) n.proc.kill("SIGTERM");
      for (const n of Object.values(procs)) expect((await n.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });

  // Two of the cases on one set of engines (the suite's time): the rolling restart, then a NATS node killed under load.
  it("cluster - a rolling restart of every node (SIGTERM, a new node in its place) while events flow, then a NATS node killed and restarted under load: exactly once, and the lag drains", async () => {
    const prefix = uniquePrefix("clroll");
    const c = await PortraitClient.connect({ natsUrl: cluster.url, subjectPrefix: prefix, partitions: PARTITIONS, requestTimeoutMs: 5000 });
    try {
      const light = ["--lstm", "off", "--churn", "off", "--propensity", "off", "--sentiment", "off"];
      const live = new Map<string, ChildEngine>(["a", "b", "c"].map((id) => [id, startNode(prefix, id, light)]));
      await waitServed(c, [...live.keys()], "start");
      const evs = events(prefix, 40, 25);
      const publishing = c.publishMany(evs);
      for (const [old, next] of [["a", "a2"], ["b", "b2"], ["c", "c2"]] as const) {
        const n = live.get(old)!;
        // SIGTERM drains: every handed-over batch committed to the changelog and acknowledged, then the leases released.
        n.proc.kill("SIGTERM");
        expect((await n.exited).code, n.output()).toBe(0);
        live.delete(old);
        live.set(next, startNode(prefix, next, light));
        await waitServed(c, [...live.keys()], `after replacing ${old}`);
      }
      await publishing;
      await expectExactCounts(c, countByUser(evs), 90_000);
      await spentByUser(c, evs);

      // Stray consumers: an earlier owner's (epoch 0, every event of its partition pending) is deleted by the owner's
      // sweep (every 3 lease periods, at least 5 s); a later epoch's (a newer owner's, as a stale node would see it) is
      // left alone by the same pass.
      const jsm0 = await c.nc.jetstreamManager();
      const stray = `${c.subjects.consumer(0)}-gone-e0`;
      const newer = `${c.subjects.consumer(0)}-next-e999999999`;
      for (const name of [stray, newer]) {
        await jsm0.consumers.add(c.subjects.eventStream, { durable_name: name, filter_subject: c.subjects.events(0), ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.All });
      }
      expect((await jsm0.consumers.info(c.subjects.eventStream, stray)).num_pending).toBeGreaterThan(0);
      const names = async () => {
        const out: string[] = [];
        for await (const ci of jsm0.consumers.list(c.subjects.eventStream)) out.push(ci.name);
        return out;
      };
      await waitFor(async () => !(await names()).includes(stray), { timeoutMs: 30_000, intervalMs: 250, message: "the earlier owner's stray consumer was never swept" });
      expect(await names()).toContain(newer);
      await jsm0.consumers.delete(c.subjects.eventStream, newer);

      // Refused in cluster mode with a typed error, not lost at a takeover: audiences (CONFIG), identity and social events (dead letters).
      await expect(c.audienceCreate({ id: "a1", rule: { field: "daysSinceSeen", op: "<", value: 1 } })).rejects.toMatchObject({ code: "CONFIG" });
      await c.publishMany([
        { eventId: `${prefix}-idf`, userId: `${prefix}-u1`, type: EventType.IDENTIFY, primaryUserId: `${prefix}-u2`, timestampMs: T0 + 40_000 },
        { eventId: `${prefix}-fol`, userId: `${prefix}-u1`, type: EventType.FOLLOW, targetUserId: `${prefix}-u3`, timestampMs: T0 + 40_000 },
      ]);
      const dead = await readStream(c.nc, c.subjects.dlqStream, 2);
      expect(dead.map((m) => m.subject).sort()).toEqual([c.subjects.dlq("CLUSTER_UNSUPPORTED"), c.subjects.dlq("CLUSTER_UNSUPPORTED")]);

      // A NATS node killed (SIGKILL) under load and restarted: the one leading the events stream, the harshest choice.
      const jsm = await c.nc.jetstreamManager();
      const leader = (await jsm.streams.info(c.subjects.eventStream)).cluster?.leader ?? "";
      const victim = Math.max(0, cluster.nodes.findIndex((_, i) => leader.endsWith(`-n${i}`)));
      const evs2 = events(`${prefix}-x`, 40, 25);
      // A publish lost with the node (no PubAck) is sent again with the same id: JetStream keeps one.
      const publishing2 = (async () => {
        for (let i = 0; i < evs2.length; i += 50) {
          const chunk = evs2.slice(i, i + 50);
          await waitFor(() => c.publishMany(chunk).then(() => true), { timeoutMs: 60_000, intervalMs: 250, message: `publish of events ${i}..` });
        }
      })();
      await waitFor(async () => (await c.getProfile(`${prefix}-x-u0`).then((p) => p.eventsApplied, () => 0)) > 0, { timeoutMs: 60_000, message: "nothing of the second set applied" });
      cluster.nodes[victim]!.signal("SIGKILL");
      await cluster.nodes[victim]!.exited;
      await new Promise((r) => setTimeout(r, LEASE_MS));
      await cluster.nodes[victim]!.restart();
      await publishing2;
      const want = countByUser(evs);
      for (const [u, n] of countByUser(evs2)) want.set(u, n);
      await expectExactCounts(c, want, 120_000);
      await spentByUser(c, evs2);
      // The lag drains: every partition's consumer has nothing pending or unacknowledged, and every replica of the
      // events stream and of each changelog (the restarted node's too) is current.
      // What held it false last (in the failure message).
      let holding = "";
      await waitFor(async () => {
        for (let p = 0; p < PARTITIONS; p++) {
          const infos = [];
          for await (const ci of jsm.consumers.list(c.subjects.eventStream)) if (ci.config.filter_subject === c.subjects.events(p)) infos.push(ci);
          if (infos.length !== 1 || infos[0]!.num_pending !== 0 || infos[0]!.num_ack_pending !== 0) {
            holding = `partition ${p}: ${infos.length} consumers, pending ${infos[0]?.num_pending}, ack pending ${infos[0]?.num_ack_pending}`;
            return false;
          }
        }
        for (const name of [c.subjects.eventStream, ...Array.from({ length: PARTITIONS }, (_, p) => changelogStream(prefix, p))]) {
          const reps = (await jsm.streams.info(name)).cluster?.replicas ?? [];
          if (reps.length !== 2 || reps.some((r) => !r.current || (r.lag ?? 0) > 0)) {
            holding = `stream ${name}: replicas ${JSON.stringify(reps.map((r) => ({ name: r.name, current: r.current, lag: r.lag, active: r.active })))}`;
            return false;
          }
        }
        return true;
      }, { timeoutMs: 60_000, intervalMs: 500, message: "consumer or replica lag after the NATS node restart" }).catch((err: Error) => {
        throw new Error(`${err.message}; still: ${holding}`, { cause: err });
      });
      expect([...live.values()].map((n) => n.output()).join("\n")).not.toMatch(/engine failed/);
      for (const n of live.values()) n.proc.kill("SIGTERM");
      for (const n of live.values()) expect((await n.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });
});
