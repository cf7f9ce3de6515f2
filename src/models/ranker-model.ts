/**
 * The feedback-trained ranker's artifact (`portrait train ranker
 * --from-feedback`, src/train/train-ranker.ts): `models/ranker/<version>/`
 * with manifest.json (format "json") and `ranker.json`, the weight of each
 * candidate sources normalised score. The engine serves it as a "blend"
 * ranking policy named "ranker@<version>" (src/recs/recs.worker.ts).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ModelCorruptError } from "../errors.js";
import type { ModelManifest } from "./artifacts.js";

/** The weights file: score(item) = sum over sources of weights[s] x the item's normalised score from s (0 when s did not find it). */
export interface RankerFile {
  weights: Record<string, number>;
}

export const RANKER_FILE = "ranker.json";

/** Reads and checks a ranker version's weights (MODEL_CORRUPT when they are not finite numbers of known sources). */
export function readRankerWeights(dir: string, manifest?: ModelManifest): Record<string, number> {
  const file = join(dir, manifest?.files.weights ?? RANKER_FILE);
  let f: RankerFile;
  try {
    f = JSON.parse(readFileSync(file, "utf8")) as RankerFile;
  } catch (err) {
    throw new ModelCorruptError(`${file}: ${(err as Error).message}`, { cause: err });
  }
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(f?.weights ?? {})) {
    // Source names are checked where they are used (an unknown one weighs nothing): models/ does not import recs/.
    if (!/^[a-z][a-z-]{0,31}$/.test(k) || typeof v !== "number" || !Number.isFinite(v)) {
      throw new ModelCorruptError(`${file}: weight ${JSON.stringify(k)} = ${JSON.stringify(v)} is not a finite weight of a candidate source`);
    }
    out[k] = v;
  }
  return out;
}
