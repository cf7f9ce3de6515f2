/**
 * Starts a worker thread from a `.worker` module next to the caller: the
 * compiled `.js` file in production, or the `.ts` source through tsx's loader
 * when the caller itself runs from TypeScript (tests, tsx).
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker, type ResourceLimits } from "node:worker_threads";

/**
 * `base` is the caller's import.meta.url; `module` the worker file name
 * without extension, e.g. "shard.worker"; `resourceLimits` bound the thread's
 * V8 heap (V8's defaults where absent).
 */
export function spawnWorker(base: string, module: string, name: string, resourceLimits?: ResourceLimits): Worker {
  const limits = resourceLimits !== undefined ? { resourceLimits } : {};
  if (!base.endsWith(".ts")) return new Worker(new URL(`./${module}.js`, base), { name, ...limits });
  // tsx's "require" entry of esm/api is broken, so take its ESM file from the package folder.
  const tsxDir = dirname(createRequire(import.meta.url).resolve("tsx/package.json"));
  const tsx = pathToFileURL(join(tsxDir, "dist", "esm", "api", "index.mjs")).href;
  const entry = new URL(`./${module}.ts`, base).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, name, ...limits });
}
