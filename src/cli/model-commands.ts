/**
 * `portrait train ...` and `portrait eval ...`: the model commands.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { BUNDLED_MODELS_DIR, currentVersion, readManifest, resolveModel, type ModelManifest } from "../models/artifacts.js";
import { BadRequestError, ErrorCode, PortraitError } from "../errors.js";
import { connectNats } from "../bus/connect.js";
import { ENGINE_MODELS, ModelRegistry } from "../models/registry.js";
import { trainPropensity } from "../train/train-propensity.js";
import { fileEvents, streamEvents, type TrainingEvents } from "../train/training-events.js";
import { progress } from "./progress.js";
import { evalTableMarkdown, formatEvalTable, type EvalTable } from "../eval/eval-table.js";
import { evalLstm } from "../eval/lstm-eval.js";
import { TF_BACKENDS } from "../models/tf-backends.js";
import { DATASET_FORMATS, type DatasetFormat } from "../data/types.js";
import { evalChurn } from "../eval/churn-eval.js";
import { evalRisk } from "../eval/risk-eval.js";
import { evalSocial, SOCIAL_RANKERS } from "../eval/social-eval.js";
import { evalDeepFm } from "../eval/deepfm-eval.js";
import { evalPrequential } from "../eval/prequential.js";
import { carveValidation, evalNextClick, evalNextClickSplit, NEXT_CLICK_SPLIT_FORMATS, readNextClickTrain, type NextClickSplitFormat } from "../eval/next-click.js";
import { selectPolicy, writePolicyFile } from "../eval/ranking-selection.js";
import { basename } from "node:path";
import type { RecsOptions } from "../recs/recs-options.js";
import { trainChurn } from "../train/train-churn.js";
import { SENTIMENT_DATA_FILE, trainSentiment } from "../train/train-sentiment.js";
import { trainRanker } from "../train/train-ranker.js";
import { estimateOffPolicy, LOGGED_GREEDY, namedTarget, offPolicyContext, readFeedbackLog, weightsTarget, type LoggedRequest, type TargetPolicy } from "../eval/offpolicy.js";
import { readRankerWeights } from "../models/ranker-model.js";
import { subjects } from "../bus/subjects.js";
import { existsSync } from "node:fs";
import { join } from "node:path";

function posInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function shareArg(v: string): number {
  const n = Number(v);
  if (!(n > 0 && n < 1)) throw new InvalidArgumentError("must be a number between 0 and 1 (exclusive)");
  return n;
}

/** Progress lines on stderr for training and evaluation: at most one every 2 s, plus every note that changes phase. */
export function progressLines(label: string): (done: number, total: number, note: string) => void {
  const t0 = Date.now();
  let last = 0;
  let lastNote = "";
  return (done, total, note) => {
    const now = Date.now();
    const phase = note.replace(/[\d.]+/g, "#");
    if (now - last < 2000 && phase === lastNote && done < total) return;
    last = now;
    lastNote = phase;
    process.stderr.write(`[${label} ${((now - t0) / 1000).toFixed(1)}s] ${note}${total > 0 ? ` (${done}/${total})` : ""}\n`);
  };
}

interface CommonFlags { datasets: string; models: string; seed: number; current: boolean; backend: string }

function common(cmd: Command, datasets: string): Command {
  return cmd
    .option("--datasets <dir>", "directory of the public data sets", datasets)
    .option("--models <dir>", "models directory; the model is written to <dir>/<name>/<version>/", BUNDLED_MODELS_DIR)
    .option("--seed <n>", "random seed", posInt, 42)
    .option("--no-current", "do not make the new version the default (CURRENT)");
}

export function registerModelCommands(program: Command, datasets: string): void {
  const train = program.command("train").description("train a model on the public data sets, or on the shop's own stream (--from-stream: churn, propensity, deepfm), and write models/<name>/<version>/");
  common(
    streamFlags(train.command("lstm"))
      .description("the LSTM user encoder: next item, next category and purchase propensity (Yoochoose, Taobao, REES46)")
      .option("--epochs <n>", "most epochs (early stopping on the validation window ends sooner)", posInt, 12)
      .option("--hidden <n>", "LSTM hidden size", posInt, 32)
      .option("--max-seconds <n>", "start no new epoch after this long", posInt, 1200)
      .option("--learning-rate <x>", "Adam learning rate", Number, 0.01)
      .option("--batch-positions <n>", "event positions per mini-batch", posInt, 512)
      .addOption(new Option("--backend <name>", "TF.js backend").choices(["auto", ...TF_BACKENDS]).default("auto")),
    datasets,
  ).action(async (f: CommonFlags & StreamFlags & { epochs: number; hidden: number; maxSeconds: number; learningRate: number; batchPositions: number }) => {
    if (f.fromStream) throw notFromStream("lstm", true);
    // TF.js is loaded by the commands that train on it, not by every command (`portrait start` never does).
    const { trainLstm } = await import("../train/train-lstm.js");
    const r = await trainLstm({
      learningRate: f.learningRate, batchPositions: f.batchPositions,
      dataDir: f.datasets, modelsDir: f.models, seed: f.seed, makeCurrent: f.current,
      epochs: f.epochs, hidden: f.hidden, maxSeconds: f.maxSeconds, backend: f.backend as "auto",
      onProgress: progressLines("train lstm"),
    });
    console.log(`wrote ${r.dir} (backend ${r.manifest.training.backend}, ${r.manifest.training.seconds} s)`);
    for (const m of r.manifest.metrics) console.log(`${m.task}: ${Object.entries(m.values).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(", ")}`);
  });

  common(
    train.command("sentiment")
      .description("review sentiment (hashed uni/bigram logistic regression, our own code) and the aspect vocabulary; Amazon reviews, strict time split, beside the wink-nlp lexicon")
      .option("--file <path>", "reviews file relative to --datasets", SENTIMENT_DATA_FILE),
    datasets,
  ).action(async (f: CommonFlags & { file: string }) => {
    const r = await trainSentiment({ dataDir: f.datasets, file: f.file, modelsDir: f.models, seed: f.seed, makeCurrent: f.current, onProgress: progressLines("train sentiment") });
    printTrained(r.dir, r.manifest);
  });

  common(
    streamFlags(train.command("churn")
      .description("the churn model: P(no purchase in the next 90 days) from the profile; UCI Online Retail, or the shop's own stream with --from-stream")),
    datasets,
  ).action(async (f: CommonFlags & StreamFlags) => {
    const events = f.fromStream ? await readStream(f) : undefined;
    const r = await trainChurn({
      dataDir: f.datasets, modelsDir: f.models, seed: f.seed, makeCurrent: f.current, onProgress: progressLines("train churn"),
      ...(events !== undefined ? { events } : {}),
    });
    printTrained(r.dir, r.manifest);
  });

  common(
    streamFlags(train.command("propensity")
      .description("purchase propensity: P(a purchase within --horizon minutes) from the profile; the shop's own stream (--from-stream) or a data set file (--format)"))
      .option("--horizon <minutes>", "label window after each cut-off, minutes", posInt, 30)
      .addOption(new Option("--format <format>", "data set, without --from-stream").choices(["taobao", "rees46", "online-retail"]).default("rees46"))
      .option("--file <path>", "data file relative to --datasets (default: the format's file)")
      .option("--lstm <version>", 'when there is no propensity model yet, the champion is this LSTM\'s purchase head: a version, "current" or "off"', "current"),
    datasets,
  ).action(async (f: CommonFlags & StreamFlags & { horizon: number; format: DatasetFormat; file?: string; lstm: string }) => {
    const events = f.fromStream
      ? await readStream(f)
      : await fileEvents(f.datasets, f.format, f.file, { ...(f.since !== undefined ? { sinceMs: f.since } : {}), ...(f.until !== undefined ? { untilMs: f.until } : {}) });
    // After readStream: it may have made the registry's promoted LSTM CURRENT.
    const lstmDir = f.lstm === "off" || (f.lstm === "current" && currentVersion(f.models, "lstm") === undefined)
      ? undefined : resolveModel(f.models, f.lstm === "current" ? "lstm" : `lstm@${f.lstm}`).dir;
    const r = await trainPropensity(events, {
      modelsDir: f.models, horizonMs: f.horizon * 60_000, seed: f.seed, makeCurrent: f.current, onProgress: progressLines("train propensity"),
      ...(lstmDir !== undefined ? { lstmDir } : {}),
    });
    printTrained(r.dir, r.manifest);
  });

  common(
    streamFlags(train.command("ranker")
      .description("the feedback ranker from the training log of logged impressions and clicks (--from-feedback), inverse-propensity weighted; evaluated off-policy against the promoted ranker"))
      .option("--from-feedback", "learn from the engine's training log (stream <PREFIX>_FEEDBACK)")
      .option("--l2 <x>", "L2 penalty on the source weights", Number, 1),
    datasets,
  ).action(async (f: CommonFlags & StreamFlags & { fromFeedback?: boolean; l2: number }) => {
    if (!f.fromFeedback) throw notFromStream("ranker", f.fromStream);
    await checkoutChampions(f);
    const { requests, source } = await readFeedback(f);
    const champ = currentVersion(f.models, "ranker");
    const champion = champ !== undefined ? { version: champ, weights: readRankerWeights(resolveModel(f.models, `ranker@${champ}`).dir) } : undefined;
    const r = trainRanker(requests, { modelsDir: f.models, source, l2: f.l2, makeCurrent: f.current, ...(champion !== undefined ? { champion } : {}) });
    printTrained(r.dir, r.manifest);
    console.log(`weights: ${JSON.stringify(r.weights)}`);
  });

  common(
    streamFlags(train.command("all")
      .description("every model that can be trained from the shop's own stream (churn, propensity, deepfm), from one read of it; a model the stream is too short or too thin for is skipped with the reason"))
      .option("--horizon <minutes>", "the propensity model's horizon, minutes", posInt, 30)
      .option("--lstm <version>", 'the DeepFM\'s LSTM input: a version, "current" (if one exists) or "off"', "current")
      .option("--epochs <n>", "the DeepFM's most epochs", posInt, 12)
      .option("--max-seconds <n>", "the DeepFM starts no new epoch after this long", posInt, 1200),
    datasets,
  ).action(async (f: CommonFlags & StreamFlags & { horizon: number; lstm: string; epochs: number; maxSeconds: number }) => {
    if (!f.fromStream) throw new BadRequestError("portrait train all trains every model that can learn from the shop's stream: add --from-stream (or train the models one by one on data set files)");
    const events = await readStream(f);
    const skipped: string[] = [];
    const attempt = async (name: string, run: () => Promise<{ dir: string; manifest: ModelManifest }>) => {
      try {
        const r = await run();
        printTrained(r.dir, r.manifest);
      } catch (err) {
        if (!(err instanceof BadRequestError)) throw err;
        skipped.push(`${name}: ${err.message}`);
        process.stderr.write(`skipped ${name}: ${err.message}\n`);
      }
    };
    await attempt("churn", () => trainChurn({ dataDir: f.datasets, modelsDir: f.models, seed: f.seed, makeCurrent: f.current, events, onProgress: progressLines("train churn") }));
    await attempt("propensity", () => trainPropensity(events, {
      modelsDir: f.models, horizonMs: f.horizon * 60_000, seed: f.seed, makeCurrent: f.current, onProgress: progressLines("train propensity"),
    }));
    await attempt("deepfm", () => trainDeepFmOn(events, f));
    if (skipped.length === 3) throw new BadRequestError(`no model could be trained from ${events.source}: ${skipped.join("; ")}`);
  });

  common(
    streamFlags(train.command("deepfm"))
      .description("the DeepFM ranker on (user, item, context) rows: real interactions vs sampled negatives, later time window held out")
      .addOption(new Option("--format <format>", "data set").choices(["taobao", "rees46", "online-retail"]).default("taobao"))
      .option("--file <path>", "data file relative to --datasets (default: the format's file)")
      .option("--lstm <version>", 'LSTM whose hidden state is the dense user input: a version, "current" (if one exists) or "off"', "current")
      .option("--epochs <n>", "most epochs (early stopping on the validation window ends sooner)", posInt, 12)
      .option("--max-seconds <n>", "start no new epoch after this long", posInt, 1200)
      .addOption(new Option("--backend <name>", "TF.js backend").choices(["auto", ...TF_BACKENDS]).default("auto")),
    datasets,
  ).action(async (f: CommonFlags & StreamFlags & { format: DatasetFormat; file?: string; lstm: string; epochs: number; maxSeconds: number }) => {
    const r = await trainDeepFmOn(f.fromStream ? await readStream(f) : undefined, f);
    printTrained(r.dir, r.manifest);
  });

  const evalCmd = program.command("eval").description("evaluate a model against baselines on a held-out later time window");

  evalCmd.command("offpolicy")
    .description("estimates (95% intervals) of a ranking policy's click-through rate from the training log of logged impressions and clicks: slot-level IPS and SNIPS; item-level PBM-IPS, PBM-SNIPS and doubly robust under the position-based click model")
    .option("--policy <policy>", 'what to estimate: "logged-greedy", a ranking policy ("source:category", "prior"), a ranker version directory, or ranker@<version> under --models (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option("--models <dir>", "models directory (for ranker@<version>)", BUNDLED_MODELS_DIR)
    .option("--nats <url>", "NATS server of the training log", "nats://127.0.0.1:4222")
    .option("--prefix <prefix>", "subject prefix of the deployment (its training log is <PREFIX>_FEEDBACK)", "portrait")
    .option("--json", "print JSON")
    .action(async (f: { policy: string[]; models: string; nats: string; prefix: string; json?: boolean }) => {
      const { requests, source } = await readFeedback(f);
      const policies = f.policy.length > 0 ? f.policy : ["logged-greedy"];
      const ctx = offPolicyContext(requests);
      const rows = policies.map((p) => estimateOffPolicy(requests, offPolicyTarget(p, f.models), ctx));
      if (f.json) {
        console.log(JSON.stringify({ source, positionBias: ctx.bias?.theta ?? null, estimates: rows }, null, 2));
        return;
      }
      const fmt = (i: { estimate: number; low: number; high: number }) => `${i.estimate.toFixed(4)} [${i.low.toFixed(4)}, ${i.high.toFixed(4)}]`;
      console.log(`${source}: ${rows[0]?.requests ?? 0} replies, ${rows[0]?.impressions ?? 0} logged impressions, logged CTR ${(rows[0]?.logged ?? NaN).toFixed(4)}`);
      console.log(`position bias (slot 0 = 1, from ${ctx.bias?.replies ?? 0} exploring replies): ${ctx.bias?.theta.map((t) => t.toFixed(3)).join(" ") ?? `none: no item-level estimates (${ctx.noItemLevel ?? "?"})`}`);
      for (const r of rows) {
        console.log(`${r.policy}: IPS ${fmt(r.ips)}  SNIPS ${fmt(r.snips)}  (${r.matched} impressions agree in item and slot)`);
        console.log(`${" ".repeat(r.policy.length)}  PBM-IPS ${fmt(r.pbm)}  PBM-SNIPS ${fmt(r.pbmSn)}  DR ${fmt(r.dr)}  (${r.matchedItems} impressions of its items)`);
      }
    });
  type EvalFlags = { datasets: string; models: string; model?: string; json?: boolean; markdown?: boolean };
  const dirOf = (name: string, f: EvalFlags) => resolveModel(f.models, f.model ? `${name}@${f.model}` : name).dir;
  modelFlags(evalCmd.command("lstm")
    .description("LSTM: next click (Yoochoose), next category (Taobao), purchase within 10 min (Taobao, REES46) vs popularity, S-POP, item-kNN, session-kNN"), datasets)
    .action(async (f: EvalFlags) => {
      printTables(await evalLstm({ dataDir: f.datasets, modelDir: dirOf("lstm", f), onProgress: progressLines("eval lstm") }), f);
    });
  modelFlags(evalCmd.command("deepfm")
    .description("DeepFM on its held-out later window vs a first-order logistic regression and popularity (AUC, logloss)"), datasets)
    .addOption(new Option("--format <format>", "data set (default: the one the model was trained on)").choices(DATASET_FORMATS as unknown as string[]))
    .action(async (f: EvalFlags & { format?: DatasetFormat }) => {
      const dir = dirOf("deepfm", f);
      const lstmVersion = (readManifest(dir).features as { schema?: { lstmVersion?: string } }).schema?.lstmVersion;
      const lstmDir = lstmVersion !== undefined ? resolveModel(f.models, `lstm@${lstmVersion}`).dir : undefined;
      printTables([await evalDeepFm({
        dataDir: f.datasets, modelDir: dir, ...(f.format !== undefined ? { format: f.format } : {}),
        ...(lstmDir !== undefined ? { lstmDir } : {}), onProgress: progressLines("eval deepfm"),
      })], f);
    });
  evalCmd.command("prequential")
    .description("replay a real log in time order through the engine; before each purchase (or, with --targets next-click, each next click of a session), is its item in the top K? purchases: fresh profiles vs a daily snapshot vs popularity; next-click: the live engine vs offline SR, SKNN, item-kNN, S-POP, popularity on the same targets")
    .addOption(new Option("--format <format>", "data set").choices(["taobao", "online-retail", "rees46", "yoochoose", "diginetica"]).makeOptionMandatory())
    .option("--file <path>", "data file relative to --datasets (default: taobao's 9-day first_users file, or the format's file; next-click: the training file)")
    .option("--test-file <path>", "next-click on yoochoose: the test file (default: train_valid)")
    .option("--test-share <x>", "next-click on diginetica, rees46, taobao: the share of the log's clicks (in time order) after the split time; sessions ending after it are the test part", shareArg, 0.2)
    .option("--datasets <dir>", "directory of the public data sets", datasets)
    .option("--limit <n>", "read at most this many events", posInt)
    .addOption(new Option("--targets <kind>", "which events are scored").choices(["purchase", "purchase+click", "next-click"]).default("purchase"))
    .option("--max-targets <n>", "score at most this many targets, evenly spaced in time", posInt, 2000)
    .option("--nats <url>", "use this NATS server (default: start an embedded one)")
    .option("--deepfm <version>", 'DeepFM model the engine loads: a version, "current" or "off"', "current")
    .option("--lstm <version>", 'LSTM model the engine loads: a version, "current" or "off"', "current")
    .option("--policy <name>", 'ranking policy: auto, prior, blend, deepfm or source:<name> (default auto)')
    .option("--policy-file <path>", "ranking policy file (see README)")
    .addOption(new Option("--exclude-purchased <on|off>", "leave out items the user bought (recs option candidates.excludePurchased)").choices(["on", "off"]).default("on"))
    .addOption(new Option("--allow-recent <on|off>", "let recently viewed items be recommended (candidates.allowRecent)").choices(["on", "off"]).default("on"))
    .option("--recs <json>", 'recs options as JSON (README "Recommendations"), e.g. \'{"trending":{"halfLifeMs":2592000000}}\'; the flags above override their fields')
    .option("--write-policy <path>", "next-click: first choose the ranking policy on a validation carved from the training file (its last day), write it here, and evaluate with it")
    .option("--json", "print the table as JSON")
    .option("--markdown", "print the table as Markdown")
    .action(async (f: {
      format: DatasetFormat; file?: string; testFile?: string; testShare: number; datasets: string; limit?: number; targets: "purchase" | "purchase+click" | "next-click";
      maxTargets: number; nats?: string; deepfm: string; lstm: string; policy?: string; policyFile?: string; writePolicy?: string; recs?: string; excludePurchased: "on" | "off"; allowRecent: "on" | "off"; json?: boolean; markdown?: boolean;
    }) => {
      if (f.writePolicy !== undefined) {
        if (f.targets !== "next-click") throw new InvalidArgumentError("--write-policy needs --targets next-click");
        if (f.format !== "yoochoose") throw new InvalidArgumentError("--write-policy chooses the policy on Yoochoose's training file (--format yoochoose)");
        const tr = await readNextClickTrain({ dataDir: f.datasets, ...(f.file !== undefined ? { trainFile: f.file } : {}) });
        const carve = carveValidation(tr.events);
        const chosen = selectPolicy(carve.earlier, carve.validation, `${basename(tr.path)}: ${carve.description}`, { onProgress: progressLines("select policy") });
        writePolicyFile(f.writePolicy, chosen);
        const columns = ["policy", "HR@10", "MRR@10", "HR@20", "MRR@20", "targets"];
        printTables([{
          task: `ranking policy selection (chosen: ${chosen.policy}, written to ${f.writePolicy})`, split: chosen.validation, columns,
          rows: Object.entries(chosen.results).map(([policy, m]) => ({ policy, ...m })),
        }], f);
        f.policyFile = f.writePolicy;
      }
      const ranking = { ...(f.policy !== undefined ? { policy: f.policy as "auto" } : {}), ...(f.policyFile !== undefined ? { policyFile: f.policyFile } : {}) };
      let given: RecsOptions = {};
      try {
        given = f.recs !== undefined ? (JSON.parse(f.recs) as RecsOptions) : {};
      } catch (err) {
        throw new InvalidArgumentError(`--recs is not JSON: ${(err as Error).message}`);
      }
      const candidates = { ...given.candidates, excludePurchased: f.excludePurchased === "on", allowRecent: f.allowRecent === "on" };
      const engine = { deepfmModel: f.deepfm, lstmModel: f.lstm, recs: { ...given, ranking: { ...given.ranking, ...ranking }, candidates } };
      const common = { maxTargets: f.maxTargets, ...(f.nats !== undefined ? { natsUrl: f.nats } : {}), engine, onProgress: progressLines("eval prequential") };
      if (f.targets === "next-click") {
        if (f.format !== "yoochoose") {
          if (!(NEXT_CLICK_SPLIT_FORMATS as string[]).includes(f.format)) throw new InvalidArgumentError(`--targets next-click reads ${["yoochoose", ...NEXT_CLICK_SPLIT_FORMATS].join(", ")} logs`);
          if (f.testFile !== undefined) throw new InvalidArgumentError("--test-file is for --format yoochoose (the other logs are split by time, --test-share)");
          printTables([await evalNextClickSplit({
            dataDir: f.datasets, format: f.format as NextClickSplitFormat, ...(f.file !== undefined ? { file: f.file } : {}), testShare: f.testShare, ...common,
          })], f);
          return;
        }
        printTables([await evalNextClick({
          dataDir: f.datasets, ...(f.file !== undefined ? { trainFile: f.file } : {}), ...(f.testFile !== undefined ? { testFile: f.testFile } : {}), ...common,
        })], f);
        return;
      }
      printTables([await evalPrequential({
        dataDir: f.datasets, format: f.format, ...(f.file !== undefined ? { file: f.file } : {}), ...(f.limit !== undefined ? { limit: f.limit } : {}),
        targets: f.targets, ...common,
      })], f);
    });
  modelFlags(evalCmd.command("churn")
    .description("churn on Online Retail (cut-off 2011-09-10, 90-day horizon) vs the other model kind, RFM-only logistic regression, recency"), datasets)
    .action(async (f: EvalFlags) => {
      printTables([await evalChurn({ dataDir: f.datasets, modelDir: dirOf("churn", f), onProgress: progressLines("eval churn") })], f);
    });
  evalCmd.command("risk")
    .description("risk signals against planted anomalies: bots into Taobao, refund abusers into Online Retail, shared accounts into REES46 (precision and recall per signal)")
    .option("--datasets <dir>", "directory of the public data sets", datasets)
    .option("--seed <n>", "planting seed", posInt, 42)
    .option("--plants <n>", "planted users per signal", posInt, 50)
    .action(async (f: { datasets: string; seed: number; plants: number }) => {
      const rows = await evalRisk({ dataDir: f.datasets, seed: f.seed, plants: f.plants });
      console.log(`| signal | log | users | planted | flagged | true positives | precision | recall | seconds |`);
      console.log(`|---|---|---:|---:|---:|---:|---:|---:|---:|`);
      for (const r of rows) {
        console.log(`| ${r.signal} | ${r.log} | ${r.users} | ${r.planted} | ${r.flagged} | ${r.truePositives} | ${r.precision.toFixed(3)} | ${r.recall.toFixed(3)} | ${r.seconds.toFixed(1)} |`);
      }
      for (const r of rows) for (const x of r.falsePositiveExamples) console.log(`false positive (${r.signal}): ${x}`);
    });
  evalCmd.command("social")
    .description("friends' interests as a category ranking feature, on simulated follow graphs (random, planted homophily) over real logs: no public data set here has a social graph")
    .option("--datasets <dir>", "directory of the public data sets", datasets)
    .option("--seed <n>", "graph seed", posInt, 42)
    .option("--follows <n>", "users each user follows", posInt, 8)
    .option("--homophily <x>", "share of follows drawn among users of the same main category (planted graph)", Number, 0.5)
    .action(async (f: { datasets: string; seed: number; follows: number; homophily: number }) => {
      const rows = await evalSocial({ dataDir: f.datasets, seed: f.seed, follows: f.follows, homophily: f.homophily });
      console.log(`| log | graph | users (with friends' interests) | cohort | tasks | ${SOCIAL_RANKERS.map((r) => `HR@5 ${r}`).join(" | ")} | ${SOCIAL_RANKERS.map((r) => `MRR@5 ${r}`).join(" | ")} |`);
      console.log(`|---|---|---:|---|---:|${SOCIAL_RANKERS.map(() => "---:").join("|")}|${SOCIAL_RANKERS.map(() => "---:").join("|")}|`);
      for (const r of rows) {
        console.log(`| ${r.log} | ${r.graph} | ${r.users} (${r.usersWithFriends}) | ${r.cohort} | ${r.tasks} | ${SOCIAL_RANKERS.map((k) => r.hr[k].toFixed(3)).join(" | ")} | ${SOCIAL_RANKERS.map((k) => r.mrr[k].toFixed(3)).join(" | ")} |`);
      }
    });
}

/** `train deepfm` (and its part of `train all`): on the stream's events when given, else on the data set file. */
async function trainDeepFmOn(
  events: TrainingEvents | undefined,
  f: CommonFlags & { format?: DatasetFormat; file?: string; lstm: string; epochs: number; maxSeconds: number },
): Promise<{ dir: string; manifest: ModelManifest }> {
  let lstmDir: string | undefined;
  if (f.lstm !== "off" && !(f.lstm === "current" && currentVersion(f.models, "lstm") === undefined)) {
    lstmDir = resolveModel(f.models, f.lstm === "current" ? "lstm" : `lstm@${f.lstm}`).dir;
  }
  const { trainDeepFm } = await import("../train/train-deepfm.js");
  const r = await trainDeepFm({
    dataDir: f.datasets, ...(f.format !== undefined ? { format: f.format } : {}), ...(f.file !== undefined ? { file: f.file } : {}), modelsDir: f.models,
    ...(events !== undefined ? { events } : {}), ...(lstmDir !== undefined ? { lstmDir } : {}), seed: f.seed, epochs: f.epochs, maxSeconds: f.maxSeconds,
    makeCurrent: f.current, backend: (f.backend ?? "auto") as "auto", onProgress: progressLines("train deepfm"),
  });
  process.stderr.write(`deepfm: backend ${r.manifest.training.backend}, ${r.manifest.training.seconds} s of training, ${lstmDir ? `LSTM input from ${lstmDir}` : "no LSTM input"}\n`);
  return r;
}

interface StreamFlags { fromStream?: boolean; since?: number; until?: number; nats: string; prefix: string; partitions?: number }

/** Event-time bounds: an ISO time, Unix epoch ms, or a duration before now (30d, 12h, 90m). */
function timeArg(v: string): number {
  const ago = /^(\d+)([dhm])$/.exec(v);
  if (ago !== null) return Date.now() - Number(ago[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[ago[2] as "d" | "h" | "m"];
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError("must be an ISO time (2019-10-01T02:00:00Z), Unix epoch ms, or a duration before now (30d, 12h, 90m)");
  return n;
}

function streamFlags(cmd: Command): Command {
  return cmd
    .option("--from-stream", "train on the engine's own event stream (a JetStream ordered consumer) instead of a data set file")
    .option("--since <time>", "only events at or after this event time (ISO, epoch ms, or a duration before now: 30d)", timeArg)
    .option("--until <time>", "only events before this event time (ISO, epoch ms, or a duration before now)", timeArg)
    .option("--nats <url>", "NATS server of the stream", "nats://127.0.0.1:4222")
    .option("--prefix <prefix>", "subject prefix of the deployment (its stream is <PREFIX>_EVENTS)", "portrait")
    .option("--partitions <n>", "partition count of the deployment: events on a wrong partition are skipped, as the engine dead-letters them", posInt);
}

async function readStream(f: StreamFlags & { models: string }): Promise<TrainingEvents> {
  await checkoutChampions(f);
  const bar = progress("read stream", undefined);
  try {
    const r = await streamEvents({
      natsUrl: f.nats, prefix: f.prefix, ...(f.partitions !== undefined ? { partitions: f.partitions } : {}),
      ...(f.since !== undefined ? { sinceMs: f.since } : {}), ...(f.until !== undefined ? { untilMs: f.until } : {}),
      onProgress: (read) => bar.update(read),
    });
    process.stderr.write(`read ${r.read} messages from ${r.source}: ${r.events.length} events in the window, ` +
      `${r.skipped.invalid} invalid and ${r.skipped.outOfWindow} outside it skipped\n`);
    return r;
  } finally {
    bar.stop();
  }
}

/**
 * A model trained on the stream is scored against the champion the engines
 * run: the registry's promoted version of each model is made CURRENT in
 * --models before training (downloaded if missing), so that `models promote
 * --if-better` compares the same champion. A server with no registry leaves
 * --models as it is.
 */
async function checkoutChampions(f: StreamFlags & { models: string }): Promise<void> {
  const nc = await connectNats({ natsUrl: f.nats, name: "portrait-train" });
  try {
    const reg = await ModelRegistry.open(nc, { prefix: f.prefix }).catch((err: unknown) => {
      if (err instanceof PortraitError && err.code === ErrorCode.REGISTRY_MISSING) return undefined;
      throw err;
    });
    if (reg === undefined) {
      process.stderr.write(`no model registry for prefix ${f.prefix}: the champions are the CURRENT versions in ${f.models}\n`);
      return;
    }
    for (const c of await reg.checkoutPromoted(f.models, ENGINE_MODELS)) {
      process.stderr.write(`champion ${c.name}@${c.version}: promoted in the registry, now CURRENT in ${f.models}\n`);
    }
  } finally {
    await nc.close();
  }
}

/** Reads the training log of a deployment. */
async function readFeedback(f: { nats: string; prefix: string }): Promise<{ requests: LoggedRequest[]; source: string }> {
  const nc = await connectNats({ natsUrl: f.nats, name: "portrait-feedback" });
  try {
    const s = subjects(f.prefix);
    const requests = await readFeedbackLog(nc.jetstream(), await nc.jetstreamManager(), s);
    process.stderr.write(`read ${requests.length} replies with logged impressions from ${s.feedbackStream}\n`);
    return { requests, source: `stream:${s.feedbackStream}` };
  } finally {
    await nc.close();
  }
}

/** A --policy of `eval offpolicy`. */
function offPolicyTarget(p: string, models: string): TargetPolicy {
  if (p === "logged-greedy") return LOGGED_GREEDY;
  const named = namedTarget(p);
  if (named !== undefined) return named;
  const dir = existsSync(join(p, "manifest.json")) ? p : p.startsWith("ranker@") ? resolveModel(models, p).dir : undefined;
  if (dir === undefined) throw new BadRequestError(`--policy ${p}: not "logged-greedy", a ranking policy (source:<s>, prior), a ranker version directory, or ranker@<version>`);
  return weightsTarget(`ranker@${readManifest(dir).version}`, readRankerWeights(dir));
}

/** The typed refusal of a model that cannot be trained from the stream yet. */
function notFromStream(name: string, fromStream: boolean | undefined): BadRequestError {
  return new BadRequestError(fromStream
    ? `training ${name} from the shop's stream is not supported yet: churn, propensity and deepfm are (portrait train churn|propensity|deepfm --from-stream); ` +
      `${name === "lstm" ? `train ${name} on a data set file without --from-stream` : "the ranker learns from logged feedback: portrait train ranker --from-feedback"}`
    : name === "ranker" ? "portrait train ranker needs --from-feedback (the training log of logged impressions and clicks)"
      : `portrait train ${name} needs --from-stream, and training ${name} from the stream is not supported yet`);
}

function printTrained(dir: string, manifest: ModelManifest): void {
  console.log(`wrote ${dir}`);
  for (const m of manifest.metrics) console.log(`${m.task}: ${Object.entries(m.values).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(", ")}`);
  const e = manifest.evaluation;
  if (e !== undefined) {
    const champ = e.champion !== undefined ? `champion ${e.champion.version} ${e.champion.value}` : "no champion";
    console.log(`evaluation on ${e.source}, test ${new Date(e.testWindow.fromMs).toISOString()}..${new Date(e.testWindow.toMs).toISOString()} ` +
      `(${e.counts.test} examples): ${e.metric} ${e.challenger} vs ${champ}; baselines ${Object.entries(e.baselines).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  }
}

function modelFlags(cmd: Command, datasets: string): Command {
  return cmd
    .option("--datasets <dir>", "directory of the public data sets", datasets)
    .option("--models <dir>", "models directory", BUNDLED_MODELS_DIR)
    .option("--model <version>", "model version (default: CURRENT)")
    .option("--json", "print the tables as JSON")
    .option("--markdown", "print the tables as Markdown");
}

function printTables(tables: EvalTable[], f: { json?: boolean; markdown?: boolean }): void {
  if (f.json) {
    console.log(JSON.stringify(tables, null, 2));
    return;
  }
  for (const t of tables) console.log(`${(f.markdown ? evalTableMarkdown : formatEvalTable)(t)}\n`);
}
