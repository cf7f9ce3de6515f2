/**
 * max-ingest: how many events/s the engine applies (decode, validate,
 * profile, LSTM step, LMDB commit, ack), beside the machine's JetStream
 * publish and consume rates and beside "what a user would build instead" —
 * the same counters in Redis — all fed from the same stream in the same run.
 */
import { rawConsume } from "../harness/baselines.js";
import { join } from "node:path";
import { dirBytes } from "../harness/rig.js";
import { Rig } from "../harness/rig.js";
import { measureRedisRaw, measureRedisServerRaw, runRedisBaseline } from "../harness/redis-baseline.js";
import { describeSource, generatorSource, loadState, sourceFlags } from "./common.js";
import { f0, num, ratio, type Scenario } from "./scenario.js";

export const maxIngest: Scenario = {
  name: "max-ingest",
  summary: "engine apply rate vs raw JetStream publish/consume and a Redis HINCRBY baseline on the same stream",
  flags: {
    events: { default: "1000000", smoke: "5000", help: "events preloaded and applied" },
    ...sourceFlags,
    partitions: { default: "16", smoke: "4", help: "partitions" },
    redis: { default: "redis://127.0.0.1:6379", help: 'the Redis of the baseline, or "off"' },
    "timeout-s": { default: "900", smoke: "120", help: "bound on each phase" },
  },
  async run(ctx) {
    const N = num(ctx, "events", 1, 50_000_000);
    const timeoutMs = num(ctx, "timeout-s", 10, 7200) * 1000;
    const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: num(ctx, "publishers", 1, 16), prefix: "bingest" });
    try {
      const prep = await rig.preparePublishers(generatorSource(ctx), N);
      ctx.log(`prepared ${prep.events} events (${prep.meanBytes.toFixed(0)} B mean) in ${rig.publishers.length} publishers`);
      // Raw consume runs on the preloaded stream before the engine exists, then the Redis baseline, then the engine.
      const consume = async () => rawConsume(rig, await rig.streamMessages(), { timeoutMs, maxMessages: 2048 });
      let raw: Awaited<ReturnType<typeof consume>> | undefined;
      let redis: Array<{ mode: string; perSec: number; usedMiB: number }> = [];
      let redisRaw: { client: number; server: number } | undefined;
      let redisSkipped: string | undefined;
      const loaded = await loadState(rig, prep, timeoutMs, {
        beforeEngine: async () => {
          raw = await consume();
          ctx.log(`raw JetStream consume ${raw.perSec.toFixed(0)} msg/s`);
          if (ctx.flags.redis === "off") redisSkipped = "--redis off";
          else {
            try {
              const n = Math.min(prep.events * 4, 800_000);
              redisRaw = { client: await measureRedisRaw(ctx.flags.redis!, n), server: await measureRedisServerRaw(ctx.flags.redis!, n) };
              for (const mode of ["pipeline", "lua"] as const) {
                const r = await runRedisBaseline({ natsUrl: rig.server.url, prefix: rig.s.prefix, partitions: rig.partitions, expected: await rig.streamMessages(), redisUrl: ctx.flags.redis!, mode, timeoutMs, keyPrefix: `bench-${mode}-${Date.now()}`, consumerPrefix: `redis-${mode}` });
                redis.push({ mode, perSec: r.eventsPerSec, usedMiB: r.redisUsedMemoryBytes / 2 ** 20 });
                ctx.log(`redis baseline (${mode}) ${r.eventsPerSec.toFixed(0)} events/s`);
              }
            } catch (err) {
              redisSkipped = `Redis baseline not run: ${(err as Error).message}`;
              redis = [];
            }
          }
        },
      });
      // LMDB alone (the profiles); the data dir also holds the models cache, a fixed few MiB whatever the user count.
      const disk = dirBytes(join(rig.engineDataDir, "lmdb"));
      const dataDir = dirBytes(rig.engineDataDir);
      const after = await rig.snapshot();
      const users = loaded.users;
      const rows = [
        ["events / distinct users / mean event size", `${loaded.events} / ${users} / ${prep.meanBytes.toFixed(0)} B`, ""],
        ["partitions / publishers / shard workers", `${rig.partitions} / ${rig.publishers.length} / ${loaded.engine.workers}`, ""],
        ["raw JetStream publish (stored, no engine)", `${f0(loaded.publishPerSec)} events/s`, ""],
        ["raw JetStream consume (bare pull consumers, AckAll per batch)", `${f0(raw?.perSec ?? NaN)} msg/s`, "1.00"],
        ...redis.map((r) => [`Redis baseline, ${r.mode} (same stream; counters only)`, `${f0(r.perSec)} events/s`, ratio(r.perSec, raw?.perSec ?? NaN)]),
        ...(redisRaw !== undefined ? [
          ["raw Redis pipelined HINCRBY, pre-encoded over a bare socket (the server's limit)", `${f0(redisRaw.server)} commands/s`, ""],
          ["raw Redis pipelined HINCRBY through ioredis (the client's limit)", `${f0(redisRaw.client)} commands/s`, ""],
        ] : []),
        ["**Portrait apply** (decode, validate, profile, LSTM, LMDB commit, ack)", `**${f0(loaded.applyPerSec)} events/s**`, `**${ratio(loaded.applyPerSec, raw?.perSec ?? NaN)}**`],
        ...redis.map((r) => [`Portrait / Redis ${r.mode}`, ratio(loaded.applyPerSec, r.perSec), ""]),
        ["batches applied / mean messages per batch", `${f0(after.batchMessages.count)} / ${(after.batchMessages.sum / Math.max(1, after.batchMessages.count)).toFixed(1)}`, ""],
        ["engine start to ready", `${f0(loaded.engine.startMs)} ms`, ""],
        ["item events the recs worker missed (its queue was full: co-visitation, trending, sessions, rules)", `${f0(after.recsItemEventsDropped)} of ${loaded.events}`, ""],
        ["LMDB on disk / per user", `${(disk / 2 ** 20).toFixed(1)} MiB / ${f0(disk / Math.max(1, users))} B`, ""],
        ["engine data dir (LMDB + models cache) / per user", `${(dataDir / 2 ** 20).toFixed(1)} MiB / ${f0(dataDir / Math.max(1, users))} B`, ""],
        ["CPU per message, raw consume: consumer / nats-server", raw !== undefined ? `${raw.cpuUsPerMsg.consumer.toFixed(1)} / ${raw.cpuUsPerMsg.natsServer.toFixed(1)} µs` : "-", ""],
        ["CPU per event, Portrait apply: engine / nats-server", `${loaded.cpuPerEvent.engine.toFixed(1)} / ${loaded.cpuPerEvent.natsServer.toFixed(1)} µs`,
          raw !== undefined ? ratio(raw.cpuUsPerMsg.consumer + raw.cpuUsPerMsg.natsServer, loaded.cpuPerEvent.engine + loaded.cpuPerEvent.natsServer) : ""],
        ["engine CPU per event by thread (busiest first; main = the event loop)", loaded.cpuPerEvent.threads.map(([t, us]) => `${t} ${us.toFixed(1)}`).join(", ") + " µs", ""],
        ["engine RSS max / CPU cores mean while applying", loaded.samples.length > 0 ? `${f0(Math.max(...loaded.samples.map((s) => s.rssMiB)))} MiB / ${(loaded.samples.reduce((a, s) => a + s.engineCores, 0) / loaded.samples.length).toFixed(2)}` : "- (no sample: applied in under 1 s)", ""],
      ];
      return {
        title: "max-ingest",
        header: ["measure", "value", "ratio to raw consume"],
        rows,
        notes: [
          `Source: ${describeSource(ctx)}; events pre-encoded in the publisher processes, published with Nats-Msg-Id.`,
          "Order: preload (raw publish) -> raw consume -> Redis baselines -> engine; each reads the whole stream from its start with its own consumers.",
          ...(redisSkipped ? [redisSkipped] : []),
          `Models: ${loaded.engine.models.join(", ") || "none"}.`,
          "Redis baselines (bench/harness/redis-baseline.ts): per event 4-5 pipelined HINCRBY/HINCRBYFLOAT/HSET through ioredis, one round trip per fetched batch (\"pipeline\", bound by the client at ~4 commands per event), or one EVALSHA per batch (\"lua\"); ack after Redis replies. Counters only: no decayed affinities, sessions, LSTM, redelivery skip or durability (the local Redis keeps nothing on disk). Compare Portrait with the lua figure.",
          `Lag over time (s: total lag / largest partition): ${loaded.samples.map((s) => `${s.t.toFixed(0)}: ${s.lag}/${s.maxPartitionLag}`).join(", ")}`,
        ],
        raw: { loaded, raw, redis, redisRaw, redisSkipped, diskBytes: disk, dataDirBytes: dataDir, users, meanBytes: prep.meanBytes, samples: loaded.samples },
        chart: {
          series: [
            { name: "applied events", points: loaded.samples.map((s) => [s.t, s.processed]) },
            { name: "total lag", points: loaded.samples.map((s) => [s.t, s.lag]) },
          ],
          options: { title: "max-ingest: applied and lag over time", xLabel: "seconds since the engine was ready", yLabel: "events", logY: false },
        },
      };
    } finally {
      await rig.close();
    }
  },
};
