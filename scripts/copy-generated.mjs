// tsc does not copy the generated JavaScript; put it beside the compiled code.
import { cpSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
cpSync(join(root, "src", "wire", "gen"), join(root, "dist", "wire", "gen"), { recursive: true });
