/**
 * The contract between `portrait bench` (bench/run.ts) and a scenario: its
 * flags (each with a default for a full run and one for --smoke), and what it
 * returns (a table, notes, raw data for the JSON file, and a chart).
 */
import type { ChartOptions, ChartSeries } from "../harness/chart.js";

export interface Flag {
  /** Default of a full run. */
  default: string;
  /** Default under --smoke (a CI-sized run of a few seconds); the full default when absent. */
  smoke?: string;
  help: string;
}

export interface ScenarioContext {
  /** Flag values (explicit flags win over the defaults of the mode). */
  flags: Record<string, string>;
  smoke: boolean;
  /** The public data sets folder. */
  datasets: string;
  log: (s: string) => void;
}

export interface ScenarioResult {
  title: string;
  header: string[];
  rows: string[][];
  /** Lines printed under the table and appended to RESULTS.md. */
  notes: string[];
  /** Everything measured, written as JSON beside the chart. */
  raw: Record<string, unknown>;
  chart?: { series: ChartSeries[]; options: ChartOptions };
}

export interface Scenario {
  name: string;
  summary: string;
  flags: Record<string, Flag>;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}

/** A flag as a number within [min, max], or a clear error. */
export function num(ctx: ScenarioContext, name: string, min: number, max: number, integer = true): number {
  const v = Number(ctx.flags[name]);
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new Error(`bench: --${name} must be ${integer ? "an integer" : "a number"} in [${min}, ${max}], got ${JSON.stringify(ctx.flags[name])}`);
  }
  return v;
}

/** A comma-separated list of numbers, each within [min, max]. */
export function nums(ctx: ScenarioContext, name: string, min: number, max: number): number[] {
  const out = String(ctx.flags[name]).split(",").map((x) => Number(x.trim()));
  if (out.length === 0 || out.some((v) => !Number.isFinite(v) || v < min || v > max)) {
    throw new Error(`bench: --${name} must be a comma-separated list of numbers in [${min}, ${max}], got ${JSON.stringify(ctx.flags[name])}`);
  }
  return out;
}

export const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "-");
export const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
export const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");
export const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : "-");
