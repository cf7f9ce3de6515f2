/**
 * Dependency direction, checked by `npm test` (script "deps": dependency-cruiser over src/ and bench/).
 *
 * The layers, bottom to top. A module may import its own layer and the layers
 * below it, never one above; folders inside one layer must not import each
 * other in a circle, and no module cycle is allowed anywhere. README "Layout"
 * draws the same picture: keep both in step.
 *
 * Parsing: typescript 7 (the native compiler) has no JavaScript API, which is
 * what dependency-cruiser uses for .ts by default, so the parser here is swc
 * (@swc/core, a devDependency); it reads the TypeScript source directly,
 * type-only imports included (tsPreCompilationDeps), which the compiled JS in
 * dist/ would have lost.
 */

/** [name, path prefixes relative to the repo root]; index 0 is the bottom. */
const LAYERS = [
  // Contracts: wire format, error codes, shared types. Import nothing above.
  ["contracts", ["src/errors.ts", "src/version.ts", "src/types.ts", "src/types/", "src/wire/"]],
  // Pure logic and leaf services: per-user actors, logs/metrics, dataset readers, metric functions.
  ["core", ["src/actors/", "src/obs/", "src/data/", "src/metrics/"]],
  // Model code, the LMDB store, the NATS bus (which knows nothing of actors: see bus-knows-no-actors),
  // the worker-thread plumbing every pool shares, and the query types the shards, recs and api share.
  ["services", ["src/models/", "src/store/", "src/bus/", "src/threads/", "src/contracts.ts"]],
  // Worker-thread shards, the inference pool, example builders for training and evaluation.
  ["runtime", ["src/shard/", "src/inference/", "src/examples/"]],
  ["recs", ["src/recs/"]],
  // Request-reply handlers, the client library, engine options, the dashboard (HTTP).
  // src/cluster/: a node's partitions, leases and changelogs (README "Scale-out"): wires bus, shards and api like the engine does.
  ["edge", ["src/api/", "src/client/", "src/config/", "src/dashboard/", "src/cluster/"]],
  // The composition root.
  ["engine", ["src/engine.ts", "src/engine-models.ts"]],
  // Offline tools: training and evaluation (prequential evaluation drives a real engine).
  ["tools", ["src/train/", "src/eval/"]],
  // Entry points: the CLI, the package's public module, the benchmarks.
  ["top", ["src/cli/", "src/mod.ts", "bench/"]],
];

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
const re = (prefixes) => `^(${prefixes.map(esc).join("|")})`;
const above = (i) => LAYERS.slice(i + 1).flatMap(([, p]) => p);

module.exports = {
  forbidden: [
    ...LAYERS.slice(0, -1).map(([name, prefixes], i) => ({
      name: `upward-from-${name}`,
      severity: "error",
      comment: `layer "${name}" imports a layer above it (${LAYERS.slice(i + 1).map(([n]) => n).join(", ")})`,
      from: { path: re(prefixes) },
      to: { path: re(above(i)) },
    })),
    {
      name: "bus-knows-no-actors",
      severity: "error",
      comment: "the bus delivers batches to an interface; it never imports actors, shards, the store or models",
      from: { path: "^src/bus/" },
      to: { path: "^src/(actors|shard|store|models)/" },
    },
    {
      name: "inference-knows-no-actors",
      severity: "error",
      comment: "the inference pool scores feature rows; it knows nothing of actors or shards",
      from: { path: "^src/inference/" },
      to: { path: "^src/(actors|shard)/" },
    },
    {
      name: "no-cycle",
      severity: "error",
      comment: "a module cycle",
      from: {},
      to: { circular: true },
    },
    {
      name: "no-folder-cycle",
      severity: "error",
      comment: "two folders import each other (directly or round a longer circle); src/ itself holds files of several layers and is left out",
      scope: "folder",
      from: { pathNot: "^src$" },
      to: { circular: true, pathNot: "^src$" },
    },
    {
      name: "in-a-layer",
      severity: "error",
      comment: "every source file belongs to a layer: add a new folder to LAYERS in .dependency-cruiser.cjs (and README Layout)",
      from: { pathNot: `${re(LAYERS.flatMap(([, p]) => p))}|^node_modules/` },
      to: {},
    },
  ],
  options: {
    parser: "swc",
    tsPreCompilationDeps: true,
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)dist" },
    moduleSystems: ["es6", "cjs"],
  },
};
