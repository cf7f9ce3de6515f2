/** Shared reporting for benchmarks: the machine line, the commit, the table, and the append to bench/RESULTS.md. */
import { execSync } from "node:child_process";
import { appendFileSync, existsSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (benchmarks run from bench/ under tsx or from dist-bench/bench/ compiled). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("bench: cannot find the repository root");
    dir = up;
  }
  return dir;
}

let firstCommit: string | undefined;

/** The commit checked out when the process first asked (a long run's code, though HEAD moves while it runs). */
export function commit(): string {
  if (firstCommit !== undefined) return firstCommit;
  try {
    firstCommit = execSync("git rev-parse --short HEAD", { stdio: ["ignore", "pipe", "ignore"], cwd: repoRoot() }).toString().trim();
  } catch {
    firstCommit = "unknown";
  }
  return firstCommit;
}

export function machine(): string {
  return `${cpus().length} × ${cpus()[0]?.model.trim() ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`;
}

/** An aligned table with its title, the machine and the commit. */
export function formatTable(title: string, header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => "  " + r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  return [`\n${title} (${machine()}, commit ${commit()})`, line(header), ...rows.map(line)].join("\n");
}

/** Prints an aligned table to stdout. */
export function printTable(title: string, header: string[], rows: string[][]): void {
  console.log(formatTable(title, header, rows));
}

/** Appends a titled markdown table with the machine, date, commit and command to bench/RESULTS.md. */
export function appendResults(title: string, command: string, header: string[], rows: string[][], notes: string[] = []): void {
  const md = [
    "",
    `### ${title} — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, commit ${commit()}`,
    "",
    `Machine: ${machine()}. Command: \`${command}\``,
    "",
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    ...(notes.length > 0 ? ["", ...notes] : []),
    "",
  ].join("\n");
  appendFileSync(join(repoRoot(), "bench", "RESULTS.md"), md);
  process.stderr.write("appended to bench/RESULTS.md\n");
}
