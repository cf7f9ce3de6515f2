/** README documents every stable code: error codes and dead-letter reasons (like fastify's errors table test). */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ErrorCode, errorStatus, retryableCodes } from "../src/errors.js";
import { DeadLetterReason } from "../src/wire/event-validation.js";

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const section = (title: string) => {
  const start = readme.indexOf(`## ${title}`);
  expect(start, `README has a "${title}" section`).toBeGreaterThan(-1);
  const end = readme.indexOf("\n## ", start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
};

describe("docs - README stays in sync with the code", () => {
  it("docs - every error code is in README's table with its status, and nothing else is", () => {
    const table = section("Error codes");
    const rows = [...table.matchAll(/^\| `([A-Z_]+)` \| (\d+) \|/gm)].map((m) => [m[1], Number(m[2])]);
    expect(Object.fromEntries(rows)).toEqual({ ...errorStatus });
    expect(rows.map((r) => r[0]).sort()).toEqual(Object.keys(ErrorCode).sort());
  });

  it("docs - README's retry column, the code notes in errors.ts and PortraitError.retryable agree", () => {
    const table = section("Error codes");
    // "later..." = retryable; "no" or "—" = not.
    const retry = Object.fromEntries([...table.matchAll(/^\| `([A-Z_]+)` \| \d+ \|.*\| ([^|]+) \|$/gm)].map((m) => [m[1], m[2]!.trim().startsWith("later")]));
    const source = readFileSync(new URL("../src/errors.ts", import.meta.url), "utf8");
    for (const code of Object.keys(ErrorCode)) {
      const note = new RegExp(`/\\*\\*([^*]|\\*(?!/))*\\*/\\s*${code}: "${code}"`).exec(source)?.[0] ?? "";
      const want = retryableCodes.has(code as ErrorCode);
      expect(retry[code], `README's retry? column for ${code}`).toBe(want);
      expect(/\bRetryable\b/.test(note), `errors.ts note of ${code} says "Retryable" iff the code is in retryableCodes: ${note}`).toBe(want);
    }
  });

  it("docs - every dead-letter reason is in README's table, and nothing else is", () => {
    const table = section("Dead letters");
    const rows = [...table.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(rows.sort()).toEqual(Object.keys(DeadLetterReason).sort());
  });
});
