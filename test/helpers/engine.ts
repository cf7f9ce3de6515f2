/** Test helpers for engines: in-process engines, child-process engines, and event fixtures. */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { PortraitClient } from "../../src/client/portrait-client.js";
import type { EngineOptions } from "../../src/config/engine-options.js";
import { Engine } from "../../src/engine.js";
import { PortraitError } from "../../src/errors.js";
import { EventType, type IEvent } from "../../src/wire/proto.js";
import { tmpDir, waitFor } from "./nats.js";

let seq = 0;
/** A subject prefix no other test uses, so each test has its own streams and consumers. */
export function uniquePrefix(name: string): string {
  return `${name}${process.pid % 10000}x${++seq}`;
}

export async function startTestEngine(natsUrl: string, o: EngineOptions = {}): Promise<Engine> {
  return Engine.start({
    natsUrl,
    embeddedNats: "never",
    partitions: 4,
    workers: 2,
    httpPort: -1,
    logLevel: "silent",
    dataDir: tmpDir("portrait-engine"),
    // In-process test engines read models from modelsDir unless a test turns the registry on (test/model-swap.test.ts).
    modelRegistry: false,
    ...o,
  });
}

export const T0 = Date.UTC(2024, 4, 1);

/** `users` users x `perUser` VIEW events each, interleaved round-robin, item ids i0, i1, ... in time order per user. */
export function interleavedViews(prefix: string, users: number, perUser: number): IEvent[] {
  const out: IEvent[] = [];
  for (let k = 0; k < perUser; k++) {
    for (let u = 0; u < users; u++) {
      out.push({
        eventId: `${prefix}-u${u}-e${k}`,
        userId: `${prefix}-u${u}`,
        type: EventType.VIEW,
        timestampMs: T0 + k * 1000,
        itemId: `i${k}`,
        categoryId: `c${k % 3}`,
      });
    }
  }
  return out;
}

/** Per-user count of events: the reference an engine's profiles must match exactly. */
export function countByUser(events: IEvent[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of events) m.set(e.userId!, (m.get(e.userId!) ?? 0) + 1);
  return m;
}

/**
 * Waits until every user's profile has exactly the expected number of applied
 * events. A user with more fails at once (a count never goes down, so waiting
 * longer cannot fix it).
 */
export async function expectExactCounts(client: PortraitClient, expected: Map<string, number>, timeoutMs = 120_000): Promise<void> {
  let short = "";
  let twice: string | undefined;
  await waitFor(async () => {
    for (const [user, n] of expected) {
      let got = 0;
      try {
        got = (await client.getProfile(user)).eventsApplied;
      } catch (err) {
        if (err instanceof PortraitError && err.code === "UNKNOWN_USER") {
          short = `user ${user} unknown, expected ${n} events`;
          return false;
        }
        throw err;
      }
      if (got > n) {
        twice = `user ${user} has ${got} events applied, expected ${n}: applied twice`;
        return true; // stop waiting: thrown below
      }
      if (got < n) {
        short = `user ${user} has ${got} of ${n} events applied`;
        return false;
      }
    }
    return true;
  }, { timeoutMs, message: "profiles did not reach the expected counts" }).catch((err: unknown) => {
    // Say which user fell short, and by how much: the difference between "slow" and "lost" when a run fails.
    throw new Error(`${(err as Error).message}; last seen: ${short}`, { cause: err });
  });
  if (twice !== undefined) throw new Error(twice);
}

const CLI = fileURLToPath(new URL("../../src/cli/portrait.ts", import.meta.url));

export interface ChildEngine {
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/** `portrait start` in a child process (through tsx), for crash and signal tests. */
export function spawnEngine(args: string[]): ChildEngine {
  const proc = spawn(process.execPath, ["--import", "tsx", CLI, "start", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { proc, exited, output: () => out };
}

/** Resolves when an engine answers queries (an unknown user gets UNKNOWN_USER, not NO_RESPONDERS). */
export async function waitForEngine(client: PortraitClient, child?: ChildEngine): Promise<void> {
  await waitFor(async () => {
    if (child && child.proc.exitCode !== null) throw new Error(`engine exited early:\n${child.output()}`);
    try {
      await client.getProfile("__probe__");
      return true;
    } catch (err) {
      return err instanceof PortraitError && err.code === "UNKNOWN_USER";
    }
  }, { timeoutMs: 90_000, message: "engine did not become ready" });
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
