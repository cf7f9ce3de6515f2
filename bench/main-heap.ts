/**
 * Main-thread heap per request: an in-process engine on its own embedded
 * nats-server, a warm state from the calibrated generator, then rounds of
 * recommendations and of profile lookups through the typed client; the heap
 * after a forced GC before and after each round, per request. A flat engine
 * keeps only bounded state per request (the feedback log's served replies,
 * README "The feedback loop"), so the figure is the bounded record's size
 * until that bound, and 0 after it.
 *
 * This is how the worker-call leak was found (every reply of a worker thread
 * stayed on the heap: 76 KiB per recommendation); it guards against the next.
 *
 *   node --expose-gc dist-bench/bench/main-heap.js [--events 20000] [--users 2000] [--requests 3000] [--record]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { generateEvents } from "./generator.js";
import { appendResults, printTable } from "./report.js";
import { freePort } from "../src/bus/server-process.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "20000" },
    users: { type: "string", default: "2000" },
    requests: { type: "string", default: "3000" },
    record: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});

async function main(): Promise<void> {
  if (a.help) {
    process.stdout.write("usage: node --expose-gc dist-bench/bench/main-heap.js [--events N] [--users N] [--requests N] [--record]\n");
    return;
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with node --expose-gc");
  const events = Number(a.events);
  const requests = Number(a.requests);
  const dir = mkdtempSync(join(tmpdir(), "portrait-main-heap-"));
  const natsUrl = `nats://127.0.0.1:${await freePort()}`;
  const engine = await Engine.start({ dataDir: dir, natsUrl, embeddedNats: "always", httpPort: -1, logLevel: "warn", partitions: 4, subjectPrefix: "heap" });
  const client = await PortraitClient.connect({ natsUrl, subjectPrefix: "heap", partitions: 4 });
  try {
    const evs = [...generateEvents(events, { users: Number(a.users), seed: 3 })];
    await client.publishMany(evs);
    const users = [...new Set(evs.map((e) => String(e.userId)))];
    const applied = async () => engine.metrics.total(engine.metrics.eventsApplied);
    for (const t0 = Date.now(); (await applied()) < evs.length && Date.now() - t0 < 120_000;) await new Promise((r) => setTimeout(r, 100));
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const run = async (n: number, ask: (user: string) => Promise<unknown>) => {
      for (let i = 0; i < n; i += 20) await Promise.all(users.slice(i % (users.length - 20), (i % (users.length - 20)) + 20).map((u) => ask(u).catch(() => undefined)));
    };
    const rec = (u: string) => client.recommend(u, { k: 10 });
    const prof = (u: string) => client.getProfile(u);
    await run(500, rec);
    await run(500, prof);
    const rows: string[][] = [];
    for (const [name, ask] of [["recommend (k 10, 200 candidates)", rec], ["profile lookup", prof]] as const) {
      for (let round = 1; round <= 2; round++) {
        const h0 = heap();
        await run(requests, ask);
        const h1 = heap();
        rows.push([name, String(round), String(requests), ((h0) / 2 ** 20).toFixed(1), ((h1 - h0) / requests / 1024).toFixed(2)]);
      }
    }
    const header = ["requests", "round", "count", "heap before MiB", "heap growth KiB/request"];
    const title = "Main-thread heap per request, in-process engine";
    printTable(title, header, rows);
    if (a.record) {
      appendResults(title, `node --expose-gc dist-bench/bench/main-heap.js --events ${events} --users ${a.users} --requests ${requests}`, header, rows,
        ["- The engine and the client share the process; heap after two forced GCs. Recommendations keep one served-reply record each in the feedback log until its bound (20,000 replies, README \"The feedback loop\"); profile lookups keep nothing."]);
    }
  } finally {
    await client.close();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
