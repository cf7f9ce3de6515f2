/**
 * `portrait demo`: the main job on an embedded default. Starts its own
 * nats-server (unless --nats is given) and the engine, replays a sample of a
 * real data set through it, waits until every event is applied or
 * dead-lettered, prints the most active user's profile, audiences and
 * recommendations, and shuts down. The starter audiences (README "Audiences")
 * are switched on before the replay.
 */
import { describeOrder } from "../recs/recommender.js";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PortraitClient } from "../client/portrait-client.js";
import { startNatsServer, type NatsServerHandle } from "../bus/nats-server-launcher.js";
import type { EngineOptions } from "../config/engine-options.js";
import type { DatasetFormat } from "../data/types.js";
import { Engine } from "../engine.js";
import { PortraitError, ErrorCode } from "../errors.js";
import { EventType } from "../wire/proto.js";
import { BUNDLED_MODELS_DIR, currentVersion } from "../models/artifacts.js";
import { trainPropensity } from "../train/train-propensity.js";
import { streamEvents } from "../train/training-events.js";
import { STARTER_NAMES, starterAudience } from "../actors/audience-starters.js";
import { formatProfile, predictionLines } from "./print-profile.js";
import { progress } from "./progress.js";
import { replay } from "./replay.js";

export interface DemoOptions {
  engine: EngineOptions;
  natsGiven: boolean;
  dataDirGiven: boolean;
  file: string;
  format: DatasetFormat;
  events: number;
  /** Train a purchase-propensity model on the demo's own stream with this horizon (minutes) and serve it; 0 = don't. */
  learnHorizonMin: number;
}

export async function runDemo(o: DemoOptions): Promise<void> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  let server: NatsServerHandle | undefined;
  let engine: Engine | undefined;
  let client: PortraitClient | undefined;
  const dataDir = o.dataDirGiven ? o.engine.dataDir! : mkdtempSync(join(tmpdir(), "portrait-demo-"));
  try {
    if (!o.natsGiven) {
      server = await startNatsServer();
      out(`started an embedded nats-server with JetStream at ${server.url}`);
    }
    const engineOptions: EngineOptions = {
      ...o.engine,
      natsUrl: server?.url ?? o.engine.natsUrl!,
      embeddedNats: o.natsGiven ? o.engine.embeddedNats! : "never",
      dataDir,
      httpPort: 0,
      logLevel: o.engine.logLevel === "info" ? "warn" : o.engine.logLevel!,
    };
    engine = await Engine.start(engineOptions);
    out(`engine ready: ${engine.config.partitions} partitions, ${engine.config.workers} shard worker(s), state in ${dataDir}, ` +
      `metrics at http://127.0.0.1:${engine.httpPort}/metrics`);
    client = await PortraitClient.connect({ natsUrl: engine.natsUrl, partitions: engine.config.partitions, subjectPrefix: engine.config.subjectPrefix, name: "portrait-demo" });

    const starters = STARTER_NAMES.filter((n) => n !== "category-lovers").map((n) => starterAudience(n)!);
    for (const d of starters) await client.audienceCreate(d);
    out(`switched on ${starters.length} starter audiences: ${starters.map((d) => d.id).join(", ")}`);
    const perUser = new Map<string, number>();
    const buyers = new Set<string>();
    const applied0 = await engine.metrics.total(engine.metrics.eventsApplied);
    const dead0 = await engine.metrics.total(engine.metrics.deadLetters);
    out(`replaying ${o.events} events of ${o.file} (${o.format})`);
    const bar = progress("published", undefined, { limit: o.events });
    const t0 = performance.now();
    const r = await replay(client, o.format, o.file, {
      limit: o.events,
      onProgress: (n) => bar.update(n),
      onEvent: (e) => {
        perUser.set(e.userId, (perUser.get(e.userId) ?? 0) + 1);
        if (e.type === EventType.PURCHASE) buyers.add(e.userId);
      },
    });
    bar.stop();
    const deadline = Date.now() + 120_000;
    let failed: unknown;
    engine.done.catch((err: unknown) => (failed = err));
    let applied = 0;
    let dead = 0;
    for (;;) {
      if (failed !== undefined) throw failed;
      applied = (await engine.metrics.total(engine.metrics.eventsApplied)) - applied0;
      dead = (await engine.metrics.total(engine.metrics.deadLetters)) - dead0;
      if (applied + dead >= r.stored) break;
      if (Date.now() > deadline) throw new PortraitError(ErrorCode.TIMEOUT, `only ${applied + dead} of ${r.stored} events were applied within 120 s`);
      await new Promise((res) => setTimeout(res, 20));
    }
    const seconds = (performance.now() - t0) / 1000;
    out(`published ${r.stored} events (${r.duplicates} duplicates dropped, ${r.skippedRows} rows skipped); ` +
      `applied ${applied}, dead-lettered ${dead}, in ${seconds.toFixed(2)} s (${(applied / seconds).toFixed(0)} events/s end to end) ` +
      `for ${perUser.size} users`);
    // The most active buyer shows every part of a profile; fall back to the most active user.
    const ranked = [...perUser.entries()].sort((a, b) => Number(buyers.has(b[0])) - Number(buyers.has(a[0])) || b[1] - a[1]);
    const top = ranked[0];
    if (top) {
      out(`\nprofile of the most active ${buyers.has(top[0]) ? "buyer" : "user"} (${top[1]} events), from request-reply ${engine.subjects.profileGet}:\n`);
      const profile = await client.getProfile(top[0]);
      out(formatProfile(profile));
      const mine = profile.audiences ?? [];
      out(`\ntheir audiences (${mine.length}): ${mine.map((m) => `${m.audienceId} since ${new Date(m.sinceMs).toISOString().slice(0, 10)}${m.holdout ? " (holdout)" : ""}`).join(", ") || "none"}`);
      const counts = await Promise.all(starters.map(async (d) => `${d.id} ${await client!.audienceCount(d.id)}`));
      out(`audience sizes: ${counts.join(", ")}`);
      const rec = await client.recommend(top[0], { k: 5 });
      out(`\ntop 5 recommendations for them, from request-reply ${engine.subjects.recommend} ` +
        `(${rec.candidates} candidates, order: ${describeOrder(rec.modelVersion, rec.backend)}):`);
      rec.items.forEach((it, i) => out(`  ${i + 1}. ${it.itemId.padEnd(12)} ${it.score.toFixed(3)}  ${it.reason}`));
      out(`\nthe same from another shell, while an engine runs:  portrait profile ${JSON.stringify(top[0])} --json; portrait recommend ${JSON.stringify(top[0])}`);
      if (o.learnHorizonMin > 0) {
        // Learn from this shop's own stream, then serve what was learned (with its evidence) after a restart.
        out(`\nlearning from this shop's own stream: portrait train propensity --from-stream --horizon ${o.learnHorizonMin}`);
        const modelsDir = join(dataDir, "models");
        cpSync(o.engine.modelsDir ?? BUNDLED_MODELS_DIR, modelsDir, { recursive: true });
        try {
          const events = await streamEvents({ natsUrl: engine.natsUrl, prefix: engine.config.subjectPrefix, partitions: engine.config.partitions });
          const lstm = currentVersion(modelsDir, "lstm");
          const { manifest } = await trainPropensity(events, {
            modelsDir, horizonMs: o.learnHorizonMin * 60_000, makeCurrent: true, ...(lstm !== undefined ? { lstmDir: join(modelsDir, "lstm", lstm) } : {}),
          });
          const e = manifest.evaluation!;
          out(`trained propensity ${manifest.version} on ${e.counts.train} examples; on the later window (${e.counts.test} examples) ` +
            `AUC ${e.challenger} vs ${Object.entries(e.baselines).map(([k, v]) => `${k} ${v}`).join(", ")}` +
            `${e.champion ? `, champion ${e.champion.version} ${e.champion.value}` : ""}`);
          await engine.close();
          engine = await Engine.start({ ...engineOptions, modelsDir });
          out(`engine restarted with it; the same user's predictions now:\n`);
          out(predictionLines(await client.getProfile(top[0])).join("\n"));
        } catch (err) {
          if (!(err instanceof PortraitError) || err.code !== ErrorCode.BAD_REQUEST) throw err;
          out(`not trained: ${err.message}`);
        }
      }
    }
  } finally {
    await client?.close();
    await engine?.close();
    await server?.stop();
    if (!o.dataDirGiven) rmSync(dataDir, { recursive: true, force: true });
  }
}
