/**
 * The model registry on a real nats-server: artifacts through the Object
 * Store, promotions through the KV bucket, the promotion rule, and the typed
 * errors for a missing bucket, a corrupt artifact and an incompatible manifest.
 */
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode } from "../src/errors.js";
import { BUNDLED_MODELS_DIR, currentVersion, type ModelEvaluation, type ModelManifest } from "../src/models/artifacts.js";
import { ModelRegistry, decidePromotion } from "../src/models/registry.js";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { uniquePrefix } from "./helpers/engine.js";
import { subjects } from "../src/bus/subjects.js";
import { startTestNats, tmpDir } from "./helpers/nats.js";

let server: NatsServerHandle;
let nc: NatsConnection;
const churnSeed = currentVersion(BUNDLED_MODELS_DIR, "churn")!;

beforeAll(async () => {
  server = await startTestNats();
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/** A copy of the bundled churn version as `churn@version`, with `edit` applied to its manifest. */
function churnVersion(version: string, edit: (m: ModelManifest) => void = () => undefined): string {
  const root = tmpDir("portrait-reg-models");
  const dir = join(root, "churn", version);
  cpSync(join(BUNDLED_MODELS_DIR, "churn", churnSeed), dir, { recursive: true });
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ModelManifest;
  m.version = version;
  edit(m);
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
  return dir;
}

/** The event stream the registry tests' evaluations come from (a deployment with prefix "test"). */
const TEST_STREAM = "TEST_EVENTS";

function evaluation(
  challenger: number, champion: { version: string; value: number } | undefined, baselines: Record<string, number>, source = `stream:${TEST_STREAM}`,
): ModelEvaluation {
  return {
    source, trainWindow: { fromMs: 0, toMs: 1000 }, testWindow: { fromMs: 1000, toMs: 2000 },
    counts: { train: 100, test: 50 }, metric: "AUC", higherIsBetter: true, challenger, ...(champion ? { champion } : {}), baselines,
  };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "resolved";
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

describe("model registry - Object Store and KV", () => {
  it("registry - a missing bucket is REGISTRY_MISSING, and reading does not create it", async () => {
    const prefix = uniquePrefix("regmiss");
    expect(await code(ModelRegistry.open(nc, { prefix }))).toBe(ErrorCode.REGISTRY_MISSING);
    const jsm = await nc.jetstreamManager();
    const names = (await jsm.streams.names().next()).filter((n) => n.includes(prefix.toUpperCase()));
    expect(names).toEqual([]);
  });

  it("registry - push, list, seed, promote on a win, refuse a loss, force, rollback: files and records round-trip", async () => {
    const prefix = uniquePrefix("reg");
    const reg = await ModelRegistry.open(nc, { prefix, create: true });
    const shop = `stream:${subjects(prefix).eventStream}`;
    // Seed: the bundled CURRENT, promoted as the seed, once.
    expect(await reg.seed(BUNDLED_MODELS_DIR, ["churn"])).toEqual(["churn"]);
    expect(await reg.seed(BUNDLED_MODELS_DIR, ["churn"])).toEqual([]);
    const seed = (await reg.promoted("churn"))!;
    expect(seed).toMatchObject({ version: churnSeed, kind: "seed", forced: true, previous: [] });

    // Round trip: every file comes back byte for byte.
    const cache = tmpDir("portrait-reg-cache");
    const got = await reg.fetch("churn", churnSeed, cache);
    for (const f of ["manifest.json", "model.json", "alternative.json", "rfm-baseline.json"]) {
      const original = readFileSync(join(BUNDLED_MODELS_DIR, "churn", churnSeed, f));
      if (f === "manifest.json") {
        const back = JSON.parse(readFileSync(join(got, f), "utf8")) as ModelManifest;
        expect(back.promotion).toMatchObject({ forced: true });
        expect({ ...back, promotion: undefined }).toEqual({ ...JSON.parse(original.toString("utf8")), promotion: undefined });
      } else {
        expect(readFileSync(join(got, f)).equals(original)).toBe(true);
      }
    }

    // A challenger that beats the champion but not every baseline is refused; nothing changes.
    await reg.push(churnVersion("t.2", (m) => (m.evaluation = evaluation(0.8, { version: churnSeed, value: 0.7 }, { popularity: 0.6, "rfm-logistic": 0.81 }, shop))));
    const refused = reg.promote("churn", "t.2");
    await expect(refused).rejects.toMatchObject({ code: ErrorCode.PROMOTION_REFUSED });
    await expect(refused).rejects.toThrow(/does not beat baseline rfm-logistic 0\.8100/);
    expect((await reg.promoted("churn"))!.version).toBe(churnSeed);

    // A version without evaluation needs --force, and says so.
    await reg.push(churnVersion("t.3"));
    await expect(reg.promote("churn", "t.3")).rejects.toThrow(/no evaluation.*--force/);

    // A win on another stream or on a public data set file says nothing about this shop: refused, and says why.
    await reg.push(churnVersion("t.5", (m) => (m.evaluation = evaluation(0.85, { version: churnSeed, value: 0.7 }, { popularity: 0.6 }, "file:online-retail:x.csv"))));
    await expect(reg.promote("churn", "t.5")).rejects.toThrow(/evaluated on file:online-retail:x\.csv, not on this shop's stream .*--from-stream/);
    await reg.push(churnVersion("t.6", (m) => (m.evaluation = evaluation(0.85, { version: churnSeed, value: 0.7 }, { popularity: 0.6 }, "stream:OTHER_EVENTS"))));
    await expect(reg.promote("churn", "t.6")).rejects.toMatchObject({ code: ErrorCode.PROMOTION_REFUSED });
    expect((await reg.promoted("churn"))!.version).toBe(churnSeed);

    // A win is promoted; the stored manifest records it (not forced).
    await reg.push(churnVersion("t.4", (m) => (m.evaluation = evaluation(0.85, { version: churnSeed, value: 0.7 }, { popularity: 0.6, "rfm-logistic": 0.8 }, shop))));
    const win = await reg.promote("churn", "t.4");
    expect(win.record).toMatchObject({ version: "t.4", forced: false, kind: "promote", previous: [churnSeed] });
    expect((await reg.manifest("churn", "t.4")).promotion).toMatchObject({ forced: false, replaced: churnSeed });

    // Forced: recorded as forced.
    const forced = await reg.promote("churn", "t.3", { force: true });
    expect(forced.record).toMatchObject({ version: "t.3", forced: true, previous: ["t.4", churnSeed] });
    expect((await reg.manifest("churn", "t.3")).promotion).toMatchObject({ forced: true, replaced: "t.4" });

    // Rollback walks the list back; nothing before the seed.
    expect(await reg.rollback("churn")).toMatchObject({ version: "t.4", kind: "rollback", previous: [churnSeed] });
    expect(await reg.rollback("churn")).toMatchObject({ version: churnSeed, previous: [] });
    await expect(reg.rollback("churn")).rejects.toMatchObject({ code: ErrorCode.BAD_REQUEST });

    const versions = (await reg.versions("churn")).map((v) => v.version);
    expect(versions).toEqual([churnSeed, "t.2", "t.3", "t.4", "t.5", "t.6"].sort());
    // A reader that does not create sees the same registry.
    const reader = await ModelRegistry.open(nc, { prefix });
    expect((await reader.promoted("churn"))!.version).toBe(churnSeed);
  });

  it("registry - a corrupt artifact (digest mismatch) is MODEL_CORRUPT on fetch and promote", async () => {
    const prefix = uniquePrefix("regbad");
    const reg = await ModelRegistry.open(nc, { prefix, create: true });
    await reg.push(churnVersion("c.1"));
    // Rewrite the stored chunk of model.json with one flipped byte: the Object Store's digest no longer matches.
    const info = (await reg.objects.info("churn/c.1/model.json"))!;
    const jsm = await nc.jetstreamManager();
    const stream = `OBJ_${reg.bucketNames.objects}`;
    const chunkSubject = `$O.${reg.bucketNames.objects}.C.${info.nuid}`;
    const msg = await jsm.streams.getMessage(stream, { last_by_subj: chunkSubject });
    const bytes = msg.data.slice();
    bytes[10] = bytes[10]! ^ 0xff;
    await jsm.streams.purge(stream, { filter: chunkSubject });
    await nc.jetstream().publish(chunkSubject, bytes);
    const cache = tmpDir("portrait-reg-cache");
    const fetched = reg.fetch("churn", "c.1", cache);
    await expect(fetched).rejects.toMatchObject({ code: ErrorCode.MODEL_CORRUPT });
    await expect(fetched).rejects.toThrow(/digest/);
    await expect(reg.promote("churn", "c.1", { force: true })).rejects.toMatchObject({ code: ErrorCode.MODEL_CORRUPT });
    // A file the manifest names that is not there.
    const dir = churnVersion("c.2");
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ ...JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")), files: { model: "missing.json" } }));
    await expect(reg.push(dir)).rejects.toMatchObject({ code: ErrorCode.MODEL_CORRUPT });
  });

  it("registry - a manifest of an incompatible schema is MODEL_INCOMPATIBLE: unknown format, DeepFM paired with another LSTM", async () => {
    const prefix = uniquePrefix("reginc");
    const reg = await ModelRegistry.open(nc, { prefix, create: true });
    await expect(reg.push(churnVersion("i.1", (m) => (m.format = "pickle")))).rejects.toMatchObject({ code: ErrorCode.MODEL_INCOMPATIBLE });
    await reg.seed(BUNDLED_MODELS_DIR, ["lstm"]);
    const lstm = (await reg.promoted("lstm"))!.version;
    // A DeepFM manifest (the bundled one's) that reads another LSTM version's state.
    const root = tmpDir("portrait-reg-models");
    const deepfm = currentVersion(BUNDLED_MODELS_DIR, "deepfm")!;
    const dir = join(root, "deepfm", "i.2");
    cpSync(join(BUNDLED_MODELS_DIR, "deepfm", deepfm), dir, { recursive: true });
    const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ModelManifest & { features: { schema: { lstmVersion?: string } } };
    m.version = "i.2";
    m.features.schema.lstmVersion = "not-" + lstm;
    writeFileSync(join(dir, "manifest.json"), JSON.stringify(m));
    await reg.push(dir);
    const p = reg.promote("deepfm", "i.2", { force: true });
    await expect(p).rejects.toMatchObject({ code: ErrorCode.MODEL_INCOMPATIBLE });
    await expect(p).rejects.toThrow(new RegExp(`promote lstm@not-${lstm} first`));
  });

  it("registry - decidePromotion: lower-is-better metrics, a stale champion, no baseline", () => {
    const m = (e: ModelEvaluation | undefined): ModelManifest => ({ name: "churn", version: "x", evaluation: e } as ModelManifest);
    const lower = (c: number): ModelEvaluation => ({ ...evaluation(c, { version: "a", value: 0.5 }, { popularity: 0.6 }), metric: "logloss", higherIsBetter: false });
    expect(decidePromotion(m(lower(0.4)), "a", TEST_STREAM).promote).toBe(true);
    expect(decidePromotion(m(lower(0.55)), "a", TEST_STREAM).promote).toBe(false);
    expect(decidePromotion(m(lower(0.4)), "b", TEST_STREAM).reason).toMatch(/evaluated against churn@a, but churn@b is promoted/);
    expect(decidePromotion(m(evaluation(0.9, undefined, {})), undefined, TEST_STREAM).reason).toMatch(/names no baseline/);
    expect(decidePromotion(m(evaluation(0.9, undefined, { popularity: 0.5 })), undefined, TEST_STREAM).promote).toBe(true);
  });
});
