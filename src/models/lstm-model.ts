/**
 * The LSTM user encoder as a TF.js layers model (training and the reference
 * for the live cell in lstm-runtime.ts).
 *
 * Inputs: five int32 tensors [B, T] (LSTM_FIELDS: type, category, item, band,
 * gap), each through its own embedding; the embeddings are concatenated into
 * the step input x [B, T, E] and run through one LSTM layer (gate order i, f,
 * c, o; sigmoid recurrent activation, so that the cell is standard ONNX ops)
 * giving h [B, T, H]. Heads, on every step:
 * - item: logits over the item vocabulary for the NEXT event's item;
 * - category: logits over the category vocabulary for the NEXT event's category;
 * - buy: the logit of "a purchase within the next PURCHASE_HORIZON_MS".
 * Outputs, in order: item logits, category logits, buy logit, h.
 *
 * Files: model.json (layers topology + weights manifest) and weights.bin, as
 * TF.js writes them, plus vocab.json (the item and category vocabularies).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tf, tfl } from "./tf.js";
import { LSTM_FIELDS } from "./lstm-features.js";
import { LSTM_LAYER, type LstmArchitecture } from "./lstm-spec.js";

export function buildLstmModel(a: LstmArchitecture, seed: number): tfl.LayersModel {
  let s = seed;
  const init = () => tfl.initializers.glorotUniform({ seed: s++ });
  const inputs = LSTM_FIELDS.map((f) => tfl.input({ shape: [null], dtype: "int32", name: `in_${f}` }));
  const embedded = LSTM_FIELDS.map((f, i) =>
    tfl.layers.embedding({
      inputDim: a.vocab[f], outputDim: a.embDims[f], name: LSTM_LAYER.emb(f),
      embeddingsInitializer: tfl.initializers.randomUniform({ minval: -0.05, maxval: 0.05, seed: s++ }),
    }).apply(inputs[i]!) as tfl.SymbolicTensor,
  );
  const x = tfl.layers.concatenate({ axis: -1, name: "step_input" }).apply(embedded) as tfl.SymbolicTensor;
  const h = tfl.layers.lstm({
    units: a.hidden, returnSequences: true, recurrentActivation: "sigmoid", name: LSTM_LAYER.lstm,
    kernelInitializer: init(), recurrentInitializer: tfl.initializers.orthogonal({ seed: s++ }),
    unitForgetBias: true,
  }).apply(x) as tfl.SymbolicTensor;
  const head = (name: string, units: number) =>
    tfl.layers.dense({ units, name, kernelInitializer: init() }).apply(h) as tfl.SymbolicTensor;
  return tfl.model({
    inputs,
    outputs: [head(LSTM_LAYER.item, a.vocab.item), head(LSTM_LAYER.category, a.vocab.category), head(LSTM_LAYER.buy, 1), h],
    name: "portrait_lstm",
  });
}

/** Writes model.json and weights.bin into dir (TF.js's own layout, without a file:// handler). */
export async function saveLayersModel(model: tfl.LayersModel, dir: string): Promise<void> {
  await model.save(tf.io.withSaveHandler(async (art) => {
    const weightData = art.weightData instanceof ArrayBuffer ? art.weightData : tf.io.concatenateArrayBuffers(art.weightData as ArrayBuffer[]);
    writeFileSync(join(dir, "weights.bin"), new Uint8Array(weightData));
    const json = {
      modelTopology: art.modelTopology,
      format: art.format ?? "layers-model",
      generatedBy: art.generatedBy,
      convertedBy: art.convertedBy ?? null,
      weightsManifest: [{ paths: ["weights.bin"], weights: art.weightSpecs }],
    };
    writeFileSync(join(dir, "model.json"), JSON.stringify(json));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON", weightDataBytes: weightData.byteLength } };
  }));
}


/** Loads a saved layers model into TF.js (training resumes, evaluation, tests). */
export async function loadLayersModel(dir: string): Promise<tfl.LayersModel> {
  const json = JSON.parse(readFileSync(join(dir, "model.json"), "utf8"));
  const group = json.weightsManifest[0];
  const data = readFileSync(join(dir, group.paths[0]));
  return tfl.loadLayersModel(tf.io.fromMemory({
    modelTopology: json.modelTopology,
    weightSpecs: group.weights,
    weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
  }));
}
