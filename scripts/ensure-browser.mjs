// The dashboard test drives a real headless Chromium (Debian's). This step of
// `npm test` makes sure one is there: it installs Debian's
// chromium-headless-shell with apt-get when none is found and this is root on
// Debian, and otherwise says what to install. PORTRAIT_CHROMIUM names another binary.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const CANDIDATES = [process.env.PORTRAIT_CHROMIUM, "/usr/bin/chromium-headless-shell", "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(Boolean);
const found = CANDIDATES.find((p) => existsSync(p));
if (found) {
  console.log(`ensure-browser: ${found}`);
  process.exit(0);
}
const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root || !existsSync("/usr/bin/apt-get")) {
  console.error("ensure-browser: no Chromium found; install Debian's chromium-headless-shell (apt-get install chromium-headless-shell) or set PORTRAIT_CHROMIUM to a Chromium binary");
  process.exit(1);
}
console.log("ensure-browser: installing Debian's chromium-headless-shell for the dashboard test (apt-get)");
const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "chromium-headless-shell"], { stdio: "inherit", env });
if (!existsSync("/usr/bin/chromium-headless-shell")) {
  console.error("ensure-browser: apt-get finished but /usr/bin/chromium-headless-shell is missing");
  process.exit(1);
}
console.log("ensure-browser: /usr/bin/chromium-headless-shell");
