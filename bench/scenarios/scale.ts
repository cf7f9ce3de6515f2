/**
 * scale: state for many users (10M for the real run): every user gets a few
 * events, the engine applies them all; then the engine is stopped and started
 * again on that state. Reports disk per user, start-up time to ready, RSS at
 * rest, and checks a sample of profiles.
 */
import { join } from "node:path";
import { rssBytes } from "../harness/proc-stats.js";
import { dirBytes, Rig } from "../harness/rig.js";
import { rawConsume } from "../harness/baselines.js";
import { f0, num, type Scenario } from "./scenario.js";
import { seededRandom } from "../../src/models/seeded-random.js";

const SLICE_USERS = 500_000;

export const scale: Scenario = {
  name: "scale",
  summary: "state for --users users (10M for the real run): disk per user, restart time to ready, RSS",
  flags: {
    users: { default: "10000000", smoke: "3000", help: "users, each with --events-per-user events" },
    "events-per-user": { default: "2", help: "events per user (a view, then carts)" },
    partitions: { default: "16", smoke: "4", help: "partitions" },
    publishers: { default: "2", smoke: "1", help: "publisher processes" },
    "timeout-s": { default: "5400", smoke: "120", help: "bound on the whole load" },
  },
  async run(ctx) {
    const users = num(ctx, "users", 1, 100_000_000);
    const per = num(ctx, "events-per-user", 1, 100);
    const deadline = Date.now() + num(ctx, "timeout-s", 10, 86_400) * 1000;
    const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: num(ctx, "publishers", 1, 16), prefix: "bscale" });
    try {
      const first = await rig.startEngine();
      const sampler = rig.sampleResources(5000);
      const t0 = performance.now();
      let published = 0;
      // Slices of users keep the publishers' memory bounded; the engine applies while the next slice is prepared.
      for (let offset = 0; offset < users; offset += SLICE_USERS) {
        const n = Math.min(SLICE_USERS, users - offset);
        await rig.preparePublishers({ kind: "users", offset, eventsPerUser: per }, n * per);
        await rig.startPublishing(0, n * per, Math.max(1, (deadline - Date.now()) / 1000));
        published += (await rig.haltPublishing(true)).sent;
        const p = (await rig.snapshot()).processed;
        ctx.log(`scale: published ${published} events (${offset + n} users), applied ${p} (${f0(p / ((performance.now() - t0) / 1000))}/s)`);
        if (Date.now() > deadline) throw new Error("scale: --timeout-s reached while publishing");
      }
      const done = await rig.waitProcessed(published, Math.max(1000, deadline - Date.now()));
      const applySeconds = (performance.now() - t0) / 1000;
      const samples = await sampler.stop();
      if (!done.reached) throw new Error(`scale: the engine applied ${done.processed} of ${published}`);
      const loadedRss = rssBytes(rig.engine!.pid) / 2 ** 20;
      await rig.stopEngine();
      // LMDB alone (the profiles); the data dir also holds the models cache, a fixed few MiB whatever the user count.
      const disk = dirBytes(join(rig.engineDataDir, "lmdb"));
      const dataDir = dirBytes(rig.engineDataDir);
      // The stream holds every event: consuming it bare gives the machine's limit for the same data.
      const raw = ctx.smoke || users <= 1_000_000 ? await rawConsume(rig, published, { timeoutMs: 1_800_000 }) : undefined;
      const again = await rig.startEngine();
      const restRss = rssBytes(rig.engine!.pid) / 2 ** 20;
      const rnd = seededRandom(5);
      let checked = 0;
      let wrong = 0;
      for (let i = 0; i < 200; i++) {
        const u = Math.floor(rnd() * users);
        const p = await rig.client.getProfile(`su${u}`);
        checked++;
        if (p.eventsApplied !== per) wrong++;
      }
      const afterQueriesRss = rssBytes(rig.engine!.pid) / 2 ** 20;
      const rows = [
        ["users / events", `${users} / ${published}`],
        ["applied (publish and apply overlapping)", `${f0(published / applySeconds)} events/s over ${f0(applySeconds)} s`],
        ...(raw ? [["raw JetStream consume of the same stream", `${f0(raw.perSec)} msg/s`]] : []),
        ["LMDB on disk / per user", `${(disk / 2 ** 30).toFixed(2)} GiB / ${f0(disk / users)} B`],
        ["engine data dir (LMDB + models cache) / per user", `${(dataDir / 2 ** 30).toFixed(2)} GiB / ${f0(dataDir / users)} B`],
        ["start-up to ready on that state (first start, empty)", `${f0(again.startMs)} ms (${f0(first.startMs)} ms)`],
        ["engine RSS: after loading / after restart / after 200 queries", `${f0(loadedRss)} / ${f0(restRss)} / ${f0(afterQueriesRss)} MiB`],
        ["engine RSS max while loading (sampled every 5 s)", samples.length > 0 ? `${f0(Math.max(...samples.map((s) => s.rssMiB)))} MiB` : "- (no sample: loaded in under 5 s)"],
        ["sampled profiles with the right event count", `${checked - wrong} / ${checked}`],
      ];
      return {
        title: `scale, ${users} users`,
        header: ["measure", "value"],
        rows,
        notes: [
          `Users su0..su${users - 1}, ${per} events each (a view, then carts; 100k items, 4k categories), published in slices of ${SLICE_USERS} users by ${rig.publishers.length} publishers with Nats-Msg-Id; models ${first.models.join(", ") || "none"}.`,
          "Disk: the size of every file in the engine's data directory (LMDB data and lock files) after a clean stop.",
          `Load samples, at most 30 shown (s: RSS MiB, applied; every sample in the JSON): ${samples.filter((_, i) => i % Math.max(1, Math.ceil(samples.length / 30)) === 0).map((s) => `${f0(s.t)}: ${f0(s.rssMiB)}, ${s.processed}`).join("; ")}`,
          "RSS counts LMDB's memory-mapped data file pages that the engine wrote or read (file-backed, reclaimable by the kernel), not only the heaps.",
        ],
        raw: { users, per, published, applySeconds, diskBytes: disk, dataDirBytes: dataDir, startMs: again.startMs, firstStartMs: first.startMs, loadedRss, restRss, afterQueriesRss, checked, wrong, raw, samples },
        chart: {
          series: [{ name: "engine RSS MiB", points: samples.map((s) => [s.t, s.rssMiB]) }],
          options: { title: `scale: engine RSS while loading ${users} users`, xLabel: "seconds", yLabel: "MiB", logY: false },
        },
      };
    } finally {
      await rig.close();
    }
  },
};

