/**
 * What an operator meets first: one engine per data dir, and replays that
 * cannot lose real events (content ids, plain or gzip or stdin input, an
 * interrupted replay that says where to resume).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createReadStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { formatProfile } from "../src/cli/print-profile.js";
import { progress } from "../src/cli/progress.js";
import { replay } from "../src/cli/replay.js";
import { EventType } from "../src/wire/proto.js";
import { freePort } from "../src/bus/server-process.js";
import { Engine } from "../src/engine.js";
import { ErrorCode } from "../src/errors.js";
import { removeDir, spawnEngine, startTestEngine, uniquePrefix, waitForEngine } from "./helpers/engine.js";
import { startTestNats, tmpDir, waitFor } from "./helpers/nats.js";

let nats: NatsServerHandle;
const engines: Engine[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  nats = await startTestNats();
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
  await nats?.stop();
  dirs.forEach(removeDir);
});

function dir(name: string): string {
  const d = tmpDir(`portrait-${name}`);
  dirs.push(d);
  return d;
}

/** Taobao rows (user,item,category,behavior,seconds) for `users` users, `n` rows in all. */
function taobaoRows(tag: string, users: number, n: number): string {
  const rows: string[] = [];
  for (let i = 0; i < n; i++) rows.push(`${tag}${i % users},${1000 + i},${i % 7},pv,${1511658000 + i}`);
  return rows.join("\n") + "\n";
}

describe("operator - one engine per data dir", () => {
  it("operator - a second engine on a data dir in use is refused with CONFIG naming the first; once it stops the dir is free", async () => {
    const dataDir = dir("lock");
    const prefix = uniquePrefix("lock");
    const first = await startTestEngine(nats.url, { dataDir, subjectPrefix: prefix });
    engines.push(first);
    const second = startTestEngine(nats.url, { dataDir, subjectPrefix: prefix });
    await expect(second).rejects.toMatchObject({
      code: ErrorCode.CONFIG,
      message: expect.stringContaining(`is in use by the engine with pid ${process.pid}`),
    });
    await expect(second).rejects.toMatchObject({ message: expect.stringContaining(nats.url) });
    await first.close();
    const third = await startTestEngine(nats.url, { dataDir, subjectPrefix: prefix });
    engines.push(third);
    expect(third.ready).toBe(true);
    await third.close();
  });
});

describe("operator - logs and metrics", { timeout: 120_000 }, () => {
  it("operator - a log line names its component once; no gauge is named *_total; the watermark is in seconds", async () => {
    const prefix = uniquePrefix("logs");
    const dataDir = dir("logs");
    const child = spawnEngine(["--nats", nats.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
      "--partitions", "4", "--workers", "2", "--http-port", "0", "--log-level", "info"]);
    const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      await waitForEngine(c, child);
      // A dead letter makes the partition consumer log (component "consumer", a child of the engine's logger).
      await c.nc.jetstream().publish(`${prefix}.events.0`, new Uint8Array([0xff, 0xff, 0xff]));
      await waitFor(() => child.output().includes("dead-lettered events"), { message: "no dead-letter log line" });
      const lines = child.output().split("\n").filter((l) => l.startsWith("{"));
      for (const l of lines) expect(l.match(/"component":/g)?.length ?? 0, l).toBeLessThanOrEqual(1);
      expect(lines.find((l) => l.includes("dead-lettered events"))).toContain('"component":"consumer"');
      const port = Number(/"metrics":"http:\/\/127\.0\.0\.1:(\d+)\/metrics"/.exec(child.output())![1]);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const gauges = [...text.matchAll(/^# TYPE (\S+) gauge$/gm)].map((m) => m[1]!);
      expect(gauges.length).toBeGreaterThan(10);
      expect(gauges.filter((g) => g.endsWith("_total"))).toEqual([]);
      expect(gauges).toContain("portrait_ingest_event_time_watermark_seconds");
      expect(gauges).toContain("portrait_nodejs_active_handles");
    } finally {
      child.proc.kill("SIGTERM");
      await child.exited;
      await c.close();
    }
  });
});

describe("operator - one clock", { timeout: 120_000 }, () => {
  it("operator - after a replay of old data, one live event moves no other user's clock; a quorum of live users starts the live era for all", async () => {
    const prefix = uniquePrefix("clock");
    const engine = await startTestEngine(nats.url, { subjectPrefix: prefix, dataDir: dir("clock") });
    engines.push(engine);
    const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      const t2019 = Date.UTC(2019, 9, 1, 12);
      // Old data for 8 users, spread over the partitions (and so over both shards).
      const old = Array.from({ length: 8 }, (_, u) => ({
        eventId: `${prefix}-old-${u}`, userId: `old${u}`, type: EventType.PURCHASE, timestampMs: t2019 + u * 60_000, itemId: "i1", price: 5, quantity: 1,
      }));
      await c.publishMany(old);
      const applied = async (users: string[]) => {
        for (const u of users) if ((await c.getProfile(u).catch(() => undefined)) === undefined) return false;
        return true;
      };
      await waitFor(() => applied(old.map((e) => e.userId)), { message: "old events not applied" });
      const clockOf = async (u: string) => (await c.getProfile(u)).asOfMs;
      // A profile is visible once its shard applied it; the engine clock moves when the batches settle on main.
      const clocks = () => Promise.all(old.map((e) => clockOf(e.userId)));
      await waitFor(async () => (await clocks()).every((t) => t >= t2019 + 7 * 60_000), { message: "the engine clock did not reach the last old event" });
      const before = await clocks();
      for (const t of before) expect(t).toBe(t2019 + 7 * 60_000);

      // One event stamped now: its own user lives now, every other user stays in 2019.
      const now = Date.now();
      await c.publish({ eventId: `${prefix}-live-0`, userId: "live0", type: EventType.VIEW, timestampMs: now, itemId: "i2" });
      await waitFor(() => applied(["live0"]), { message: "live event not applied" });
      expect(await clockOf("live0")).toBeGreaterThanOrEqual(now);
      for (const e of old) {
        const p = await c.getProfile(e.userId);
        expect(p.asOfMs).toBe(t2019 + 7 * 60_000);
        expect(p.rfm.recencyDays).toBeLessThan(1);
      }
      // A profile cannot be rewound: an as-of before the user's last event is refused.
      await expect(c.getProfile("old7", { asOfMs: t2019 })).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("before this user's last event") });

      // Ten distinct users live now: a new era, for everyone.
      await c.publishMany(Array.from({ length: 10 }, (_, u) => ({
        eventId: `${prefix}-live-${u + 1}`, userId: `live${u + 1}`, type: EventType.VIEW, timestampMs: Date.now(), itemId: "i3",
      })));
      await waitFor(async () => (await clockOf("old0")) >= now, { message: "the clock did not move to the live era" });
      const p = await c.getProfile("old0");
      expect(p.rfm.recencyDays).toBeGreaterThan(365);
    } finally {
      await c.close();
      await engine.close();
    }
  });
});

describe("operator - help, README and npm", { timeout: 120_000 }, () => {
  const ROOT = fileURLToPath(new URL("..", import.meta.url));
  const cli = (args: string[]) => execFileSync(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/portrait.ts"), ...args], { cwd: ROOT, encoding: "utf8" });

  it("operator - every required flag says so in --help, and README's command summary names every command", () => {
    expect(cli(["catalog", "load", "--help"])).toMatch(/--format <format>\s+data set format \(required\)/);
    expect(cli(["replay", "--help"])).toMatch(/--format <format>\s+data set format \(required\)/);
    const commands = [...cli(["--help"]).matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]!).filter((c) => c !== "help");
    expect(commands.length).toBeGreaterThan(10);
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const summary = /## Running the engine\n\n```sh\n([\s\S]*?)```/.exec(readme)![1]!;
    for (const c of commands) expect(summary, `README's command summary lacks ${c}`).toMatch(new RegExp(`^portrait ${c}\\b`, "m"));
  });

  it("operator - npm in the checkout warns of no unknown project config", () => {
    const r = spawnSync("npm", ["config", "list"], { cwd: ROOT, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).not.toContain("Unknown project config");
  });
});

describe("operator - progress", () => {
  it("operator - a replay's limit is shown as a limit, not as a total the file may never reach", () => {
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string) => written.push(String(chunk)) > 0) as typeof process.stderr.write;
    try {
      const bar = progress("replay rees46", undefined, { limit: 20000 });
      bar.update(17434);
      bar.stop();
      const known = progress("catalog upserts", 10);
      known.update(10);
      known.stop();
    } finally {
      process.stderr.write = write;
    }
    expect(written.join("")).toMatch(/^replay rees46: 17434 \(limit 20000\) /m);
    expect(written.join("")).not.toContain("/20000");
    expect(written.join("")).toMatch(/^catalog upserts: 10\/10 /m);
  });
});

describe("operator - services stats", { timeout: 120_000 }, () => {
  it("operator - $SRV.STATS counts error replies and times the whole asynchronous handling", async () => {
    const prefix = uniquePrefix("stats");
    const engine = await startTestEngine(nats.url, { subjectPrefix: prefix, dataDir: dir("stats") });
    engines.push(engine);
    const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      await c.publish({ eventId: `${prefix}-1`, userId: "known", type: EventType.VIEW, timestampMs: Date.UTC(2024, 0, 1), itemId: "i1" });
      await waitFor(async () => (await c.getProfile("known").catch(() => undefined)) !== undefined, { message: "not applied" });
      for (let i = 0; i < 11; i++) await expect(c.getProfile(`nobody-${i}`)).rejects.toMatchObject({ code: "UNKNOWN_USER" });
      for (let i = 0; i < 2; i++) await c.getProfile("known");
      const hist = (await engine.metrics.requestSeconds.get()).values.filter((v) => v.labels.endpoint === "profile.get");
      const count = hist.find((v) => v.metricName?.endsWith("_count"))!.value;
      const sumS = hist.find((v) => v.metricName?.endsWith("_sum"))!.value;
      const stats = [];
      for await (const s of await c.nc.services.client().stats(prefix)) stats.push(...(s.endpoints ?? []));
      // Error replies as the engine counts them: the 11 above, and the waits for "known" that came before its event was applied.
      const errors = (await engine.metrics.requests.get()).values
        .filter((v) => v.labels.endpoint === "profile.get" && v.labels.code !== "OK").reduce((a, v) => a + v.value, 0);
      expect(errors).toBeGreaterThanOrEqual(11);
      const ep = stats.find((e) => e.name === "profile-get")!;
      expect(ep.num_requests).toBe(count);
      expect(ep.num_errors).toBe(errors);
      expect(ep.last_error).toContain("UNKNOWN_USER");
      // The framework's figure is the engine's own request time, in ns.
      expect(Math.abs(ep.processing_time - sumS * 1e9)).toBeLessThan(count * 1000);
    } finally {
      await c.close();
      await engine.close();
    }
  });
});

describe("operator - profile text", () => {
  it("operator - categories carry the names events gave them, the timeline lists the last events, a funnel without carts prints '-'", async () => {
    const prefix = uniquePrefix("text");
    const engine = await startTestEngine(nats.url, { subjectPrefix: prefix, dataDir: dir("text") });
    engines.push(engine);
    const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      const t = Date.UTC(2019, 9, 1);
      const cat = "2053013555631882655";
      await c.publishMany([1, 2, 3].map((k) => ({
        eventId: `${prefix}-${k}`, userId: "buyer", type: EventType.PURCHASE, timestampMs: t + k * 60_000,
        itemId: `item${k}`, categoryId: cat, categoryPath: "electronics.smartphone", price: 10, quantity: 1,
      })));
      const p = (await waitFor(async () => {
        const v = await c.getProfile("buyer").catch(() => undefined);
        return v !== undefined && v.eventsApplied === 3 ? v : undefined;
      }, { message: "buyer not applied" }))!;
      expect(p.categories[0]).toMatchObject({ key: cat, label: "electronics.smartphone" });
      expect(p.recentEvents.map((e) => [e.type, e.timestampMs, e.itemId])).toEqual([
        ["purchase", t + 180_000, "item3"], ["purchase", t + 120_000, "item2"], ["purchase", t + 60_000, "item1"],
      ]);
      const text = formatProfile(p);
      expect(text).toContain(`electronics.smartphone [${cat}]`);
      expect(text).toContain("cart->purchase -)");
      expect(text).toContain("purchase item3");
    } finally {
      await c.close();
      await engine.close();
    }
  });
});

describe("operator - embedded broker", { timeout: 120_000 }, () => {
  it("operator - an engine that fails leaves its embedded nats-server to the other processes using it; the next start uses it", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    const prefix = uniquePrefix("emb");
    const dataDir = dir("emb");
    const first = await Engine.start({ natsUrl: url, embeddedNats: "always", dataDir, subjectPrefix: prefix, partitions: 4, workers: 2, httpPort: -1, logLevel: "silent" });
    const server = first.embeddedServer!;
    expect(server.url).toBe(url);
    const other = await PortraitClient.connect({ natsUrl: url, subjectPrefix: prefix, partitions: 4 });
    let second: Engine | undefined;
    try {
      await other.publish({ eventId: `${prefix}-1`, userId: "u1", type: EventType.VIEW, timestampMs: Date.UTC(2024, 0, 1), itemId: "i1" });
      first.faultFail(new Error("injected failure"));
      await expect(first.done).rejects.toThrow("injected failure");
      await first.close();
      // The other process's connection still has its broker: a publish is stored.
      const ack = await other.publish({ eventId: `${prefix}-2`, userId: "u1", type: EventType.VIEW, timestampMs: Date.UTC(2024, 0, 2), itemId: "i2" });
      expect(ack.duplicate).toBe(false);
      second = await Engine.start({ natsUrl: url, embeddedNats: "auto", dataDir, subjectPrefix: prefix, partitions: 4, workers: 2, httpPort: -1, logLevel: "silent" });
      expect(second.embeddedServer).toBeUndefined();
      await waitFor(async () => (await other.getProfile("u1").catch(() => undefined))?.eventsApplied === 2, { message: "events not applied once each" });
    } finally {
      await other.close();
      await second?.close();
      process.kill(server.pid, "SIGTERM");
    }
  });
});

describe("operator - replay", { timeout: 120_000 }, () => {
  it("operator - another file of the same name is stored, not dropped as duplicates; the same file again is", async () => {
    const prefix = uniquePrefix("samename");
    const engine = await startTestEngine(nats.url, { subjectPrefix: prefix, dataDir: dir("samename") });
    engines.push(engine);
    const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      const root = dir("samename-files");
      mkdirSync(join(root, "other"));
      const a = join(root, "small.csv.gz");
      const b = join(root, "other", "small.csv.gz");
      writeFileSync(a, gzipSync(taobaoRows("a", 2, 2)));
      writeFileSync(b, gzipSync(taobaoRows("b", 2, 2)));
      expect(await replay(c, "taobao", a)).toMatchObject({ read: 2, stored: 2, duplicates: 0 });
      expect(await replay(c, "taobao", b)).toMatchObject({ read: 2, stored: 2, duplicates: 0 });
      expect(await replay(c, "taobao", a)).toMatchObject({ read: 2, stored: 0, duplicates: 2 });
      await waitFor(async () => (await c.getProfile("b1").then((p) => p.eventsApplied, () => 0)) === 1, { message: "b1 not applied" });
      await waitFor(async () => (await c.getProfile("a1").then((p) => p.eventsApplied, () => 0)) === 1, { message: "a1 not applied" });
    } finally {
      await c.close();
      await engine.close();
    }
  });

  it("operator - Ctrl-C stops a replay with a summary and a --skip resume point; resuming from stdin stores exactly the rest", async () => {
    const prefix = uniquePrefix("resume");
    const engine = await startTestEngine(nats.url, { subjectPrefix: prefix, dataDir: dir("resume") });
    engines.push(engine);
    const total = 600;
    const file = join(dir("resume-files"), "plain.csv");
    writeFileSync(file, taobaoRows("r", 10, total));
    const cli = fileURLToPath(new URL("../src/cli/portrait.ts", import.meta.url));
    const args = ["--format", "taobao", "--nats", nats.url, "--prefix", prefix, "--partitions", "4"];
    const run = (extra: string[], stdinFile?: string) => {
      const proc = spawn(process.execPath, ["--import", "tsx", cli, "replay", ...extra, ...args], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
      proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
      if (stdinFile !== undefined) createReadStream(stdinFile).pipe(proc.stdin);
      else proc.stdin.end();
      const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
      return { proc, exited, out: () => out };
    };
    // 100 events/s: the first progress line (after 2 s) comes well before the end.
    const first = run([file, "--rate", "100"]);
    await waitFor(() => /replay taobao: [1-9]\d*/.test(first.out()), { timeoutMs: 60_000, message: "no progress" });
    first.proc.kill("SIGINT");
    expect(await first.exited, first.out()).toBe(130);
    const m = /resume with: .* --skip (\d+)/.exec(first.out());
    expect(m, first.out()).not.toBeNull();
    const skip = Number(m![1]);
    expect(skip).toBeGreaterThan(0);
    expect(skip).toBeLessThan(total);
    expect(first.out()).toMatch(new RegExp(`interrupted: replayed .*: ${skip} events read, ${skip} stored`));

    const second = run(["-", "--skip", String(skip)], file);
    expect(await second.exited, second.out()).toBe(0);
    expect(second.out()).toContain(`replayed standard input: ${total - skip} events read after ${skip} skipped, ${total - skip} stored, 0 duplicates`);
    const c = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      await waitFor(async () => {
        let n = 0;
        for (let u = 0; u < 10; u++) n += await c.getProfile(`r${u}`).then((p) => p.eventsApplied, () => 0);
        return n === total;
      }, { timeoutMs: 60_000, message: "not every event was applied once" });
    } finally {
      await c.close();
      await engine.close();
    }
  });
});
