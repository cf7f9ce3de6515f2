import { relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";
import { defineConfig } from "vitest/config";

/**
 * Seconds some files took in a whole-suite CI run (`bash .ci/run`, two workers). A fresh clone has no
 * vitest cache, so vitest would order files by size and could start a long file last, leaving one worker
 * running it alone at the end; these start first, longest first. Add a file here when it takes over ~50 s.
 */
const CI_SECONDS: Record<string, number> = {
  "test/bench-harness.test.ts": 197,
  "test/cluster.test.ts": 165,
  "test/recommend.test.ts": 136,
  "test/operator.test.ts": 128,
  "test/engine.test.ts": 98,
  "test/crash.test.ts": 95,
  "test/identity-crash.test.ts": 67,
  "test/global-install.test.ts": 52,
  "test/broker-restart.test.ts": 52,
};

/** Longest first: the durations vitest cached from an earlier run here, else CI_SECONDS; files with neither follow in vitest's order. */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const base = await super.sort(files);
    const root = this.ctx.config.root;
    const estimate = (f: TestSpecification): number | undefined => {
      const rel = relative(root, f.moduleId);
      return this.ctx.cache.getFileTestResults(`${f.project.name}:${rel}`)?.duration ?? (rel in CI_SECONDS ? CI_SECONDS[rel]! * 1000 : undefined);
    };
    const known = base.filter((f) => estimate(f) !== undefined).sort((a, b) => estimate(b)! - estimate(a)!);
    return [...known, ...base.filter((f) => estimate(f) === undefined)];
  }
}

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Engine tests start nats-server, worker threads and child engines: two files at a time fits 2 cores.
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    sequence: { sequencer: LongestFirst },
  },
});
