/**
 * `portrait bench <scenario>`: the load-test harness. Each scenario starts
 * its own nats-server (127.0.0.1, free port, temp store), an engine in a
 * child process and publisher processes, measures the machine's raw limits in
 * the same run, prints a table, writes the raw JSON and an SVG chart, and
 * appends the table to bench/RESULTS.md (not with --smoke or --no-record, which write the JSON and chart to a temp folder).
 *
 *   node dist-bench/bench/run.js <scenario> [--smoke] [--no-record] [--out DIR] [--<flag> value ...]
 *   node dist-bench/bench/run.js --help | <scenario> --help
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { lineChartSvg } from "./harness/chart.js";
import { appendResults, commit, formatTable, repoRoot } from "./report.js";
import { cluster } from "./scenarios/cluster.js";
import { freshness } from "./scenarios/freshness.js";
import { hotSwap } from "./scenarios/hot-swap.js";
import { maxIngest } from "./scenarios/max-ingest.js";
import { mixed } from "./scenarios/mixed.js";
import { profile } from "./scenarios/profile.js";
import { recommend } from "./scenarios/recommend.js";
import type { Scenario, ScenarioResult } from "./scenarios/scenario.js";
import { scale } from "./scenarios/scale.js";
import { soak } from "./scenarios/soak.js";

export const SCENARIOS: readonly Scenario[] = [maxIngest, freshness, profile, recommend, mixed, soak, scale, hotSwap, cluster];

const COMMON = {
  smoke: "a CI-sized run of a few seconds (small defaults; nothing appended to RESULTS.md)",
  "no-record": "do not append to bench/RESULTS.md",
  out: "folder for the raw JSON and the SVG chart (default bench/results/, or a temp folder with --smoke or --no-record)",
  datasets: "the public data sets folder (default $PORTRAIT_DATASETS or ../shared/data)",
  help: "this help",
};

export function usage(s?: Scenario): string {
  if (s === undefined) {
    return [
      "usage: portrait bench <scenario> [--smoke] [--no-record] [--out DIR] [--<flag> value ...]",
      "",
      "scenarios:",
      ...SCENARIOS.map((x) => `  ${x.name.padEnd(12)} ${x.summary}`),
      "",
      "common flags:",
      ...Object.entries(COMMON).map(([k, v]) => `  --${k.padEnd(12)} ${v}`),
      "",
      "'portrait bench <scenario> --help' lists a scenario's flags. Every run targets 127.0.0.1 only and is bounded in count and time.",
    ].join("\n");
  }
  return [
    `usage: portrait bench ${s.name} [flags]`,
    "",
    s.summary,
    "",
    "flags (default; with --smoke):",
    ...Object.entries(s.flags).map(([k, f]) => `  --${k.padEnd(18)} ${f.help} (${f.default}${f.smoke !== undefined ? `; ${f.smoke}` : ""})`),
    ...Object.entries(COMMON).map(([k, v]) => `  --${k.padEnd(18)} ${v}`),
  ].join("\n");
}

export interface RunOutcome { result: ScenarioResult; jsonFile: string; svgFile?: string }

/** Runs one scenario from command-line words (the scenario name first). */
export async function runBench(
  argv: string[],
  log: (s: string) => void = (m) => process.stderr.write(`${m}\n`),
  print: (s: string) => void = (m) => console.log(m),
): Promise<RunOutcome | undefined> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    print(usage());
    return undefined;
  }
  const s = SCENARIOS.find((x) => x.name === name);
  if (s === undefined) throw new Error(`bench: unknown scenario ${JSON.stringify(name)}; one of ${SCENARIOS.map((x) => x.name).join(", ")}`);
  const { values: parsed } = parseArgs({
    args: rest,
    strict: true,
    options: {
      smoke: { type: "boolean", default: false },
      "no-record": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
      out: { type: "string" },
      datasets: { type: "string" },
      ...Object.fromEntries(Object.keys(s.flags).map((k) => [k, { type: "string" as const }])),
    },
  });
  const values = parsed as Record<string, string | boolean | undefined>;
  if (values.help) {
    print(usage(s));
    return undefined;
  }
  const smoke = values.smoke === true;
  const explicit = Object.fromEntries(Object.keys(s.flags).filter((k) => values[k] !== undefined).map((k) => [k, String(values[k])]));
  const flags = Object.fromEntries(Object.entries(s.flags).map(([k, f]) => [k, explicit[k] ?? (smoke && f.smoke !== undefined ? f.smoke : f.default)]));
  const datasets = (values.datasets as string | undefined) ?? process.env.PORTRAIT_DATASETS ?? join(repoRoot(), "..", "shared", "data");
  commit(); // the code this run runs: read now, HEAD may move while it runs
  const loadBefore = loadavg().map((x) => x.toFixed(2)).join(" ");
  const started = new Date();
  log(`bench ${s.name}${smoke ? " (smoke)" : ""}: ${Object.entries(flags).map(([k, v]) => `--${k} ${v}`).join(" ")}`);
  const result = await s.run({ flags, smoke, datasets, log });
  const loadAfter = loadavg().map((x) => x.toFixed(2)).join(" ");
  const notes = [...result.notes, `Load average (1, 5, 15 min) before: ${loadBefore}; after: ${loadAfter} (2 cores: above 2, other processes compete for the CPU).`];
  print(formatTable(result.title, result.header, result.rows));
  print(notes.map((n) => `- ${n}`).join("\n"));

  // A run that is not recorded leaves nothing in the repository (its files are named in the log).
  const record = !smoke && values["no-record"] !== true;
  const out = (values.out as string | undefined) ?? (!record ? mkdtempSync(join(tmpdir(), "portrait-bench-out-")) : join(repoRoot(), "bench", "results"));
  mkdirSync(out, { recursive: true });
  const stamp = started.toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-");
  const base = join(out, `${s.name}-${stamp}`);
  const command = ["portrait bench", s.name, ...(smoke ? ["--smoke"] : []), ...Object.entries(explicit).map(([k, v]) => `--${k} ${v}`)].join(" ");
  writeFileSync(`${base}.json`, JSON.stringify({ scenario: s.name, command, started: started.toISOString(), flags, smoke, loadBefore, loadAfter, title: result.title, header: result.header, rows: result.rows, notes, raw: result.raw }, null, 1));
  let svgFile: string | undefined;
  if (result.chart !== undefined) {
    svgFile = `${base}.svg`;
    writeFileSync(svgFile, lineChartSvg(result.chart.series, result.chart.options));
  }
  log(`raw results: ${base}.json${svgFile ? `, chart: ${svgFile}` : ""}`);
  if (record) {
    const rel = (f: string) => f.startsWith(repoRoot()) ? f.slice(repoRoot().length + 1) : f;
    appendResults(result.title, command, result.header, result.rows, [...notes.map((n) => `- ${n}`), "", `Raw: \`${rel(`${base}.json`)}\`${svgFile ? `; chart: ![${result.title}](${rel(svgFile).replace(/^bench\//, "")})` : ""}`]);
  }
  return { result: { ...result, notes }, jsonFile: `${base}.json`, ...(svgFile ? { svgFile } : {}) };
}

// Run as a program (not when imported by a test or the CLI).
if (process.argv[1] !== undefined && /bench[/\\]run\.(ts|js)$/.test(process.argv[1])) {
  runBench(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
