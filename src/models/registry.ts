/**
 * The model registry on NATS: existing JetStream components, nothing
 * home-made.
 *
 * - Artifacts: the Object Store bucket `<PREFIX>_MODELS` holds every file of
 *   every pushed version as the object `<name>/<version>/<file>`
 *   (manifest.json included). JetStream records a SHA-256 digest per object;
 *   a read whose bytes do not match it is MODEL_CORRUPT.
 * - Promotions: the KV bucket `<PREFIX>_MODELS_PROMOTED` holds, under the key
 *   `<name>`, a PromotedRecord: the promoted version, when and why, whether it
 *   was forced, and the versions promoted before it (newest first, for
 *   rollback). The bucket keeps KV history too (an audit trail).
 *   Engines watch this bucket and hot-swap (src/engine-models.ts).
 * - The manifest stored for a promoted version records its `promotion`
 *   (ModelManifest.promotion: forced or on a win, and the reason).
 *
 * Promotion rule (`decidePromotion`): a challenger is promoted only when its
 * `evaluation` was made on this deployment's own event stream (source
 * `stream:<PREFIX>_EVENTS`; a file-trained model's win on a public data set
 * says nothing about this shop), beats the champion and every baseline on the
 * same later window (strictly, in the metric's direction), and the champion it
 * was scored against is the version promoted now. Anything else is refused with
 * PROMOTION_REFUSED and the reason, unless forced.
 *
 * Errors: REGISTRY_MISSING (a bucket does not exist and `create` was not
 * asked), MODEL_CORRUPT (digest mismatch, a file the manifest names is
 * missing, a manifest that does not parse), MODEL_INCOMPATIBLE (unknown
 * format, a name/version that is not the manifest's, a DeepFM reading another
 * LSTM than the promoted one), PROMOTION_REFUSED.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { KV, NatsConnection, ObjectStore } from "nats";
import { subjects } from "../bus/subjects.js";
import {
  BadRequestError, ModelCorruptError, ModelIncompatibleError, PromotionRefusedError, RegistryMissingError,
} from "../errors.js";
import { currentVersion, type ModelManifest, type ModelPromotion } from "./artifacts.js";

/** Artifact formats this engine can run, by the manifest's `format`. */
export const KNOWN_FORMATS: ReadonlySet<string> = new Set(["tfjs-layers", "json", "deepfm-f32le+onnx", "deepfm-f32le", "deepfm-f32"]);
/** The models an engine runs and swaps (other names may be stored and promoted, e.g. by newer trainers). */
export const ENGINE_MODELS = ["lstm", "churn", "propensity", "ranker", "deepfm"] as const;
export type EngineModelName = (typeof ENGINE_MODELS)[number];

const NAME_RE = /^[a-z][a-z0-9-]{0,31}$/;
const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Versions kept in a PromotedRecord for rollback. */
const ROLLBACK_DEPTH = 20;
/** KV history per key (JetStream's maximum is 64). */
const KV_HISTORY = 16;

/** The value of `<name>` in the promotions bucket. */
export interface PromotedRecord {
  version: string;
  /** ISO time of the promotion (or rollback). */
  at: string;
  forced: boolean;
  reason: string;
  /** "seed" (bundled on first start), "promote" or "rollback". */
  kind: "seed" | "promote" | "rollback";
  /** Versions promoted before this one, newest first: what `rollback` goes back to. */
  previous: string[];
}

/** A version as the Object Store holds it. */
export interface StoredVersion {
  name: string;
  version: string;
  files: string[];
  bytes: number;
  /** ISO time of the newest file's upload. */
  mtime: string;
}

/** The outcome of `decidePromotion` and of `promote`. */
export interface PromotionDecision {
  promote: boolean;
  reason: string;
}

/** The DeepFM's LSTM pairing: the LSTM version whose hidden state its dense inputs read, if any. */
export function lstmPairing(m: ModelManifest): string | undefined {
  return (m.features as { schema?: { lstmVersion?: string } } | undefined)?.schema?.lstmVersion;
}

/** Checks that a manifest is one this engine understands; MODEL_INCOMPATIBLE otherwise. */
export function checkManifest(m: ModelManifest, where: string): void {
  if (typeof m !== "object" || m === null) throw new ModelCorruptError(`${where}: manifest.json is not an object`);
  if (typeof m.name !== "string" || !NAME_RE.test(m.name)) throw new ModelIncompatibleError(`${where}: manifest name ${JSON.stringify(m.name)} is not a model name (${NAME_RE})`);
  if (typeof m.version !== "string" || !VERSION_RE.test(m.version)) throw new ModelIncompatibleError(`${where}: manifest version ${JSON.stringify(m.version)} is not a version (${VERSION_RE})`);
  if (!KNOWN_FORMATS.has(m.format)) {
    throw new ModelIncompatibleError(`${where}: ${m.name}@${m.version} has format ${JSON.stringify(m.format)}; this Portrait runs ${[...KNOWN_FORMATS].join(", ")}`);
  }
  if (typeof m.files !== "object" || m.files === null) throw new ModelIncompatibleError(`${where}: ${m.name}@${m.version} has no "files" table`);
}

/**
 * Whether `m` may replace `promoted` (the version promoted now, if any) in the
 * deployment whose event stream is `shopStream`: its evaluation must come from
 * that stream, beat the champion and every baseline on the same window, and
 * that champion must be the one promoted now.
 */
export function decidePromotion(m: ModelManifest, promoted: string | undefined, shopStream: string): PromotionDecision {
  const e = m.evaluation;
  const id = `${m.name}@${m.version}`;
  if (promoted === m.version) return { promote: false, reason: `${id} is already the promoted version` };
  if (e === undefined) {
    return { promote: false, reason: `${id} has no evaluation on this shop's data (manifest "evaluation" is absent): it can only be promoted with --force` };
  }
  // The shop's data: its event stream, or its training log of recommendation feedback (the feedback ranker's, README
  // "The feedback loop"; subjects.ts names both from the same prefix: <PREFIX>_EVENTS, <PREFIX>_FEEDBACK).
  const feedbackStream = shopStream.replace(/_EVENTS$/, "_FEEDBACK");
  if (e.source !== `stream:${shopStream}` && e.source !== `stream:${feedbackStream}`) {
    return { promote: false, reason: `${id} was evaluated on ${e.source}, not on this shop's stream ${shopStream}: ` +
      `train it with --from-stream (or promote it with --force)` };
  }
  const better = (a: number, b: number) => (e.higherIsBetter ? a > b : a < b);
  const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(4) : String(x));
  if (!Number.isFinite(e.challenger)) return { promote: false, reason: `${id}: its ${e.metric} is ${e.challenger}, not a number` };
  if (promoted !== undefined) {
    if (e.champion === undefined) return { promote: false, reason: `${id} was evaluated with no champion, but ${m.name}@${promoted} is promoted: evaluate it against that one` };
    if (e.champion.version !== promoted) {
      return { promote: false, reason: `${id} was evaluated against ${m.name}@${e.champion.version}, but ${m.name}@${promoted} is promoted now: evaluate it again` };
    }
  }
  const losses: string[] = [];
  if (e.champion !== undefined && !better(e.challenger, e.champion.value)) losses.push(`champion ${e.champion.version} ${fmt(e.champion.value)}`);
  const baselines = Object.entries(e.baselines ?? {});
  if (baselines.length === 0) return { promote: false, reason: `${id}: its evaluation names no baseline; it must beat at least one simple baseline` };
  for (const [b, v] of baselines) if (!better(e.challenger, v)) losses.push(`baseline ${b} ${fmt(v)}`);
  const window = `${new Date(e.testWindow.fromMs).toISOString()}..${new Date(e.testWindow.toMs).toISOString()}`;
  const dir = e.higherIsBetter ? "higher" : "lower";
  if (losses.length > 0) {
    return { promote: false, reason: `${id} ${e.metric} ${fmt(e.challenger)} (${dir} is better) does not beat ${losses.join(", ")} on ${window}` };
  }
  const against = [...(e.champion !== undefined ? [`champion ${e.champion.version} ${fmt(e.champion.value)}`] : []), ...baselines.map(([b, v]) => `${b} ${fmt(v)}`)];
  return { promote: true, reason: `${id} ${e.metric} ${fmt(e.challenger)} beats ${against.join(", ")} on ${window}` };
}

function isNotFound(err: unknown): boolean {
  const e = err as { code?: string; message?: string; api_error?: { err_code?: number } };
  return e?.api_error?.err_code === 10059 || e?.code === "404" || /stream not found|bucket not found/i.test(e?.message ?? "");
}

function objectName(name: string, version: string, file: string): string {
  return `${name}/${version}/${file}`;
}

/** Every regular file under `dir`, as paths relative to it ("/"-separated). */
function filesUnder(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const d of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const r = rel === "" ? d.name : `${rel}/${d.name}`;
    if (d.isDirectory()) out.push(...filesUnder(dir, r));
    else if (d.isFile()) out.push(r);
  }
  return out.sort();
}

/** Reads and checks a local version directory's manifest (MODEL_CORRUPT / MODEL_INCOMPATIBLE). */
export function readLocalManifest(dir: string): ModelManifest {
  let m: ModelManifest;
  try {
    m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ModelManifest;
  } catch (err) {
    throw new ModelCorruptError(`${dir}: manifest.json cannot be read: ${(err as Error).message}`, { cause: err });
  }
  checkManifest(m, dir);
  for (const f of Object.values(m.files)) {
    if (!existsSync(join(dir, f))) throw new ModelCorruptError(`${dir}: ${m.name}@${m.version} names the file ${f}, which is missing`);
  }
  return m;
}

async function readAll(os: ObjectStore, name: string): Promise<Uint8Array | undefined> {
  let r;
  try {
    r = await os.get(name);
  } catch (err) {
    throw new ModelCorruptError(`registry object ${name} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (r === null) return undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    const reader = r.data.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
    const err = await r.error;
    if (err !== null && err !== undefined) throw err;
  } catch (err) {
    throw new ModelCorruptError(`registry object ${name} is corrupt: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export interface OpenRegistryOptions {
  /** Subject prefix of the deployment (src/bus/subjects.ts); default "portrait". */
  prefix?: string;
  /** Create the buckets when missing (engines, `models push`); else REGISTRY_MISSING. */
  create?: boolean;
}

export class ModelRegistry {
  readonly objects: ObjectStore;
  readonly promotions: KV;
  readonly bucketNames: { objects: string; promoted: string };
  /** The deployment's event stream: the only evaluation source a promotion on a win accepts. */
  readonly shopStream: string;

  private constructor(objects: ObjectStore, promotions: KV, names: { objects: string; promoted: string }, shopStream: string) {
    this.objects = objects;
    this.promotions = promotions;
    this.bucketNames = names;
    this.shopStream = shopStream;
  }

  static async open(nc: NatsConnection, o: OpenRegistryOptions = {}): Promise<ModelRegistry> {
    const s = subjects(o.prefix ?? "portrait");
    const names = { objects: s.modelObjects, promoted: s.modelPromoted };
    const js = nc.jetstream();
    if (o.create !== true) {
      // Object Store views always create their bucket: look the streams up first, so that reading a registry never makes one.
      const jsm = await nc.jetstreamManager();
      for (const [stream, what] of [[`OBJ_${names.objects}`, "Object Store"], [`KV_${names.promoted}`, "KV"]] as const) {
        try {
          await jsm.streams.info(stream);
        } catch (err) {
          if (!isNotFound(err)) throw err;
          throw new RegistryMissingError(`the model registry's ${what} bucket ${stream.slice(stream.indexOf("_") + 1)} does not exist on this NATS server ` +
            `(start an engine with the registry on, or \`portrait models push\`, with --prefix ${s.prefix})`, { cause: err });
        }
      }
    }
    const objects = await js.views.os(names.objects, { description: "Portrait model artifacts: <name>/<version>/<file>" });
    const promotions = await js.views.kv(names.promoted, { history: KV_HISTORY });
    return new ModelRegistry(objects, promotions, names, s.eventStream);
  }

  /**
   * Uploads every file of a local version directory (`models/<name>/<version>/`),
   * manifest.json last, so that a version whose manifest is listed is complete.
   * An existing version is replaced file by file.
   */
  async push(dir: string): Promise<ModelManifest> {
    const m = readLocalManifest(dir);
    const files = filesUnder(dir).filter((f) => f !== "manifest.json");
    for (const f of files) {
      await this.objects.putBlob({ name: objectName(m.name, m.version, f) }, readFileSync(join(dir, f)));
    }
    // Pushing a version again keeps the promotion the registry recorded for it (the local manifest does not know of it).
    const stored = await readAll(this.objects, objectName(m.name, m.version, "manifest.json")).catch(() => undefined);
    const promotion = stored !== undefined ? (JSON.parse(new TextDecoder().decode(stored)) as ModelManifest).promotion : undefined;
    const bytes = promotion !== undefined && m.promotion === undefined
      ? new TextEncoder().encode(JSON.stringify({ ...m, promotion }, null, 2) + "\n")
      : readFileSync(join(dir, "manifest.json"));
    await this.objects.putBlob({ name: objectName(m.name, m.version, "manifest.json") }, bytes);
    return m;
  }

  /** Every stored version (of `name`, when given), oldest version string first. */
  async versions(name?: string): Promise<StoredVersion[]> {
    const by = new Map<string, StoredVersion>();
    for (const o of await this.objects.list()) {
      if (o.deleted) continue;
      const [n, v, ...rest] = o.name.split("/");
      if (n === undefined || v === undefined || rest.length === 0 || (name !== undefined && n !== name)) continue;
      const key = `${n}/${v}`;
      const sv = by.get(key) ?? { name: n, version: v, files: [], bytes: 0, mtime: "" };
      sv.files.push(rest.join("/"));
      sv.bytes += o.size;
      if (o.mtime > sv.mtime) sv.mtime = o.mtime;
      by.set(key, sv);
    }
    return [...by.values()].sort((a, b) => (a.name === b.name ? (a.version < b.version ? -1 : 1) : a.name < b.name ? -1 : 1));
  }

  /** The stored manifest of name@version; BAD_REQUEST when the version is not in the registry. */
  async manifest(name: string, version: string): Promise<ModelManifest> {
    const bytes = await readAll(this.objects, objectName(name, version, "manifest.json"));
    if (bytes === undefined) {
      const have = (await this.versions(name)).map((v) => v.version);
      throw new BadRequestError(`no ${name}@${version} in the registry ${this.bucketNames.objects}; versions: ${have.join(", ") || "none"} (push it with \`portrait models push <dir>\`)`);
    }
    let m: ModelManifest;
    try {
      m = JSON.parse(new TextDecoder().decode(bytes)) as ModelManifest;
    } catch (err) {
      throw new ModelCorruptError(`registry ${name}@${version}: manifest.json does not parse: ${(err as Error).message}`, { cause: err });
    }
    checkManifest(m, `registry ${name}@${version}`);
    if (m.name !== name || m.version !== version) throw new ModelIncompatibleError(`registry ${name}@${version} holds the manifest of ${m.name}@${m.version}`);
    return m;
  }

  /** The promotion record of `name`, or undefined when nothing was promoted. */
  async promoted(name: string): Promise<PromotedRecord | undefined> {
    const e = await this.promotions.get(name);
    if (e === null || e.operation !== "PUT" || e.value.length === 0) return undefined;
    return JSON.parse(new TextDecoder().decode(e.value)) as PromotedRecord;
  }

  /** Every promoted model name with its record. */
  async promotedAll(): Promise<Map<string, PromotedRecord>> {
    const out = new Map<string, PromotedRecord>();
    for await (const k of await this.promotions.keys()) {
      const r = await this.promoted(k);
      if (r !== undefined) out.set(k, r);
    }
    return out;
  }

  /**
   * Promotes name@version: refused (PROMOTION_REFUSED, nothing changes) when
   * `decidePromotion` says no and `force` is not set. Checks the pairing of a
   * DeepFM with the promoted LSTM (MODEL_INCOMPATIBLE) and that every file of
   * the version reads back intact (MODEL_CORRUPT). The version's stored
   * manifest gets its `promotion`, then the KV record is written with
   * compare-and-set on the revision read (a concurrent promotion makes this
   * one fail rather than be lost).
   */
  async promote(name: string, version: string, o: { force?: boolean; reason?: string; kind?: PromotedRecord["kind"] } = {}): Promise<PromotionDecision & { record?: PromotedRecord }> {
    const m = await this.manifest(name, version);
    const entry = await this.promotions.get(name);
    const current = entry !== null && entry.operation === "PUT" && entry.value.length > 0 ? JSON.parse(new TextDecoder().decode(entry.value)) as PromotedRecord : undefined;
    const decision = decidePromotion(m, current?.version, this.shopStream);
    if (current?.version === version) throw new PromotionRefusedError(decision.reason);
    if (!decision.promote && o.force !== true) throw new PromotionRefusedError(`${decision.reason}; not promoted`);
    if (name === "deepfm") {
      const needs = lstmPairing(m);
      const lstm = await this.promoted("lstm");
      if (needs !== undefined && lstm !== undefined && lstm.version !== needs) {
        throw new ModelIncompatibleError(`deepfm@${version} reads the state of LSTM ${needs}, but lstm@${lstm.version} is promoted: ` +
          `promote lstm@${needs} first, or a DeepFM trained with lstm@${lstm.version}`);
      }
    }
    await this.verify(name, version);
    const forced = !decision.promote;
    const reason = o.reason ?? (forced ? `forced: ${decision.reason}` : decision.reason);
    const at = new Date().toISOString();
    const promotion: ModelPromotion = { at, forced, reason, ...(current !== undefined ? { replaced: current.version } : {}) };
    await this.objects.putBlob({ name: objectName(name, version, "manifest.json") }, new TextEncoder().encode(JSON.stringify({ ...m, promotion }, null, 2) + "\n"));
    const record: PromotedRecord = {
      version, at, forced, reason, kind: o.kind ?? "promote",
      previous: current !== undefined ? [current.version, ...current.previous.filter((v) => v !== version)].slice(0, ROLLBACK_DEPTH) : [],
    };
    await this.#write(name, record, entry?.revision);
    return { promote: true, reason, record };
  }

  /** Promotes the version promoted before the current one (recorded as a forced rollback). BAD_REQUEST when there is none. */
  async rollback(name: string, reason?: string): Promise<PromotedRecord> {
    const entry = await this.promotions.get(name);
    const current = entry !== null && entry.operation === "PUT" && entry.value.length > 0 ? JSON.parse(new TextDecoder().decode(entry.value)) as PromotedRecord : undefined;
    if (current === undefined) throw new BadRequestError(`nothing is promoted for ${name}: no rollback`);
    const back = current.previous[0];
    if (back === undefined) throw new BadRequestError(`${name}@${current.version} has no earlier promoted version to roll back to`);
    const m = await this.manifest(name, back);
    await this.verify(name, back);
    const at = new Date().toISOString();
    const why = reason ?? `rollback from ${current.version}`;
    await this.objects.putBlob({ name: objectName(name, back, "manifest.json") },
      new TextEncoder().encode(JSON.stringify({ ...m, promotion: { at, forced: true, reason: why, replaced: current.version } }, null, 2) + "\n"));
    const record: PromotedRecord = { version: back, at, forced: true, reason: why, kind: "rollback", previous: current.previous.slice(1) };
    await this.#write(name, record, entry!.revision);
    return record;
  }

  async #write(name: string, record: PromotedRecord, revision: number | undefined): Promise<void> {
    const bytes = new TextEncoder().encode(JSON.stringify(record));
    try {
      if (revision === undefined) await this.promotions.create(name, bytes);
      else await this.promotions.update(name, bytes, revision);
    } catch (err) {
      throw new PromotionRefusedError(`${name}: another promotion changed the registry meanwhile (${(err as Error).message}); look again with \`portrait models show ${name}\``, { cause: err });
    }
  }

  /** Reads every file of name@version back (digests checked) without keeping it; MODEL_CORRUPT on the first bad one. */
  async verify(name: string, version: string): Promise<void> {
    const m = await this.manifest(name, version);
    const stored = new Set((await this.versions(name)).find((v) => v.version === version)?.files ?? []);
    for (const f of Object.values(m.files)) {
      if (!stored.has(f)) throw new ModelCorruptError(`registry ${name}@${version}: the manifest names ${f}, which is not stored`);
    }
    for (const f of stored) await readAll(this.objects, objectName(name, version, f));
  }

  /**
   * Downloads name@version into `<cacheRoot>/<name>/<version>/` (every file,
   * digests checked by the Object Store read) and returns that directory. A
   * complete earlier download is reused; a download goes to a temporary
   * directory that is renamed into place, so a crash leaves no half version.
   */
  async fetch(name: string, version: string, cacheRoot: string): Promise<string> {
    const dir = join(cacheRoot, name, version);
    if (existsSync(join(dir, "manifest.json"))) return dir;
    const m = await this.manifest(name, version);
    const sv = (await this.versions(name)).find((v) => v.version === version);
    const files = sv?.files ?? [];
    for (const f of Object.values(m.files)) {
      if (!files.includes(f)) throw new ModelCorruptError(`registry ${name}@${version}: the manifest names ${f}, which is not stored`);
    }
    const tmp = join(cacheRoot, name, `.${version}.${process.pid}.${Date.now()}`);
    rmSync(tmp, { recursive: true, force: true });
    try {
      for (const f of files) {
        const bytes = await readAll(this.objects, objectName(name, version, f));
        if (bytes === undefined) throw new ModelCorruptError(`registry ${name}@${version}: ${f} vanished while downloading`);
        const path = join(tmp, f);
        mkdirSync(join(path, ".."), { recursive: true });
        writeFileSync(path, bytes);
      }
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    return dir;
  }

  /**
   * Seeds the registry from bundled models: for each name that has no
   * promoted version yet, pushes `<root>/<name>/<CURRENT>` (when that version
   * is not stored already) and promotes it, recorded as the seed. Another
   * engine seeding at the same time is harmless: the KV create of the second
   * fails and its record is left as the first wrote it. Returns the names seeded.
   */
  /**
   * Makes `root` hold the promoted version of each of `names` as its CURRENT
   * (downloading what is missing), so that a model trained into `root` is
   * scored against the champion the engines run, the one promotion compares
   * it with. Returns the versions that became CURRENT.
   */
  async checkoutPromoted(root: string, names: readonly string[]): Promise<Array<{ name: string; version: string }>> {
    const changed: Array<{ name: string; version: string }> = [];
    for (const name of names) {
      const p = await this.promoted(name);
      if (p === undefined) continue;
      await this.fetch(name, p.version, root);
      const current = join(root, name, "CURRENT");
      if (existsSync(current) && readFileSync(current, "utf8").trim() === p.version) continue;
      writeFileSync(current, p.version + "\n");
      changed.push({ name, version: p.version });
    }
    return changed;
  }

  async seed(root: string, names: readonly string[]): Promise<string[]> {
    const seeded: string[] = [];
    for (const name of names) {
      if ((await this.promoted(name)) !== undefined) continue;
      const version = currentVersion(root, name);
      if (version === undefined) continue;
      const dir = join(root, name, version);
      if (!existsSync(dir) || !statSync(dir).isDirectory()) continue;
      if (!(await this.versions(name)).some((v) => v.version === version)) await this.push(dir);
      try {
        await this.promote(name, version, { force: true, kind: "seed", reason: `seed: the bundled ${name}/CURRENT (${version}) on first start` });
        seeded.push(name);
      } catch (err) {
        if ((await this.promoted(name)) === undefined) throw err;
      }
    }
    return seeded;
  }
}
