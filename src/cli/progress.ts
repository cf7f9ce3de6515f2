/**
 * Progress output for long CLI jobs, on stderr: a live bar on a terminal, a
 * line every few seconds otherwise (CI logs, pipes).
 */
import cliProgress from "cli-progress";

export interface Progress {
  update(done: number): void;
  stop(): void;
}

/**
 * `total`: the count the job will reach, when known (shown as done/total).
 * `limit`: a count it stops at if the input lasts that long (a replay's
 * --limit): shown as "limit N", never as a total the job may not reach.
 */
export function progress(label: string, total: number | undefined, o: { limit?: number | undefined } = {}): Progress {
  const started = Date.now();
  const limit = o.limit !== undefined ? ` (limit ${o.limit})` : "";
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar({
      format: total ? `${label} [{bar}] {value}/{total} | {rate}/s | {duration_formatted}` : `${label} {value}${limit} | {rate}/s | {duration_formatted}`,
      stream: process.stderr,
      hideCursor: true,
    }, cliProgress.Presets.shades_classic);
    bar.start(total ?? 0, 0, { rate: 0 });
    return {
      update: (done) => bar.update(done, { rate: Math.round(done / Math.max(0.001, (Date.now() - started) / 1000)) }),
      stop: () => bar.stop(),
    };
  }
  let last = 0;
  let done = 0;
  const line = () => {
    const s = (Date.now() - started) / 1000;
    process.stderr.write(`${label}: ${done}${total ? `/${total}` : limit} (${Math.round(done / Math.max(s, 0.001))}/s, ${s.toFixed(1)} s)\n`);
  };
  return {
    update: (d) => {
      done = d;
      if (Date.now() - last >= 2000) {
        last = Date.now();
        line();
      }
    },
    stop: () => line(),
  };
}
