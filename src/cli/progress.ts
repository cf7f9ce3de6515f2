/**
 * Progress output for long CLI jobs, on stderr: a live bar on a terminal, a
 * line every few seconds otherwise (CI logs, pipes).
 */
import cliProgress from "cli-progress";

export interface Progress {
  update(done: number): void;
  stop(): void;
}

export function progress(label: string, total: number | undefined): Progress {
  const started = Date.now();
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar({
      format: `${label} [{bar}] {value}${total ? "/{total}" : ""} | {rate}/s | {duration_formatted}`,
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
    process.stderr.write(`${label}: ${done}${total ? `/${total}` : ""} (${Math.round(done / Math.max(s, 0.001))}/s, ${s.toFixed(1)} s)\n`);
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
