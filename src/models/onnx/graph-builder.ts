/**
 * A minimal ONNX writer: enough of the format to export our own models
 * (DeepFM, the LSTM cell) for onnxruntime without Python.
 *
 * The messages are a trimmed copy of onnx.proto at
 * `proto/third_party/onnx/onnx.proto`, loaded at run time with protobufjs.
 *
 * Usage:
 *   const g = new GraphBuilder("deepfm");
 *   g.input("x", "float32", ["B", 4]);
 *   g.initializer("w", new Float32Array(8), [4, 2]);
 *   g.node("MatMul", ["x", "w"], ["y"]);
 *   g.output("y", "float32", ["B", 2]);
 *   const bytes = g.toBytes();      // opset 13
 *
 * Attribute values: a JS number is an INT, number[] is INTS, a string is a
 * STRING, `{ f }` is a FLOAT and `{ floats }` is FLOATS (a number alone is
 * never guessed to be a float: `1` and `1.0` are the same JS value).
 *
 * `toBytes` checks that every node input is a graph input, an initializer or
 * an earlier node's output, and that every graph output is produced, so a
 * mistake in an exporter fails here with the name, not inside onnxruntime.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { PortraitError, ErrorCode } from "../../errors.js";
import { VERSION } from "../../version.js";

/** Element types we write, as their TensorProto.DataType numbers. */
export const ONNX_DTYPE = { float32: 1, int32: 6, int64: 7 } as const;
export type OnnxElemType = keyof typeof ONNX_DTYPE;

/** A dimension: a size, or a symbolic name such as "B" for the batch. */
export type OnnxDim = number | string;

export type OnnxAttr = number | number[] | string | { f: number } | { floats: number[] };

export type OnnxTensorData = Float32Array | Int32Array | BigInt64Array;

const PROTO_PATH = join("proto", "third_party", "onnx", "onnx.proto");

let modelType: protobuf.Type | undefined;

/** The ModelProto type, loaded once from the .proto found in the package root (src/, dist/ or dist-bench/ sit below it). */
function onnxModelType(): protobuf.Type {
  if (modelType !== undefined) return modelType;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let up = 0; up < 8; up++) {
    const file = join(dir, PROTO_PATH);
    if (existsSync(file)) {
      const root = new protobuf.Root().loadSync(file, { keepCase: true });
      modelType = root.lookupType("onnx.ModelProto");
      return modelType;
    }
    dir = dirname(dir);
  }
  throw new PortraitError(ErrorCode.INTERNAL, `cannot find ${PROTO_PATH} above ${dirname(fileURLToPath(import.meta.url))}`);
}

/** The ONNX IR version that introduced `opset` (ONNX release table), so older runtimes still accept our files. */
function irVersionFor(opset: number): number {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}

function dtypeOf(data: OnnxTensorData): OnnxElemType {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof Int32Array) return "int32";
  return "int64";
}

/** Little-endian bytes of a typed array (a copy, so the caller may reuse its array). */
function rawLittleEndian(data: OnnxTensorData): Uint8Array {
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  } else if (data instanceof Float32Array) {
    data.forEach((v, i) => view.setFloat32(i * 4, v, true));
  } else if (data instanceof Int32Array) {
    data.forEach((v, i) => view.setInt32(i * 4, v, true));
  } else {
    data.forEach((v, i) => view.setBigInt64(i * 8, v, true));
  }
  return out;
}

function attribute(name: string, v: OnnxAttr): Record<string, unknown> {
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new PortraitError(ErrorCode.INTERNAL, `onnx attribute ${name}: ${v} is not an integer; write { f: ${v} } for a float`);
    return { name, type: 2, i: v };
  }
  if (typeof v === "string") return { name, type: 3, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: 7, ints: v };
  if ("f" in v) return { name, type: 1, f: v.f };
  return { name, type: 6, floats: v.floats };
}

function valueInfo(name: string, elemType: OnnxElemType, dims: OnnxDim[]): Record<string, unknown> {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: ONNX_DTYPE[elemType],
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dim_value: d } : { dim_param: d })) },
      },
    },
  };
}

export class GraphBuilder {
  private readonly nodes: Record<string, unknown>[] = [];
  private readonly initializers: Record<string, unknown>[] = [];
  private readonly inputs: Record<string, unknown>[] = [];
  private readonly outputs: Record<string, unknown>[] = [];
  private readonly defined = new Set<string>();
  private readonly outputNames: string[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  /** A fresh value name, `<prefix>_<n>`. */
  tmp(prefix = "t"): string {
    return `${prefix}_${this.counter++}`;
  }

  /** A constant tensor (weights, shapes, axes). `dims` must multiply to `data.length`. */
  initializer(name: string, data: OnnxTensorData, dims: number[]): string {
    const n = dims.reduce((a, d) => a * d, 1);
    if (n !== data.length) throw new PortraitError(ErrorCode.INTERNAL, `onnx initializer ${name}: dims [${dims}] hold ${n} values, data has ${data.length}`);
    this.define(name);
    this.initializers.push({ name, dims, data_type: ONNX_DTYPE[dtypeOf(data)], raw_data: rawLittleEndian(data) });
    return name;
  }

  /** A graph input; string dims are symbolic (e.g. "B"). */
  input(name: string, elemType: OnnxElemType, dims: OnnxDim[]): string {
    this.define(name);
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** A graph output, produced by some node. */
  output(name: string, elemType: OnnxElemType, dims: OnnxDim[]): string {
    this.outputs.push(valueInfo(name, elemType, dims));
    this.outputNames.push(name);
    return name;
  }

  /** Appends a node (nodes must be added in topological order); returns its first output's name. */
  node(op: string, inputs: string[], outputs: string[], attrs: Record<string, OnnxAttr> = {}): string {
    for (const i of inputs) {
      if (i !== "" && !this.defined.has(i)) throw new PortraitError(ErrorCode.INTERNAL, `onnx ${this.name}: ${op} reads "${i}", which nothing defines before it`);
    }
    for (const o of outputs) this.define(o);
    this.nodes.push({
      name: `${op}_${this.nodes.length}`,
      op_type: op,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs[0]!;
  }

  /** The serialized ModelProto. */
  toBytes(opset = 13): Uint8Array {
    for (const o of this.outputNames) {
      if (!this.defined.has(o)) throw new PortraitError(ErrorCode.INTERNAL, `onnx ${this.name}: output "${o}" is never produced`);
    }
    const type = onnxModelType();
    const model = {
      ir_version: irVersionFor(opset),
      opset_import: [{ domain: "", version: opset }],
      producer_name: "portrait",
      producer_version: VERSION,
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
    return type.encode(type.fromObject(model)).finish();
  }

  private define(name: string): void {
    if (this.defined.has(name)) throw new PortraitError(ErrorCode.INTERNAL, `onnx ${this.name}: "${name}" is defined twice`);
    this.defined.add(name);
  }
}
