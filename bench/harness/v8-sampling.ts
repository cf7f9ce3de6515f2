/**
 * V8 profiles of a bench's measured phase through the inspector (no node
 * flags, nothing sampled outside the phase): allocation sampling that counts
 * the objects collected since too (what a young-generation GC costs follows
 * the bytes allocated, not the bytes that stay), or a CPU profile.
 */
import { Session } from "node:inspector/promises";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

interface Node { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] }

export type SamplingKind = "alloc" | "cpu";

export class V8Sampling {
  readonly #session = new Session();
  readonly #kind: SamplingKind;

  constructor(kind: SamplingKind) {
    this.#kind = kind;
    this.#session.connect();
  }

  async start(): Promise<void> {
    if (this.#kind === "alloc") {
      await this.#session.post("HeapProfiler.startSampling", { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
    } else {
      await this.#session.post("Profiler.enable");
      await this.#session.post("Profiler.setSamplingInterval", { interval: 200 });
      await this.#session.post("Profiler.start");
    }
  }

  /**
   * Stops the profile. CPU: writes it to `<dir>/cpu-<tag>-<time>.cpuprofile` and returns "". Allocation: writes the bytes
   * per event of each site (function <- caller) to `<dir>/alloc-<tag>-<time>.json` (dir "" = not written) and returns the
   * total and the `top` sites, one per line.
   */
  async stop(dir: string, tag: string, events: number, top = 25): Promise<string> {
    if (this.#kind === "cpu") {
      const { profile } = (await this.#session.post("Profiler.stop")) as unknown as { profile: object };
      writeFileSync(join(dir, `cpu-${tag}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
      return "";
    }
    const { profile } = (await this.#session.post("HeapProfiler.stopSampling")) as unknown as { profile: { head: Node } };
    const sites = new Map<string, number>();
    let total = 0;
    const walk = (n: Node, path: string) => {
      const here = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").slice(-2).join("/")}:${n.callFrame.lineNumber + 1}`;
      if (n.selfSize > 0) {
        total += n.selfSize;
        const key = `${here} <- ${path}`;
        sites.set(key, (sites.get(key) ?? 0) + n.selfSize);
      }
      for (const c of n.children) walk(c, here);
    };
    walk(profile.head, "");
    if (dir !== "") writeFileSync(join(dir, `alloc-${tag}-${Date.now()}.json`), JSON.stringify(Object.fromEntries([...sites].map(([k, v]) => [k, v / events]))));
    return `${(total / events).toFixed(0)} B allocated per event\n` + [...sites].sort((x, y) => y[1] - x[1]).slice(0, top).map(([k, v]) => `    ${(v / events).toFixed(0).padStart(6)} B/event  ${k}`).join("\n");
  }
}
