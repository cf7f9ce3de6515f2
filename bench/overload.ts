/**
 * Overload: publish at twice the engine's measured apply rate for a bounded
 * time and watch the engine process (a child, so its RSS is its own): memory
 * must stay bounded (consumers pull only what the shards take), queries are
 * answered or refused with OVERLOADED, and the lag drains afterwards.
 *
 *   npx tsx bench/overload.ts [--seconds 30] [--users 50000] [--rate N] [--no-record]
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect, headers } from "nats";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { partitionOf } from "../src/bus/partition.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { pb } from "../src/wire/proto.js";
import { appendResults, printTable, repoRoot } from "./report.js";
import { syntheticEvents } from "./synthetic.js";

const { values: a } = parseArgs({
  options: {
    seconds: { type: "string", default: "30" },
    users: { type: "string", default: "50000" },
    /** Offered events/s; default twice the measured capacity. */
    rate: { type: "string" },
    "no-record": { type: "boolean", default: false },
  },
});
const SECONDS = Number(a.seconds);
const P = 8;
const prefix = "ovl";
const s = subjects(prefix);
const log = (m: string) => process.stderr.write(`[overload] ${m}\n`);

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), "portrait-overload-"));
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const proc = spawn(process.execPath, ["--import", "tsx", join(repoRoot(), "src", "cli", "portrait.ts"), "start", "--nats", server.url,
    "--embedded-nats", "never", "--data-dir", join(work, "engine"), "--prefix", prefix, "--partitions", String(P), "--http-port", "-1",
    "--log-level", "warn"], { stdio: ["ignore", "inherit", "inherit"] });
  const client = new PortraitClient(nc, { subjectPrefix: prefix, partitions: P, requestTimeoutMs: 2000 });
  const jsm = await nc.jetstreamManager();
  const events = syntheticEvents(10_000_000, { users: Number(a.users), seed: 11 });
  let published = 0;
  const publish = (n: number) => {
    for (let i = 0; i < n; i++) {
      const e = events.next().value!;
      const h = headers();
      h.set("Nats-Msg-Id", e.eventId!);
      nc.publish(s.events(partitionOf(e.userId!, P)), pb.Event.encode(e).finish(), { headers: h });
      published++;
    }
  };
  const applied = async () => {
    let pending = 0;
    for (let p = 0; p < P; p++) {
      try {
        const ci = await jsm.consumers.info(s.eventStream, s.consumer(p));
        pending += ci.num_pending + ci.num_ack_pending;
      } catch {
        return { ready: false, pending: Infinity };
      }
    }
    return { ready: true, pending };
  };
  try {
    for (let t = Date.now(); !(await applied()).ready; ) {
      if (Date.now() - t > 60_000) throw new Error("engine did not start");
      await new Promise((r) => setTimeout(r, 200));
    }
    const rss0 = rssMiB(proc.pid!);
    // Capacity: a 5-second burst published as fast as possible, measured by what the engine acknowledged.
    publish(150_000);
    await nc.flush();
    const c0 = Date.now();
    await new Promise((r) => setTimeout(r, 5000));
    const capacity = (published - (await applied()).pending) / ((Date.now() - c0) / 1000);
    for (let t = Date.now(); (await applied()).pending > 0 && Date.now() - t < 120_000; ) await new Promise((r) => setTimeout(r, 200));
    log(`capacity ~${capacity.toFixed(0)} events/s`);

    // Overload: 2x capacity, open loop, for SECONDS; sample RSS, lag and queries each second.
    const rate = a.rate !== undefined ? Number(a.rate) : 2 * capacity;
    const start = Date.now();
    let maxRss = 0, maxPending = 0, answered = 0, overloaded = 0, other = 0;
    const samples: number[] = [];
    while (Date.now() - start < SECONDS * 1000) {
      const due = Math.floor(((Date.now() - start) / 1000) * rate) - (published - 150_000);
      if (due > 0) publish(Math.min(due, 20_000));
      await nc.flush();
      if (samples.length < Math.floor((Date.now() - start) / 1000)) {
        const r = rssMiB(proc.pid!);
        samples.push(r);
        maxRss = Math.max(maxRss, r);
        maxPending = Math.max(maxPending, (await applied()).pending);
        const q = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => client.getProfile(`u${i + 1}`)));
        for (const x of q) {
          if (x.status === "fulfilled") answered++;
          else if (x.reason instanceof PortraitError && x.reason.code === "OVERLOADED") overloaded++;
          else other++;
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const overloadEnd = Date.now();
    for (; (await applied()).pending > 0 && Date.now() - overloadEnd < 300_000; ) await new Promise((r) => setTimeout(r, 500));
    const drainS = (Date.now() - overloadEnd) / 1000;
    const lagEnd = (await applied()).pending;
    const half = samples.slice(Math.floor(samples.length / 2));
    const rows = [
      ["engine apply capacity (measured burst)", `${capacity.toFixed(0)} events/s`],
      ["offered during overload", `${rate.toFixed(0)} events/s for ${SECONDS} s (${published - 150_000} events published)`],
      ["largest backlog waiting in the broker", String(maxPending)],
      ["engine RSS: idle / max / mean of the second half", `${rss0.toFixed(0)} / ${maxRss.toFixed(0)} / ${(half.reduce((x, y) => x + y, 0) / Math.max(1, half.length)).toFixed(0)} MiB`],
      ["profile queries answered / OVERLOADED / other errors", `${answered} / ${overloaded} / ${other}`],
      ["lag after the overload: drained in / left", `${drainS.toFixed(0)} s / ${lagEnd}`],
    ];
    printTable(a.rate !== undefined ? `overload at ${a.rate} events/s` : "overload at 2x capacity", ["measure", "value"], rows);
    if (!a["no-record"]) appendResults(a.rate !== undefined ? `overload at ${a.rate} events/s` : "overload at 2x capacity", `npx tsx bench/overload.ts --seconds ${SECONDS} --users ${a.users}${a.rate !== undefined ? ` --rate ${a.rate}` : ""}`, ["measure", "value"], rows,
      [`RSS per second during the overload (MiB): ${samples.map((x) => x.toFixed(0)).join(" ")}`]);
  } finally {
    proc.kill("SIGTERM");
    await new Promise((r) => proc.once("exit", r));
    await nc.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
