/**
 * The result of an offline evaluation: one row per model or baseline, the
 * same shape for every task (churn, next-click, CTR), so the CLI prints and
 * README embeds them the same way.
 */

export interface EvalTable {
  /** What is predicted and on which data, e.g. "churn 90d, UCI Online Retail". */
  task: string;
  /** How train and test were separated, e.g. "test cut-off 2011-09-10, 3370 customers". */
  split: string;
  /** Column names, in display order; every row has a value (or "") for each. */
  columns: string[];
  /** Cells by column name. Numbers are shown with 4 decimals unless integers. */
  rows: Array<Record<string, string | number>>;
}

function cell(v: string | number | undefined): string {
  if (v === undefined) return "";
  if (typeof v === "string") return v;
  if (Number.isNaN(v)) return "n/a";
  return Number.isInteger(v) ? String(v) : v.toFixed(4);
}

function isNumeric(t: EvalTable, col: string): boolean {
  return t.rows.some((r) => typeof r[col] === "number");
}

/** An aligned plain-text table (numbers right-aligned) under a `task — split` title line. */
export function formatEvalTable(t: EvalTable): string {
  const cells = t.rows.map((r) => t.columns.map((c) => cell(r[c])));
  const widths = t.columns.map((c, j) => Math.max(c.length, ...cells.map((r) => r[j]!.length)));
  const right = t.columns.map((c) => isNumeric(t, c));
  const line = (vals: string[]) =>
    vals.map((v, j) => (right[j] ? v.padStart(widths[j]!) : v.padEnd(widths[j]!))).join("  ").trimEnd();
  return [
    `${t.task} — ${t.split}`,
    line(t.columns),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...cells.map(line),
  ].join("\n") + "\n";
}

/** The same as a Markdown table (for README), with the title as a bold line above it. */
export function evalTableMarkdown(t: EvalTable): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  const right = t.columns.map((c) => isNumeric(t, c));
  return [
    `**${esc(t.task)}** — ${esc(t.split)}`,
    "",
    `| ${t.columns.map(esc).join(" | ")} |`,
    `| ${right.map((r) => (r ? "---:" : "---")).join(" | ")} |`,
    ...t.rows.map((r) => `| ${t.columns.map((c) => esc(cell(r[c]))).join(" | ")} |`),
  ].join("\n") + "\n";
}
