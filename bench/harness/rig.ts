/**
 * The benchmark rig: a private nats-server (JetStream, temp store) on a free
 * 127.0.0.1 port, the streams, an engine in a child process, publisher
 * children, a trivial responder, and samplers of the engine's CPU and memory.
 * Every scenario builds on it; `close()` stops everything it started.
 */
import { mkdtempSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type JetStreamManager, type NatsConnection } from "nats";
import { startNatsServer, type NatsServerHandle } from "../../src/bus/nats-server-launcher.js";
import { ensureStreams } from "../../src/bus/streams.js";
import { subjects, type Subjects } from "../../src/bus/subjects.js";
import { PortraitClient } from "../../src/client/portrait-client.js";
import type { EngineOptions } from "../../src/config/engine-options.js";
import { Child, sleep } from "./ipc.js";
import { cpuDelta, cpuSample, memMiB, type CpuDelta, type CpuSample } from "./proc-stats.js";
import type { EngineMemory, EngineSnapshot, EventSource } from "./roles.js";

export interface RigOptions {
  prefix?: string;
  partitions?: number;
  /** Publisher processes (each owns the partitions p with p % n === i). */
  publishers?: number;
  requestTimeoutMs?: number;
  log?: (s: string) => void;
}

export interface EngineStart {
  startMs: number;
  processedAtReady: number;
  workers: number;
  models: string[];
  inference: Record<string, unknown>;
}

export interface ResourceSample {
  /** Seconds since the sampler started. */
  t: number;
  rssMiB: number;
  /** Engine process cores over the last interval. */
  engineCores: number;
  /** Cores used on the machine by processes outside the rig. */
  otherCores: number;
  /** Events applied or dead-lettered by then. */
  processed: number;
  /** Sum of the partitions' lag (messages not yet delivered), from the engine's gauge. */
  lag: number;
  /** The largest partition lag. */
  maxPartitionLag: number;
  /** With sampleResources(…, { memory: true }): RSS split by /proc (MiB) and the engine's own account of its memory. */
  mem?: { anonMiB: number; fileMiB: number; engine: EngineMemory | undefined };
}

export function dirBytes(dir: string): number {
  let total = 0;
  for (const f of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, f.name);
    total += f.isDirectory() ? dirBytes(p) : statSync(p).size;
  }
  return total;
}

export class Rig {
  readonly s: Subjects;
  readonly partitions: number;
  readonly publishers: Child[] = [];
  engine: Child | undefined;
  echo: Child | undefined;
  readonly client: PortraitClient;
  readonly log: (s: string) => void;
  #children: Child[] = [];
  /** Events each publisher prepared (its partitions' share of the source). */
  #prepared: number[] = [];
  #cycle = false;

  private constructor(
    readonly work: string,
    readonly server: NatsServerHandle,
    readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    o: RigOptions,
  ) {
    this.s = subjects(o.prefix ?? "bench");
    this.partitions = o.partitions ?? 16;
    this.log = o.log ?? ((m) => process.stderr.write(`${m}\n`));
    this.client = new PortraitClient(nc, { subjectPrefix: this.s.prefix, partitions: this.partitions, requestTimeoutMs: o.requestTimeoutMs ?? 2000 });
  }

  static async start(o: RigOptions = {}): Promise<Rig> {
    const work = mkdtempSync(join(tmpdir(), "portrait-bench-"));
    const server = await startNatsServer({ storeDir: join(work, "nats") });
    const nc = await connect({ servers: server.url, name: "bench-driver", noAsyncTraces: true });
    const rig = new Rig(work, server, nc, await nc.jetstreamManager(), o);
    await ensureStreams(rig.jsm, rig.s, { eventRetentionMs: 0, duplicateWindowMs: 120_000, dlqRetentionMs: 86_400_000 });
    for (let i = 0; i < (o.publishers ?? 2); i++) rig.publishers.push(rig.#child(new Child("publisher")));
    return rig;
  }

  #child(c: Child): Child {
    this.#children.push(c);
    return c;
  }

  get engineDataDir(): string {
    return join(this.work, "engine");
  }

  /** Starts the engine child (again, after stopEngine, on the same data dir). */
  async startEngine(options: EngineOptions = {}): Promise<EngineStart> {
    if (this.engine !== undefined) throw new Error("bench: the engine is running");
    // PORTRAIT_BENCH_ENGINE_CPU_PROF=<dir>: V8 CPU profiles of the engine's threads (one .cpuprofile per thread, written when it stops).
    const prof = process.env.PORTRAIT_BENCH_ENGINE_CPU_PROF;
    // PORTRAIT_BENCH_ENGINE_NODE_FLAGS="--single-threaded-gc": node/V8 flags of the engine child (A/B runs of a flag).
    const flags = (process.env.PORTRAIT_BENCH_ENGINE_NODE_FLAGS ?? "").split(" ").filter((f) => f !== "");
    this.engine = this.#child(new Child("engine", [...(prof ? ["--cpu-prof", "--cpu-prof-dir", prof] : []), ...flags]));
    return this.engine.call<EngineStart>("start", { natsUrl: this.server.url, dataDir: this.engineDataDir, prefix: this.s.prefix, partitions: this.partitions, options }, 600_000);
  }

  /** Writes a heap snapshot of the engine's main thread into `dir` (PORTRAIT_BENCH_HEAP_SNAPSHOTS); its path. */
  async heapSnapshot(dir: string): Promise<string> {
    return this.engine!.call<string>("heapSnapshot", { dir }, 600_000);
  }

  async stopEngine(): Promise<void> {
    await this.engine?.stop(60_000);
    this.#children = this.#children.filter((c) => c !== this.engine);
    this.engine = undefined;
  }

  async snapshot(): Promise<EngineSnapshot> {
    return this.engine!.call<EngineSnapshot>("snapshot");
  }

  /** Waits until the engine has applied or dead-lettered `n` events in all. */
  async waitProcessed(n: number, timeoutMs: number): Promise<{ processed: number; reached: boolean; msSinceReady: number }> {
    return this.engine!.call("waitProcessed", { n, timeoutMs }, timeoutMs + 30_000);
  }

  /** Each publisher pre-encodes its partitions' share of `count` events of `source`; returns how many in all. */
  async preparePublishers(source: EventSource, count: number, o: { msgId?: boolean; idPrefix?: string; cycle?: boolean } = {}): Promise<{ events: number; users: number; meanBytes: number }> {
    const r = await Promise.all(this.publishers.map((p, index) =>
      p.call<{ events: number; users: number; bytes: number }>("init", {
        natsUrl: this.server.url, prefix: this.s.prefix, partitions: this.partitions, source, count, index, of: this.publishers.length,
        msgId: o.msgId ?? true, cycle: o.cycle ?? false, ...(o.idPrefix !== undefined ? { idPrefix: o.idPrefix } : {}),
      }, 600_000)));
    this.#prepared = r.map((x) => x.events);
    this.#cycle = o.cycle ?? false;
    const events = r.reduce((x, y) => x + y.events, 0);
    // Publishers own disjoint partitions, so their users are disjoint too.
    return { events, users: r.reduce((x, y) => x + y.users, 0), meanBytes: r.reduce((x, y) => x + y.bytes, 0) / Math.max(1, events) };
  }

  /**
   * Starts every publisher: `rate` events/s in all (0 = as fast as they can),
   * at most `count` in all, for at most maxSeconds. Each publisher takes its
   * share of the rate and count in proportion to the events it prepared.
   */
  async startPublishing(rate: number, count: number, maxSeconds: number): Promise<void> {
    const total = this.#prepared.reduce((x, y) => x + y, 0);
    await Promise.all(this.publishers.map((p, i) => {
      const share = total > 0 ? this.#prepared[i]! / total : 1 / this.publishers.length;
      return p.call("start", { rate: rate * share, count: Math.round((this.#cycle ? count : Math.min(count, total)) * share), maxSeconds });
    }));
  }

  /** Stops the publishers (or, with wait, lets them finish); events sent in all. */
  async haltPublishing(wait = false): Promise<{ sent: number; seconds: number }> {
    const r = await Promise.all(this.publishers.map((p) => p.call<{ sent: number; seconds: number }>("halt", { wait }, 900_000)));
    return { sent: r.reduce((x, y) => x + y.sent, 0), seconds: Math.max(...r.map((x) => x.seconds)) };
  }

  /** Messages stored in the event stream. */
  async streamMessages(): Promise<number> {
    return (await this.jsm.streams.info(this.s.eventStream)).state.messages;
  }

  /**
   * Waits until the event stream holds `n` messages; returns how many it holds. The publishers publish without
   * acknowledgements, and a server short of CPU drops some: when the count stays below `n` for `stallMs`, the
   * shortfall is logged and the stored count returned (the callers count what was stored, not what was sent).
   */
  async waitStored(n: number, timeoutMs: number, stallMs = 15_000): Promise<number> {
    let last = -1;
    let since = Date.now();
    for (const deadline = Date.now() + timeoutMs; ;) {
      const held = await this.streamMessages();
      if (held >= n) return held;
      if (held !== last) [last, since] = [held, Date.now()];
      else if (Date.now() - since > stallMs) {
        this.log(`the event stream holds ${held} of ${n} messages, unchanged for ${stallMs} ms: ${n - held} published messages were not stored (dropped by a loaded server)`);
        return held;
      }
      if (Date.now() > deadline) throw new Error(`the event stream holds ${held} of ${n} messages after ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  async startEcho(subject: string, replyBytes: number): Promise<void> {
    this.echo ??= this.#child(new Child("echo"));
    await this.echo.call("start", { natsUrl: this.server.url, subject, replyBytes });
  }

  /** Process ids by role, for CPU accounting. */
  pids(): Record<string, number> {
    const out: Record<string, number> = { driver: process.pid, "nats-server": this.server.pid };
    if (this.engine) out.engine = this.engine.pid;
    this.publishers.forEach((p, i) => (out[`publisher${i}`] = p.pid));
    if (this.echo) out.echo = this.echo.pid;
    return out;
  }

  cpuSample(): CpuSample {
    return cpuSample(this.pids(), this.engine?.pid ?? process.pid);
  }

  cpuDelta(a: CpuSample, b: CpuSample): CpuDelta {
    return cpuDelta(a, b, this.engine?.pid ?? process.pid);
  }

  /** Samples the engine's RSS, CPU, progress and lag every `everyMs` until the returned stop() is called. */
  sampleResources(everyMs = 1000, o: { memory?: boolean } = {}): { samples: ResourceSample[]; stop: () => Promise<ResourceSample[]> } {
    const samples: ResourceSample[] = [];
    const t0 = performance.now();
    let prev = this.cpuSample();
    let running = true;
    const loop = (async () => {
      while (running) {
        await sleep(everyMs);
        if (!running || this.engine === undefined) break;
        const snap = await this.snapshot().catch(() => undefined);
        const cur = this.cpuSample();
        const d = this.cpuDelta(prev, cur);
        prev = cur;
        const lags = Object.values(snap?.lagByPartition ?? {});
        const engineMem = o.memory === true ? await this.engine.call<EngineMemory>("memory").catch(() => undefined) : undefined;
        const m = memMiB(this.engine.pid);
        samples.push({
          t: (performance.now() - t0) / 1000, rssMiB: m.rss, engineCores: d.procs.engine ?? 0, otherCores: d.others,
          processed: snap?.processed ?? NaN, lag: lags.reduce((x, y) => x + y, 0), maxPartitionLag: Math.max(0, ...lags),
          ...(o.memory === true ? { mem: { anonMiB: m.anon, fileMiB: m.file, engine: engineMem } } : {}),
        });
      }
    })();
    return {
      samples,
      stop: async () => {
        running = false;
        await loop;
        return samples;
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.#children.map((c) => c.stop()));
    await this.nc.close().catch(() => undefined);
    await this.server.stop();
    // PORTRAIT_BENCH_KEEP_ENGINE_DATA=<dir>: the engine's data dir is moved there instead of removed (to look into its LMDB file).
    const keep = process.env.PORTRAIT_BENCH_KEEP_ENGINE_DATA;
    if (keep !== undefined && keep !== "") renameSync(this.engineDataDir, keep);
    rmSync(this.work, { recursive: true, force: true });
  }
}
