/** README documents every stable code: error codes and dead-letter reasons (like fastify's errors table test). */
import { readdirSync, readFileSync } from "node:fs";
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

describe("docs - figures quoted in the docs are the ones their sources hold", () => {
  it("docs - models/README's LSTM vocabulary sizes and epochs are the current manifest's", () => {
    const models = readFileSync(new URL("../models/README.md", import.meta.url), "utf8");
    const lstm = new URL("../models/lstm/", import.meta.url);
    const current = readFileSync(new URL("CURRENT", lstm), "utf8").trim();
    const m = JSON.parse(readFileSync(new URL(`${current}/manifest.json`, lstm), "utf8")) as {
      architecture: { vocab: { item: number; category: number } };
      training: { epochs: number; bestEpoch: number; seconds: number };
    };
    const num = (s: string) => Number(s.replace(/,/g, ""));
    const text = models.slice(models.indexOf("## LSTM user encoder")).replace(/\s+/g, " ");
    const items = /softmax over ([\d,]+) ids: the ([\d,]+) items/.exec(text);
    const cats = /its category \(([\d,]+) ids, ([\d,]+) categories\)/.exec(text);
    const epochs = /(\d+) epochs, best at (\d+), (\d+) s on/.exec(text);
    expect([items?.[1], items?.[2], cats?.[1], cats?.[2]].map((s) => num(s ?? "NaN"))).toEqual([
      m.architecture.vocab.item, m.architecture.vocab.item - 2, m.architecture.vocab.category, m.architecture.vocab.category - 2,
    ]);
    expect(epochs?.slice(1).map(Number)).toEqual([m.training.epochs, m.training.bestEpoch, m.training.seconds]);
  });

  it("docs - README's soak RSS figures are the newest soak run's, in GiB", () => {
    const results = new URL("../bench/results/", import.meta.url);
    const newest = readdirSync(results).filter((f) => /^soak-.*\.json$/.test(f)).sort().at(-1);
    expect(newest, "a soak run in bench/results").toBeDefined();
    const rss = (JSON.parse(readFileSync(new URL(newest!, results), "utf8")) as { raw: { samples: Array<{ rssMiB: number }> } }).raw.samples.map((s) => s.rssMiB);
    const gib = (mib: number) => (mib / 1024).toFixed(1);
    const quoted = /-minute soak [^|]*?grew RSS from ([\d.]+) to ([\d.]+) GiB \(first sample to the largest\)/.exec(readme);
    expect(quoted?.slice(1)).toEqual([gib(rss[0]!), gib(Math.max(...rss))]);
  });
});
