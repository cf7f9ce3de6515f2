// tsc copies neither the generated JavaScript nor the dashboard's static files; put them beside the compiled code.
// Usage: node scripts/copy-generated.mjs [compiled src dir, default dist]
import { cpSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(root, process.argv[2] ?? "dist");
cpSync(join(root, "src", "wire", "gen"), join(out, "wire", "gen"), { recursive: true });
cpSync(join(root, "src", "dashboard", "public"), join(out, "dashboard", "public"), { recursive: true });
