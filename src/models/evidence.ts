/**
 * Whether a model has earned a place in the profile: the evidence its
 * manifest carries (`ModelManifest.evaluation`) judged against the shop that
 * asks. A prediction is served only with that evidence; otherwise it is served
 * as null with the reason computed here.
 *
 * Rules, in order (the first that fails gives the reason):
 * 1. the manifest has an evaluation (the bundled seeds, trained and tested on
 *    public data sets, have none);
 * 2. it was evaluated on this shop's data: `evaluation.source` equals the
 *    engine's own stream source, "stream:<event stream name>";
 * 3. on that holdout it beats every baseline scored beside it (strictly);
 * 4. its probabilities are calibrated: a Platt calibration fitted on the
 *    validation window is stored in the model file (churn, propensity); for
 *    the LSTM's softmax, a `training.calibration` note in its manifest says how
 *    it was checked (no LSTM carries one yet).
 */
import type { EvidenceView } from "../actors/user-profile.js";
import type { ModelManifest } from "./artifacts.js";

/** The source string of an engine's own event stream, as training records it. */
export function streamSource(eventStream: string): string {
  return `stream:${eventStream}`;
}

/** The models `portrait train <name> --from-stream` can train. */
export const STREAM_TRAINABLE: ReadonlySet<string> = new Set(["churn", "propensity"]);

/** What a served prediction carries about its model: the profile's evidence view (proto `Evidence`). */
export type PredictionEvidence = EvidenceView;

/** A model's standing: evidence when it may be served, else the reason it may not. */
export interface ModelVerdict {
  name: string;
  version: string;
  evidence?: PredictionEvidence;
  /** "" when evidence is set. */
  reason: string;
}

/**
 * `calibration` describes how the model's probabilities were calibrated
 * ("platt on 2825 validation rows"), undefined when they were not.
 */
export function judgeModel(manifest: ModelManifest, shopSource: string, calibration: string | undefined): ModelVerdict {
  const id = `${manifest.name} ${manifest.version}`;
  const howTo = STREAM_TRAINABLE.has(manifest.name)
    ? `train it on this shop's stream: portrait train ${manifest.name} --from-stream`
    : `training ${manifest.name} on a shop's stream is not built yet`;
  const refuse = (reason: string): ModelVerdict => ({ name: manifest.name, version: manifest.version, reason });
  const ev = manifest.evaluation;
  if (ev === undefined) {
    const data = (manifest.training?.data ?? []).map((d) => d.split("/").at(-1)).join(", ") || "other data";
    return refuse(`${id} has no evaluation on this shop's data (it was trained and tested on ${data}); ${howTo}`);
  }
  if (ev.source !== shopSource) {
    return refuse(`${id} was evaluated on ${ev.source}, not on this shop's stream (${shopSource}); ${howTo}`);
  }
  const better = (a: number, b: number) => (ev.higherIsBetter ? a > b : a < b);
  let baselineName = "";
  let baseline = Number.NaN;
  for (const [name, v] of Object.entries(ev.baselines)) {
    if (!Number.isFinite(v)) continue;
    if (baselineName === "" || better(v, baseline)) {
      baselineName = name;
      baseline = v;
    }
  }
  if (!Number.isFinite(ev.challenger)) return refuse(`${id} has no finite ${ev.metric} on this shop's holdout`);
  if (baselineName !== "" && !better(ev.challenger, baseline)) {
    return refuse(`${id} does not beat its baseline on this shop's holdout: ${ev.metric} ${ev.challenger.toFixed(3)} vs ` +
      `${baselineName} ${baseline.toFixed(3)}`);
  }
  if (calibration === undefined) return refuse(`${id} has no calibration, so its scores are not probabilities`);
  return {
    name: manifest.name, version: manifest.version, reason: "",
    evidence: {
      metric: ev.metric, holdout: ev.challenger, baselineName, baseline: Number.isFinite(baseline) ? baseline : 0,
      source: ev.source, testFromMs: ev.testWindow.fromMs, testToMs: ev.testWindow.toMs, testExamples: ev.counts.test,
      calibration,
    },
  };
}

/** How a json model's spec was calibrated, for judgeModel. */
export function describeCalibration(c: { kind: string; rows: number } | undefined): string | undefined {
  return c === undefined ? undefined : `${c.kind} on ${c.rows} validation rows`;
}
