/**
 * The dependency-direction check (`npm run deps`, part of `npm test`) fails
 * when an import points up a layer or closes a circle. Shown on a copy of
 * src/ with one planted import, and on a tiny tree with a cycle, both checked
 * with the committed rules file by the same CLI that `npm test` runs.
 */
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { tmpDir } from "./helpers/nats.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CONFIG = join(ROOT, ".dependency-cruiser.cjs");
const CLI = join(ROOT, "node_modules/dependency-cruiser/bin/dependency-cruise.mjs");

interface Violation { rule: string; from: string; to: string }

function depcruise(cwd: string, args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args, "--config", CONFIG], { cwd, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return r;
}

/**
 * Runs the check on `dirs` inside `cwd`: the exit status of the command `npm run deps` runs
 * (its text report), and each violation from the JSON report as "rule: from -> to".
 */
function check(cwd: string, dirs: string[]): { status: number | null; violations: string[] } {
  const { status } = depcruise(cwd, dirs);
  const out = JSON.parse(depcruise(cwd, [...dirs, "--output-type", "json"]).stdout) as {
    summary: { violations: Array<{ rule: { name: string }; from: string; to: string }> };
  };
  const violations = out.summary.violations.map((v): Violation => ({ rule: v.rule.name, from: v.from, to: v.to }));
  return { status, violations: violations.map((v) => `${v.rule}: ${v.from} -> ${v.to}`) };
}

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function scratch(): string {
  const d = tmpDir("portrait-deps");
  dirs.push(d);
  return d;
}

describe("dependency rules", () => {
  it("dependency rules - README's layer table is the rules file's layers, in the same order", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const layout = readme.slice(readme.indexOf("## Layout"));
    const table = /The layers, bottom to top[\s\S]*?```\n([\s\S]*?)```/.exec(layout)?.[1];
    expect(table, "README Layout has the layer table").toBeDefined();
    // README draws the top first; each row is "name  path  path ...  [comment]".
    const rows = table!.trim().split("\n").reverse().map((line) => {
      const [name, ...rest] = line.trim().split(/\s+/);
      return { name: name!, paths: rest.filter((p) => /^(src|bench)\b/.test(p)) };
    });
    const { forbidden } = createRequire(import.meta.url)(CONFIG) as { forbidden: Array<{ name: string; from: { path?: string } }> };
    const upward = forbidden.filter((r) => r.name.startsWith("upward-from-"));
    // One "upward-from-<layer>" rule per layer but the top one, bottom first, each matching exactly its own layer's paths.
    expect(upward.map((r) => r.name)).toEqual(rows.slice(0, -1).map((r) => `upward-from-${r.name}`));
    const asFile = (p: string) => (/\.ts$/.test(p) ? p : `${p.replace(/\/$/, "")}/x.ts`);
    rows.forEach((row, i) => {
      for (const path of row.paths) {
        const owners = upward.filter((r) => new RegExp(r.from.path!).test(asFile(path))).map((r) => r.name);
        expect(owners, `${path} is in layer ${row.name}`).toEqual(i < upward.length ? [`upward-from-${row.name}`] : []);
      }
    });
  });

  it("dependency rules - an upward import planted in a copy of src/ fails the check, the one new violation apart from the cycles it closes", () => {
    const dir = scratch();
    cpSync(join(ROOT, "src"), join(dir, "src"), { recursive: true });
    const before = check(dir, ["src"]);

    // The actors (bottom layers) reach up to the composition root, with a type-only import.
    const file = join(dir, "src/actors/user-profile.ts");
    writeFileSync(file, `import type { Engine } from "../engine.js";\nexport type Planted = Engine;\n${readFileSync(file, "utf8")}`);
    const after = check(dir, ["src"]);

    expect(after.status).not.toBe(0);
    const added = after.violations.filter((v) => !before.violations.includes(v));
    // The planted import also closes cycles (the engine imports the actors); apart from those, it is the one new violation.
    expect(added.filter((v) => !/^no-(folder-)?cycle:/.test(v))).toEqual(["upward-from-core: src/actors/user-profile.ts -> src/engine.ts"]);
  });

  it("dependency rules - a module cycle and a folder cycle inside one layer fail the check; a downward import passes; an unplaced folder fails", () => {
    const dir = scratch();
    const put = (path: string, text: string) => {
      mkdirSync(join(dir, path, ".."), { recursive: true });
      writeFileSync(join(dir, path), text);
    };
    put("src/errors.ts", "export const E = 1;\n");
    put("src/api/handler.ts", 'import { E } from "../errors.js";\nexport const H = E;\n');
    put("src/client/client.ts", 'import { H } from "../api/handler.js";\nexport const C = H;\n');
    expect(check(dir, ["src"])).toEqual({ status: 0, violations: [] });

    // api and client share a layer, so either may import the other, but not both.
    put("src/api/handler.ts", 'import { E } from "../errors.js";\nimport { C } from "../client/client.js";\nexport const H = E + C;\n');
    const r = check(dir, ["src"]);
    expect(r.status).not.toBe(0);
    expect(r.violations.sort()).toEqual([
      "no-cycle: src/api/handler.ts -> src/client/client.ts",
      "no-folder-cycle: src/api -> src/client",
      "no-folder-cycle: src/client -> src/api",
    ]);

    // A folder no layer names is an error too, until it is placed in the rules file.
    put("src/api/handler.ts", 'import { E } from "../errors.js";\nexport const H = E;\n');
    put("src/extras/x.ts", 'import { E } from "../errors.js";\nexport const X = E;\n');
    expect(check(dir, ["src"]).violations).toEqual(["in-a-layer: src/extras/x.ts -> src/errors.ts"]);
  });
});
