/** Engine options: one defaults object, compiled once, and README's flag table agreeing with it. */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { NATS_DEFAULTS } from "../src/bus/connect.js";
import { ENGINE_DEFAULTS, compileEngineOptions } from "../src/config/engine-options.js";
import { compileInferenceOptions } from "../src/inference/inference-options.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { SEMI_SPACE_DEFAULT_BYTES } from "../src/obs/heap.js";

describe("engine options", () => {
  it("engine options - nothing given compiles to ENGINE_DEFAULTS (paths resolved, groups compiled), frozen", () => {
    const cfg = compileEngineOptions({});
    const { dataDir, modelsDir, profile, recs, inference, ...rest } = ENGINE_DEFAULTS;
    expect(cfg).toEqual({ ...rest, dataDir: resolve(dataDir), modelsDir: resolve(modelsDir), profile, recs: compileRecsOptions(recs), inference });
    expect(Object.keys(cfg).sort()).toEqual(Object.keys(ENGINE_DEFAULTS).sort());
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(profile).toBe(PROFILE_DEFAULTS);
    for (const k of Object.keys(NATS_DEFAULTS)) expect(Object.hasOwn(ENGINE_DEFAULTS, k), k).toBe(true);
  });

  it("engine options - a key ENGINE_DEFAULTS lacks is an error, inherited names included", () => {
    expect(() => compileEngineOptions({ maxBatch: 3 } as never)).toThrow('unknown engine option "maxBatch"');
    expect(() => compileEngineOptions({ toString: "x" } as never)).toThrow('unknown engine option "toString"');
    expect(() => compileEngineOptions({ recs: { nope: 1 } } as never)).toThrow('unknown recs option "nope"');
    expect(() => compileEngineOptions({ inference: { workers: 0 } })).toThrow(/options\.workers must be a positive integer/);
  });

  it("engine options - replicas apply with or without cluster mode; cluster.replicas is refused with a pointer to it", () => {
    expect(compileEngineOptions({ replicas: 3 }).replicas).toBe(3);
    expect(compileEngineOptions({ replicas: 3, cluster: { nodeId: "a" } }).cluster).toEqual({ nodeId: "a", leaseMs: 10_000, replicas: 3 });
    expect(compileEngineOptions({ cluster: { nodeId: "a" } }).cluster?.replicas).toBe(1);
    expect(() => compileEngineOptions({ cluster: { nodeId: "a", replicas: 3 } as never })).toThrow("option cluster.replicas is now replicas (top level)");
    expect(() => compileEngineOptions({ replicas: 0 })).toThrow(/replicas/);
  });

  it("engine options - recs and inference are compiled once, and the pool takes the compiled config as it is", () => {
    const cfg = compileEngineOptions({ recs: { maxQueuedItemEvents: 10 }, inference: { workers: 2 } });
    expect(cfg.recs).toEqual(compileRecsOptions({ maxQueuedItemEvents: 10 }));
    expect(Object.isFrozen(cfg.recs)).toBe(true);
    expect(cfg.inference).toEqual({ ...compileInferenceOptions(), workers: 2 });
    expect(compileInferenceOptions(cfg.inference)).toBe(cfg.inference);
    // A plain object with the same fields is still validated.
    expect(() => compileInferenceOptions({ ...cfg.inference, workers: 0 })).toThrow(/options\.workers/);
  });

  it("engine options - worker heap bounds: 1.5 x the cache bound + 512 MiB by default, each bound follows the other, a heap that cannot hold its cache is refused", () => {
    const MiB = 2 ** 20;
    const D = compileEngineOptions({});
    expect(D.maxShardHeapBytes).toBe(Math.ceil(1.5 * D.maxActorBytesPerShard + 512 * MiB));
    expect(D.recs.maxHeapBytes).toBe(Math.ceil(1.5 * D.recs.maxStateBytes + 512 * MiB));
    // The derived cache bound fits the heap bound given, also one that is not a whole number of MiB.
    const odd = compileRecsOptions({ maxHeapBytes: 600 * MiB + 1 });
    expect(compileRecsOptions({ maxHeapBytes: odd.maxHeapBytes, maxStateBytes: odd.maxStateBytes })).toMatchObject({ maxHeapBytes: 600 * MiB + 1, maxStateBytes: odd.maxStateBytes });
    expect(compileEngineOptions({ maxActorBytesPerShard: 256 * MiB })).toMatchObject({ maxActorBytesPerShard: 256 * MiB, maxShardHeapBytes: 896 * MiB });
    expect(compileEngineOptions({ maxShardHeapBytes: 1024 * MiB })).toMatchObject({ maxActorBytesPerShard: Math.floor(512 * MiB / 1.5), maxShardHeapBytes: 1024 * MiB });
    expect(compileEngineOptions({ maxShardHeapBytes: 1024 * MiB, maxActorBytesPerShard: 100 * MiB })).toMatchObject({ maxActorBytesPerShard: 100 * MiB, maxShardHeapBytes: 1024 * MiB });
    expect(() => compileEngineOptions({ maxShardHeapBytes: 1024 * MiB, maxActorBytesPerShard: 400 * MiB })).toThrow(/maxShardHeapBytes \(1073741824\) must hold options.maxActorBytesPerShard/);
    expect(() => compileEngineOptions({ maxShardHeapBytes: 256 * MiB })).toThrow(/maxShardHeapBytes must be an integer >= 538443776 \(513.5 MiB/);
    expect(compileRecsOptions({ maxStateBytes: 64 * MiB }).maxHeapBytes).toBe(608 * MiB);
    expect(compileRecsOptions({ maxHeapBytes: 812 * MiB })).toMatchObject({ maxStateBytes: 200 * MiB, maxHeapBytes: 812 * MiB });
    expect(compileRecsOptions({ maxHeapBytes: 0 })).toEqual(compileRecsOptions());
    expect(() => compileRecsOptions({ maxHeapBytes: 812 * MiB, maxStateBytes: 300 * MiB })).toThrow(/maxHeapBytes \(851443712\) must hold options.maxStateBytes/);
    expect(() => compileRecsOptions({ maxHeapBytes: "1g" as never })).toThrow(/maxHeapBytes must be an integer/);
  });

  it("engine options - the workers' semi-space: SEMI_SPACE_DEFAULT_BYTES by default, 1 MiB to 1 GiB", () => {
    const MiB = 2 ** 20;
    expect(compileEngineOptions({}).workerSemiSpaceBytes).toBe(SEMI_SPACE_DEFAULT_BYTES);
    expect(compileEngineOptions({ workerSemiSpaceBytes: 64 * MiB }).workerSemiSpaceBytes).toBe(64 * MiB);
    expect(() => compileEngineOptions({ workerSemiSpaceBytes: MiB - 1 })).toThrow(/options\.workerSemiSpaceBytes must be an integer in \[1048576, 1073741824\]/);
    expect(() => compileEngineOptions({ workerSemiSpaceBytes: 2 * 1024 * MiB })).toThrow(/workerSemiSpaceBytes/);
  });

  it("docs - README's engine flag table gives the defaults of ENGINE_DEFAULTS", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const cells = new Map([...readme.matchAll(/^\| `(--[a-z-]+)[^|]*\|[^|]*\| ([^|]+) \|$/gm)].map((m) => [m[1]!, m[2]!.trim()]));
    const first = (flag: string) => {
      const cell = cells.get(flag);
      expect(cell, `README's table has ${flag}`).toBeDefined();
      return cell!.replace(/`/g, "").split(" ")[0];
    };
    const D = ENGINE_DEFAULTS;
    expect(first("--nats")).toBe(D.natsUrl);
    expect(first("--data-dir")).toBe(D.dataDir);
    expect(first("--partitions")).toBe(String(D.partitions));
    expect(first("--prefix")).toBe(D.subjectPrefix);
    expect(first("--embedded-nats")).toBe(D.embeddedNats);
    expect(first("--http-port")).toBe(String(D.httpPort));
    expect(first("--max-batch")).toBe(String(D.maxBatchMessages));
    expect(first("--max-ack-pending")).toBe(String(D.maxAckPending));
    expect(first("--max-query-wait-ms")).toBe(String(D.maxQueryWaitMs));
    expect(first("--half-life-hours")).toBe(String(D.profile.halfLifeMs / 3_600_000));
    expect(first("--session-gap-minutes")).toBe(String(D.profile.sessionGapMs / 60_000));
    expect(first("--lstm")).toBe(D.lstmModel);
    expect(first("--inference-workers")).toBe(String(D.inference.workers));
    expect(first("--log-level")).toBe(D.logLevel);
  });
});
