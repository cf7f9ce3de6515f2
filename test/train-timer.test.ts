/**
 * The scheduled loop (scripts/systemd/portrait-train.{service,timer}): the
 * units parse and verify, and the service's promotion command line, run as
 * systemd would run it (its Environment substituted), promotes a winning
 * version, refuses a losing one with its reason and still exits 0, and
 * leaves the registry as it decided. Also the CLI's models list/show/rollback.
 */
import { execFile, spawnSync } from "node:child_process";
import { cpSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { BUNDLED_MODELS_DIR, currentVersion, type ModelManifest } from "../src/models/artifacts.js";
import { ModelRegistry } from "../src/models/registry.js";
import { uniquePrefix } from "./helpers/engine.js";
import { startTestNats, tmpDir } from "./helpers/nats.js";

const run = promisify(execFile);
const DIR = fileURLToPath(new URL("../scripts/systemd/", import.meta.url));
// The built CLI (`npm test` builds first): no TypeScript transform per run of the command.
const CLI = fileURLToPath(new URL("../dist/cli/portrait.js", import.meta.url));

/** A systemd unit file as sections of [key, value] lines (repeated keys kept in order). */
function parseUnit(text: string): Map<string, Array<[string, string]>> {
  const out = new Map<string, Array<[string, string]>>();
  let section: Array<[string, string]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) {
      section = [];
      out.set(s[1]!, section);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || section === undefined) throw new Error(`not a unit line: ${line}`);
    section.push([kv[1]!, kv[2]!]);
  }
  return out;
}

const values = (u: Map<string, Array<[string, string]>>, section: string, key: string) => (u.get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);

let server: NatsServerHandle;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startTestNats();
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/** `portrait ...` through tsx, as the unit's `/usr/bin/env portrait` would run it. */
async function portrait(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, PORTRAIT_LOG_LEVEL: "silent" } });
    return { ...r, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe("train timer - the systemd units and the promote-on-a-win loop", () => {
  it("timer - the units parse, name a oneshot train && promote --if-better, run every 24 h, and systemd-analyze verifies them", () => {
    const service = parseUnit(readFileSync(join(DIR, "portrait-train.service"), "utf8"));
    const timer = parseUnit(readFileSync(join(DIR, "portrait-train.timer"), "utf8"));
    expect(values(service, "Service", "Type")).toEqual(["oneshot"]);
    const exec = values(service, "Service", "ExecStart");
    expect(exec).toHaveLength(2);
    expect(exec[0]).toMatch(/portrait train all --from-stream /);
    expect(exec[1]).toMatch(/portrait models promote --if-better /);
    expect(values(timer, "Timer", "OnCalendar")).toEqual(["*-*-* 03:30:00"]);
    expect(values(timer, "Timer", "Persistent")).toEqual(["true"]);
    expect(values(timer, "Timer", "Unit")).toEqual(["portrait-train.service"]);
    expect(values(timer, "Install", "WantedBy")).toEqual(["timers.target"]);
    if (existsSync("/usr/bin/systemd-analyze")) {
      const v = spawnSync("/usr/bin/systemd-analyze", ["verify", join(DIR, "portrait-train.service"), join(DIR, "portrait-train.timer")], { encoding: "utf8" });
      expect(v.status, v.stderr).toBe(0);
      expect(v.stderr.trim()).toBe("");
    }
  });

  it("timer - the service's promote command promotes a win, refuses a loss with its reason and exits 0; list, show and rollback", async () => {
    const prefix = uniquePrefix("timer");
    // The registry as an engine leaves it: the bundled churn model promoted as the seed.
    const reg = await ModelRegistry.open(nc, { prefix, create: true });
    await reg.seed(BUNDLED_MODELS_DIR, ["churn"]);
    const seed = currentVersion(BUNDLED_MODELS_DIR, "churn")!;
    // What training wrote: churn/<version> with an evaluation against that champion.
    const trained = tmpDir("portrait-trained");
    const write = (version: string, challenger: number) => {
      const dir = join(trained, "churn", version);
      cpSync(join(BUNDLED_MODELS_DIR, "churn", seed), dir, { recursive: true });
      const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ModelManifest;
      writeFileSync(join(dir, "manifest.json"), JSON.stringify({
        ...m, version, evaluation: {
          source: `stream:${prefix.toUpperCase()}_EVENTS`, trainWindow: { fromMs: 0, toMs: 10 }, testWindow: { fromMs: 10, toMs: 20 }, counts: { train: 9, test: 9 },
          metric: "AUC", higherIsBetter: true, challenger, champion: { version: seed, value: 0.7 }, baselines: { "rfm-logistic": 0.72, popularity: 0.6 },
        },
      }));
      writeFileSync(join(trained, "churn", "CURRENT"), version + "\n");
    };
    const service = parseUnit(readFileSync(join(DIR, "portrait-train.service"), "utf8"));
    const env: Record<string, string> = Object.fromEntries(values(service, "Service", "Environment").map((e) => e.split("=", 2) as [string, string]));
    Object.assign(env, { PORTRAIT_NATS_URL: server.url, PORTRAIT_PREFIX: prefix, PORTRAIT_TRAINED: trained });
    const promoteLine = values(service, "Service", "ExecStart")[1]!.replace(/\$\{(\w+)\}/g, (_, k: string) => env[k] ?? "");
    const args = promoteLine.split(/\s+/).slice(2); // drop "/usr/bin/env portrait"

    write("t.1", 0.71);
    const lost = await portrait(args);
    expect(lost.code, lost.stderr).toBe(0);
    const refused = JSON.parse(lost.stdout.trim()) as { decision: string; reason: string };
    expect(refused).toMatchObject({ decision: "refused", model: "churn", version: "t.1" });
    expect(refused.reason).toMatch(/does not beat baseline rfm-logistic 0\.7200/);
    expect((await reg.promoted("churn"))!.version).toBe(seed);

    write("t.2", 0.8);
    const won = await portrait(args);
    expect(won.code, won.stderr).toBe(0);
    expect(JSON.parse(won.stdout.trim())).toMatchObject({ decision: "promoted", version: "t.2", forced: false, replaced: seed });
    expect((await reg.promoted("churn"))!.version).toBe("t.2");
    // A second run with nothing new: refused (already promoted), still exit 0.
    const again = await portrait(args);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout.trim())).toMatchObject({ decision: "refused" });

    const conn = ["--nats", server.url, "--prefix", prefix];
    const list = await portrait(["models", "list", ...conn]);
    expect(list.stdout).toMatch(/^\* churn@t\.2 /m);
    const show = await portrait(["models", "show", "churn", ...conn]);
    expect(JSON.parse(show.stdout)).toMatchObject({ version: "t.2", promotion: { forced: false, replaced: seed }, evaluation: { challenger: 0.8 } });
    // Without --if-better a refusal is an error with its code.
    const strict = await portrait(["models", "promote", "churn@t.1", ...conn]);
    expect(strict.code).toBe(1);
    expect(strict.stderr).toMatch(/PROMOTION_REFUSED/);
    const rb = await portrait(["models", "rollback", "churn", ...conn]);
    expect(rb.stdout).toMatch(`rolled churn back from t.2 to ${seed}`);
    // Another prefix has no registry: REGISTRY_MISSING.
    const missing = await portrait(["models", "list", "--nats", server.url, "--prefix", uniquePrefix("none")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/REGISTRY_MISSING/);
  }, 120_000);
});
