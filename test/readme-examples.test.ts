/**
 * README's shell and nats.js examples, run as a reader would run them,
 * against a real engine (prefix "portrait", 16 partitions, as the README
 * assumes) on this file's own nats-server.
 */
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import type { Engine } from "../src/engine.js";
import { removeDir, startTestEngine } from "./helpers/engine.js";
import { startTestNats, tmpDir } from "./helpers/nats.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "src/cli/portrait.ts");
/** tsx's loader by path: the commands run in a temp dir, where `--import tsx` would not resolve. */
const TSX = pathToFileURL(join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;
const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The fenced blocks of README that contain `marker`. */
function blocks(lang: string, marker: string): string[] {
  const out: string[] = [];
  const re = new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g");
  for (let m = re.exec(README); m !== null; m = re.exec(README)) if (m[1]!.includes(marker)) out.push(m[1]!);
  return out;
}

/** Splits a shell line into words (single quotes only, as the README writes them). */
function words(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/'([^']*)'|(\S+)/g)) out.push(m[1] ?? m[2]!);
  return out;
}

let nats: NatsServerHandle;
let engine: Engine;
let cwd: string;

beforeAll(async () => {
  nats = await startTestNats();
  engine = await startTestEngine(nats.url, { partitions: 16, subjectPrefix: "portrait" });
  cwd = tmpDir("portrait-readme");
});

afterAll(async () => {
  await engine?.close();
  await nats?.stop();
  removeDir(engine.config.dataDir);
  removeDir(cwd);
});

async function portrait(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run(process.execPath, ["--import", TSX, CLI, ...args, "--nats", nats.url], { cwd });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

describe("README examples", { timeout: 120_000 }, () => {
  it("README - the publish and request lines work as written, and a bad event is refused with its reason", async () => {
    const [block] = blocks("sh", "portrait publish --file");
    expect(block, "README has the portrait publish block").toBeDefined();
    const lines = block!.split("\n").filter((l) => l.startsWith("portrait "));
    expect(lines.length).toBeGreaterThanOrEqual(4);
    // The file the README's --file line names: two more events of the same user.
    writeFileSync(join(cwd, "events.ndjson"), [
      '{"eventId":"e-1002","userId":"17850","type":"VIEW","timestampMs":1700000060000,"itemId":"71053"}',
      "",
      '{"event_id":"e-1003","user_id":"17850","type":"add_to_cart","timestamp_ms":1700000120000,"item_id":"71053","price":3.39}',
    ].join("\n") + "\n");
    const outputs: string[] = [];
    for (const line of lines) {
      const r = await portrait(words(line).slice(1));
      expect(r.code, `${line}\n${r.out}`).toBe(0);
      outputs.push(r.out);
    }
    expect(outputs[0]).toContain("published 1 event: 1 stored");
    expect(outputs[1]).toContain("published 2 events: 2 stored");
    const profileOut = outputs.find((o) => o.includes('"profile"'))!;
    const profile = JSON.parse(profileOut) as { profile: { userId: string; eventsApplied: number } };
    // Published events are applied asynchronously: the profile exists and counts at most the three published.
    expect(profile.profile.userId).toBe("17850");
    expect(profile.profile.eventsApplied).toBeGreaterThanOrEqual(1);
    expect(profile.profile.eventsApplied).toBeLessThanOrEqual(3);

    const bad = await portrait(["publish", '{"eventId":"x","userId":"u","type":"VIEW","timestampMs":1700000000000}']);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain("BAD_REQUEST: event: MISSING_ITEM_ID");
    const unknown = await portrait(["request", "profile", '{"userId":"nobody-here"}']);
    expect(unknown.code).toBe(1);
    expect(unknown.out).toContain("UNKNOWN_USER");
  });

  it("README - the nats.js snippet prints the profile", async () => {
    const [snippet] = blocks("js", "portrait.api.profile.get");
    expect(snippet, "README has the nats.js snippet").toBeDefined();
    // Beside package.json, so that `import "nats"` resolves to the project's dependency.
    const file = join(ROOT, `.readme-snippet-${process.pid}.mjs`);
    writeFileSync(file, snippet!.replace("nats://127.0.0.1:4222", nats.url));
    try {
      const r = await run(process.execPath, [file], { cwd: ROOT });
      // The user of the first test, with its events applied so far.
      expect(r.stdout).toMatch(/^17850 [1-3]\n$/);
    } finally {
      rmSync(file, { force: true });
    }
  });
});
