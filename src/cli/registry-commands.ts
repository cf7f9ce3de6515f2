/**
 * `portrait models list|show|push|promote|rollback`: the model registry on
 * NATS (src/models/registry.ts) from the command line.
 *
 * `models promote <target>` takes `name@version` (a version in the registry),
 * a version directory (`models/churn/2026-12-06.1`, pushed first), a model
 * directory with a CURRENT file (`models/churn`, its CURRENT version pushed
 * first), or a models directory (each model in it with a CURRENT, LSTM before
 * DeepFM so that a pair is promoted in order). `--if-better` makes a refusal an ordinary outcome (exit 0, logged)
 * so that `portrait train ... && portrait models promote --if-better DIR`
 * runs unattended from a timer (scripts/systemd/).
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import type { NatsConnection } from "nats";
import { BadRequestError, PortraitError } from "../errors.js";
import { ENGINE_MODELS, ModelRegistry, lstmPairing, readLocalManifest } from "../models/registry.js";

export type WithNats = <T>(flags: Record<string, unknown>, work: (nc: NatsConnection, prefix: string) => Promise<T>) => Promise<T>;

/** Where a promote target points: a registry version, or a local directory to push first. */
export function parseTarget(target: string): { name: string; version: string; dir?: string } {
  const path = resolve(target);
  if (existsSync(path) && statSync(path).isDirectory()) {
    if (existsSync(join(path, "manifest.json"))) {
      const m = readLocalManifest(path);
      return { name: m.name, version: m.version, dir: path };
    }
    if (existsSync(join(path, "CURRENT"))) {
      const version = readFileSync(join(path, "CURRENT"), "utf8").trim();
      const dir = join(path, version);
      const m = readLocalManifest(dir);
      return { name: m.name, version: m.version, dir };
    }
    throw new BadRequestError(`${target} is a directory with neither manifest.json (a version) nor CURRENT (a model)`);
  }
  const at = target.indexOf("@");
  if (at <= 0 || at === target.length - 1) throw new BadRequestError(`${target} is neither name@version nor a model directory`);
  return { name: target.slice(0, at), version: target.slice(at + 1) };
}

/** The targets of `promote`: one, or each engine model (ENGINE_MODELS) of a models directory, in that order. */
export function parseTargets(target: string): Array<{ name: string; version: string; dir?: string }> {
  const path = resolve(target);
  if (existsSync(path) && statSync(path).isDirectory() && !existsSync(join(path, "manifest.json")) && !existsSync(join(path, "CURRENT"))) {
    // Only the models engines follow in the registry (the review sentiment model is read from --models, not promoted).
    const names = readdirSync(path).filter((n) => existsSync(join(path, n, "CURRENT")) && (ENGINE_MODELS as readonly string[]).includes(n));
    const order = (n: string) => {
      const i = (ENGINE_MODELS as readonly string[]).indexOf(n);
      return i < 0 ? ENGINE_MODELS.length : i;
    };
    names.sort((a, b) => order(a) - order(b) || (a < b ? -1 : 1));
    if (names.length === 0) throw new BadRequestError(`${target} holds no model directory with a CURRENT file`);
    return names.map((n) => parseTarget(join(path, n)));
  }
  return [parseTarget(target)];
}

function mib(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}

/** Promotes one target and prints the decision as one JSON line (a refusal too, with --if-better). */
async function promoteOne(reg: ModelRegistry, t: { name: string; version: string; dir?: string }, f: Record<string, unknown>): Promise<void> {
  if (t.dir !== undefined) await reg.push(t.dir);
  const at = new Date().toISOString();
  try {
    const r = await reg.promote(t.name, t.version, { force: f.force === true, ...(typeof f.reason === "string" ? { reason: f.reason } : {}) });
    console.log(JSON.stringify({ at, model: t.name, version: t.version, decision: "promoted", forced: r.record!.forced, replaced: r.record!.previous[0] ?? null, reason: r.reason }));
    if (t.name === "lstm") {
      const deepfm = await reg.promoted("deepfm");
      if (deepfm !== undefined) {
        const needs = lstmPairing(await reg.manifest("deepfm", deepfm.version));
        if (needs !== undefined && needs !== t.version) {
          console.error(`note: the promoted deepfm@${deepfm.version} reads LSTM ${needs}; engines keep running lstm@${needs} with it until a DeepFM trained with lstm@${t.version} is promoted`);
        }
      }
    }
  } catch (err) {
    const refused = err instanceof PortraitError && (err.code === "PROMOTION_REFUSED" || err.code === "MODEL_INCOMPATIBLE");
    if (f.ifBetter === true && refused) {
      console.log(JSON.stringify({ at, model: t.name, version: t.version, decision: "refused", code: (err as PortraitError).code, reason: (err as Error).message }));
      return;
    }
    throw err;
  }
}

export function registerRegistryCommands(program: Command, connectFlags: (cmd: Command) => Command, withNats: WithNats): void {
  const models = program.command("models").description("the model registry on NATS: list, show, push, promote, roll back (engines hot-swap what is promoted)");

  connectFlags(models.command("list").description("every version stored in the registry, the promoted one marked *")
    .argument("[name]", "only this model")
    .option("--json", "print JSON"))
    .action((name: string | undefined, f: Record<string, unknown>) => withNats(f, async (nc, prefix) => {
      const reg = await ModelRegistry.open(nc, { prefix });
      const [versions, promoted] = await Promise.all([reg.versions(name), reg.promotedAll()]);
      if (f.json === true) {
        console.log(JSON.stringify({ versions, promoted: Object.fromEntries(promoted) }, null, 2));
        return;
      }
      if (versions.length === 0) console.log(`no model in the registry ${reg.bucketNames.objects}`);
      for (const v of versions) {
        const p = promoted.get(v.name);
        const mark = p?.version === v.version ? "*" : " ";
        console.log(`${mark} ${v.name}@${v.version}  ${v.files.length} files, ${mib(v.bytes)}, stored ${v.mtime}` +
          (p?.version === v.version ? `  (${p.kind}${p.forced ? ", forced" : ""} ${p.at}: ${p.reason})` : ""));
      }
    }));

  connectFlags(models.command("show").description("a model's promoted record, or a version's manifest (evaluation and promotion)")
    .argument("<model>", "name (the promoted version) or name@version"))
    .action((spec: string, f: Record<string, unknown>) => withNats(f, async (nc, prefix) => {
      const reg = await ModelRegistry.open(nc, { prefix });
      const [name, wanted] = spec.split("@", 2) as [string, string | undefined];
      const record = await reg.promoted(name);
      const version = wanted ?? record?.version;
      if (version === undefined) throw new BadRequestError(`nothing is promoted for ${name}; name a version: ${name}@<version> (\`portrait models list ${name}\`)`);
      const m = await reg.manifest(name, version);
      console.log(JSON.stringify({
        promoted: record ?? null, name: m.name, version: m.version, createdAt: m.createdAt, format: m.format,
        ...(lstmPairing(m) !== undefined ? { lstmPairing: lstmPairing(m) } : {}),
        training: m.training, metrics: m.metrics, evaluation: m.evaluation ?? null, promotion: m.promotion ?? null, files: m.files,
      }, null, 2));
    }));

  connectFlags(models.command("push").description("upload a locally trained version directory (models/<name>/<version>/) to the registry, without promoting it")
    .argument("<dir>", "a version directory, or a model directory with CURRENT"))
    .action((target: string, f: Record<string, unknown>) => withNats(f, async (nc, prefix) => {
      const t = parseTarget(target);
      if (t.dir === undefined) throw new BadRequestError(`${target} is not a directory`);
      const reg = await ModelRegistry.open(nc, { prefix, create: true });
      const m = await reg.push(t.dir);
      console.log(`pushed ${m.name}@${m.version} to ${reg.bucketNames.objects}`);
    }));

  connectFlags(models.command("promote")
    .description("promote a version: refused unless its evaluation beats the champion and every baseline on the same window (--force overrides, and is recorded)")
    .argument("<target>", "name@version in the registry, a version directory, a model directory with CURRENT, or a models directory (pushed first)")
    .option("--force", "promote even when the evaluation loses or is absent (recorded as forced)")
    .option("--if-better", "a refusal is an outcome, not an error: log the decision and exit 0 (for timers)")
    .option("--reason <text>", "recorded with the promotion"))
    .action((target: string, f: Record<string, unknown>) => withNats(f, async (nc, prefix) => {
      const targets = parseTargets(target);
      const local = targets.some((t) => t.dir !== undefined);
      const reg = await ModelRegistry.open(nc, { prefix, create: local });
      for (const t of targets) await promoteOne(reg, t, f);
    }));

  connectFlags(models.command("rollback").description("promote again the version promoted before the current one (recorded as a forced rollback)")
    .argument("<name>", "model name")
    .option("--reason <text>", "recorded with the rollback"))
    .action((name: string, f: Record<string, unknown>) => withNats(f, async (nc, prefix) => {
      const reg = await ModelRegistry.open(nc, { prefix });
      const before = await reg.promoted(name);
      const r = await reg.rollback(name, typeof f.reason === "string" ? f.reason : undefined);
      console.log(`rolled ${name} back from ${before?.version} to ${r.version}`);
    }));
}
