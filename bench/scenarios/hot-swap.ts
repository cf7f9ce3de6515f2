/**
 * hot-swap: a model swap under load. The engine follows the model registry;
 * an open loop of recommendation and profile requests runs at a fixed rate;
 * a steady pass, then a pass during which a new LSTM + DeepFM pair and a new
 * churn model are promoted (the engine downloads them, loads them beside the
 * running ones and switches), then a steady pass after. Reported: failed
 * requests (target 0) and p99 during the swap against the steady p99
 * (target <= 2x), both over the whole pass and over the swap window (from
 * the promotion to the first reply of the new pair, plus one second), with
 * raw NATS request-reply at the same rate as the machine's limit.
 */
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveDataFile } from "../../src/data/datasets.js";
import { BUNDLED_MODELS_DIR, currentVersion, type ModelManifest } from "../../src/models/artifacts.js";
import { ModelRegistry } from "../../src/models/registry.js";
import { pb } from "../../src/wire/proto.js";
import { rawPublish, rawRequestReply } from "../harness/baselines.js";
import { sleep } from "../harness/ipc.js";
import { errText, newHist, pctMs, type Histogram } from "../harness/open-loop.js";
import { Rig } from "../harness/rig.js";
import { knownUsers, pcts, queryPass, userChooser } from "./common.js";
import { f0, f2, num, ratio, type Scenario } from "./scenario.js";

/** Copies of the bundled models under new versions: an LSTM + DeepFM pair (the DeepFM reading the new LSTM) and a churn model. */
function newVersions(root: string, tag: string): { lstm: string; deepfm: string; churn: string } {
  const out = { lstm: join(root, "lstm", tag), deepfm: join(root, "deepfm", tag), churn: join(root, "churn", tag) };
  for (const name of ["lstm", "deepfm", "churn"] as const) {
    cpSync(join(BUNDLED_MODELS_DIR, name, currentVersion(BUNDLED_MODELS_DIR, name)!), out[name], { recursive: true });
    const m = JSON.parse(readFileSync(join(out[name], "manifest.json"), "utf8")) as ModelManifest;
    m.version = tag;
    if (name === "deepfm") (m.features as { schema: { lstmVersion?: string } }).schema.lstmVersion = tag;
    writeFileSync(join(out[name], "manifest.json"), JSON.stringify(m));
  }
  return out;
}

interface Sample { t: number; ms: number; version: string }

export const hotSwap: Scenario = {
  name: "hot-swap",
  summary: "a model swap (LSTM + DeepFM pair and churn) promoted under a steady request load: failed requests and p99 during the swap vs steady",
  flags: {
    rate: { default: "200", smoke: "50", help: "requests per second (recommendations and profiles alternating)" },
    seconds: { default: "10", smoke: "4", help: "seconds per pass (steady, swap, steady after)" },
    warm: { default: "30000", smoke: "3000", help: "events of the Taobao slice applied before the passes" },
    candidates: { default: "200", help: "candidates ranked per recommendation" },
    partitions: { default: "8", smoke: "4", help: "partitions" },
  },
  async run(ctx) {
    const rate = num(ctx, "rate", 1, 5000);
    const seconds = num(ctx, "seconds", 2, 120);
    const warm = num(ctx, "warm", 100, 110_300);
    const candidates = num(ctx, "candidates", 1, 2000);
    const file = resolveDataFile(ctx.datasets, "taobao");
    const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: 1, prefix: "bswap" });
    try {
      const prep = await rig.preparePublishers({ kind: "dataset", format: "taobao", file }, warm);
      const pub = await rawPublish(rig, prep.events, 600_000);
      const engine = await rig.startEngine({ logLevel: process.env.BENCH_ENGINE_LOG ?? "warn", modelRegistry: true, recs: { ranking: { policy: "deepfm" } } });
      const applied = await rig.waitProcessed(pub.events, 600_000);
      if (!applied.reached) throw new Error(`the engine applied ${applied.processed} of ${pub.events}`);
      rig.log(`engine ready (models ${engine.models.join(", ")}), ${pub.events} events applied`);
      for (const deadline = Date.now() + 60_000; ;) {
        const r = await rig.client.recommend("bench-nobody", { k: 20, candidates }).catch(() => undefined);
        if (r !== undefined && r.items.length >= 10) break;
        if (Date.now() > deadline) throw new Error("the recs index did not fill");
        await sleep(200);
      }
      const users = await knownUsers(rig, 20_000);
      const userOf = userChooser(users, 0, 5);
      const reg = await ModelRegistry.open(rig.nc, { prefix: rig.s.prefix });
      const before = { deepfm: (await reg.promoted("deepfm"))!.version, lstm: (await reg.promoted("lstm"))!.version };
      const tag = `bench.${Date.now()}`;
      const dirs = newVersions(mkdtempSync(join(tmpdir(), "portrait-bench-swap-")), tag);
      for (const d of Object.values(dirs)) await reg.push(d);

      let samples: Sample[] = [];
      let k = 0;
      const send = async () => {
        const t = performance.now();
        if (k++ % 2 === 0) {
          const r = await rig.client.recommend(userOf(), { k: 10, candidates });
          samples.push({ t, ms: performance.now() - t, version: `${r.lstmVersion}/${r.modelVersion}` });
        } else {
          await rig.client.getProfile(userOf());
          samples.push({ t, ms: performance.now() - t, version: "profile" });
        }
      };
      const req = pb.RecommendRequest.encode({ userId: users[0] ?? "bench-nobody", k: 10, candidates }).finish();
      const replyBytes = (await rig.nc.request(rig.s.recommend, req, { timeout: 5000 })).data.length;
      await queryPass(rig, "recommend", rate, 1, send); // warm-up, not recorded
      const raw = await rawRequestReply(rig, req, replyBytes, rate, seconds);

      samples = [];
      const steady = await queryPass(rig, "recommend", rate, seconds, send);
      const steadySamples = samples;

      samples = [];
      let promotedAt = 0;
      const promoting = (async () => {
        await sleep((seconds * 1000) / 3);
        promotedAt = performance.now();
        await reg.promote("lstm", tag, { force: true, reason: "bench: hot swap under load" });
        await reg.promote("deepfm", tag, { force: true, reason: "bench: hot swap under load" });
        await reg.promote("churn", tag, { force: true, reason: "bench: hot swap under load" });
      })();
      const swap = await queryPass(rig, "recommend", rate, seconds, send);
      await promoting;
      const swapSamples = samples;
      const newPair = `${tag}/${tag}`;
      const firstNew = swapSamples.filter((s) => s.version === newPair).map((s) => s.t + s.ms).sort((a, b) => a - b)[0];
      const swapMs = firstNew !== undefined ? firstNew - promotedAt : NaN;
      const windowEnd = (firstNew ?? performance.now()) + 1000;
      const windowHist: Histogram = newHist();
      for (const s of swapSamples) if (s.t >= promotedAt && s.t <= windowEnd) windowHist.recordValue(Math.max(1, Math.round(s.ms * 1000)));
      const steadyService: Histogram = newHist();
      for (const s of steadySamples) steadyService.recordValue(Math.max(1, Math.round(s.ms * 1000)));
      const versions = [...new Set(swapSamples.map((s) => s.version))].filter((v) => v !== "profile");
      const mixed = versions.filter((v) => v !== newPair && v !== `${before.lstm}/${before.deepfm}`);

      samples = [];
      const after = await queryPass(rig, "recommend", rate, seconds, send);

      const header = ["pass", "req/s", "achieved", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "p99 / steady p99", "raw p99 ms"];
      const row = (name: string, q: typeof steady) => [
        name, String(rate), f0(q.pass.achieved), ...pcts(q.pass.lat), f2(q.pass.lat.maxValue / 1000), errText(q.pass.errors),
        ratio(pctMs(q.pass.lat, 99), pctMs(steady.pass.lat, 99)), f2(pctMs(raw.lat, 99)),
      ];
      const rows = [
        row("steady", steady),
        row("swap (whole pass)", swap),
        ["swap window (service time)", String(rate), "-", f2(pctMs(windowHist, 50)), f2(pctMs(windowHist, 99)), f2(pctMs(windowHist, 99.9)), f2(windowHist.maxValue / 1000), "-",
          ratio(pctMs(windowHist, 99), pctMs(steadyService, 99)), "-"],
        row("steady after", after),
      ];
      return {
        title: `hot swap under load, ${rate} req/s (recommend + profile), ${candidates} candidates`,
        header,
        rows,
        notes: [
          `State: ${pub.events} events of the Taobao slice, engine following the registry; swap: ${before.lstm}/${before.deepfm} -> ${tag}/${tag} (LSTM + DeepFM pair, promoted together) and churn -> ${tag}, promoted ${f0((seconds * 1000) / 3)} ms into the swap pass.`,
          `First reply of the new pair ${f0(swapMs)} ms after the first promotion (download from the Object Store, load beside the old versions in ${engine.workers} shard workers, the recs worker and the inference pool, switch). Replies during the swap named ${versions.join(", ")}; pairs other than the old or the new: ${mixed.length === 0 ? "none" : mixed.join(", ")}.`,
          `Swap window: requests sent from the promotion to 1 s after the first reply of the new pair (${windowHist.totalCount} requests), service time (send to reply), against the steady pass's service-time p99 ${f2(pctMs(steadyService, 99))} ms.`,
          "Open loop, latency from the intended send time (HDR), timeout 2 s; raw: the same request bytes to a trivial responder at the same rate, just before.",
        ],
        raw: {
          events: pub.events, tag, before, swapMs, versions, mixed,
          passes: Object.fromEntries(([["steady", steady], ["swap", swap], ["after", after]] as const).map(([n, q]) => [n, {
            achieved: q.pass.achieved, errors: q.pass.errors, p: [50, 99, 99.9].map((p) => [p, pctMs(q.pass.lat, p)]), max: q.pass.lat.maxValue / 1000,
          }])),
          window: [50, 99, 99.9].map((p) => [p, pctMs(windowHist, p)]), steadyService: [50, 99].map((p) => [p, pctMs(steadyService, p)]),
          raw: [50, 99].map((p) => [p, pctMs(raw.lat, p)]),
        },
      };
    } finally {
      await rig.close();
    }
  },
};
