/**
 * `npm pack`, then `npm i -g` of the tarball into a temp prefix, as a user on
 * a fresh machine of this kind would (the repo's .npmrc does not travel with
 * the package; only the npm registry is reachable), then the installed
 * command: --version, demo on the public data sets, start and a clean stop.
 */
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../src/bus/server-process.js";
import { removeDir } from "./helpers/engine.js";
import { tmpDir, waitFor } from "./helpers/nats.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? join(ROOT, "../shared/data");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const work = tmpDir("portrait-global");

afterAll(() => removeDir(work));

describe("global install", { timeout: 600_000 }, () => {
  it("install - npm i -g of the packed tarball needs no download at install, and the command runs the demo and the engine", async () => {
    // npm test built dist/ just before; the tarball holds dist, proto and models.
    const packed = await run("npm", ["pack", "--pack-destination", work, "--json"], { cwd: ROOT, maxBuffer: 64 << 20 });
    const tarball = join(work, (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename);
    const prefix = join(work, "prefix");
    // Outside the checkout: none of the project's npm configuration applies.
    await run("npm", ["install", "--global", "--prefix", prefix, "--no-fund", "--no-audit", tarball], { cwd: work, maxBuffer: 64 << 20 });
    const bin = join(prefix, "bin", "portrait");

    const version = await run(bin, ["--version"], { cwd: work });
    expect(version.stdout.trim()).toBe(VERSION);

    const natsPort = await freePort();
    const demo = await run(bin, ["demo", "--datasets", DATA_DIR, "--events", "500", "--nats", `nats://127.0.0.1:${natsPort}`, "--data-dir", join(work, "demo")],
      { cwd: work, maxBuffer: 64 << 20, timeout: 240_000 });
    const demoOut = demo.stdout + demo.stderr;
    expect(demoOut).toMatch(/published 500 events .*applied 500/);
    // The bundled models were found inside the installed package.
    expect(demoOut).toMatch(/churn\s+null\s+churn \d{4}-\d{2}-\d{2}\.\d+ has no evaluation on this shop's data/);
    expect(demoOut).toMatch(/next category\s+null\s+lstm \d{4}-\d{2}-\d{2}\.\d+ has no evaluation on this shop's data/);

    const startPort = await freePort();
    const start = spawn(bin, ["start", "--nats", `nats://127.0.0.1:${startPort}`, "--data-dir", join(work, "start"), "--http-port", "-1"], { cwd: work });
    let out = "";
    start.stdout.on("data", (d: Buffer) => (out += d.toString()));
    start.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => start.once("exit", (code) => r(code)));
    try {
      await waitFor(() => out.includes('"msg":"engine ready"'), { timeoutMs: 120_000, message: "the installed engine did not become ready" });
      start.kill("SIGTERM");
      expect(await exited, out).toBe(0);
      expect(out).toContain('"msg":"engine closed"');
    } finally {
      if (start.exitCode === null) start.kill("SIGKILL");
    }
  });
});
