/// <reference lib="dom" />
/**
 * The dashboard in a real headless Chromium (Debian's, installed by the test
 * command's ensure-browser step), against a real engine: the numbers move
 * while events are replayed, and a user lookup shows that user's profile.
 * Set PORTRAIT_DASHBOARD_SCREENSHOT=<file.png> to keep a screenshot of each page.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetEvent } from "../src/data/types.js";
import type { Engine } from "../src/engine.js";
import { removeDir, startTestEngine, uniquePrefix } from "./helpers/engine.js";
import { startTestNats } from "./helpers/nats.js";

const DATA_DIR = process.env.PORTRAIT_DATASETS ?? fileURLToPath(new URL("../../shared/data", import.meta.url));
const CHROMIUM = [process.env.PORTRAIT_CHROMIUM, "/usr/bin/chromium-headless-shell", "/usr/bin/chromium"].find((p) => p !== undefined && existsSync(p));
const SHOT = process.env.PORTRAIT_DASHBOARD_SCREENSHOT;

let nats: NatsServerHandle;
let engine: Engine;
let client: PortraitClient;
let browser: Browser;
let prefix: string;

beforeAll(async () => {
  if (CHROMIUM === undefined) throw new Error("no Chromium: npm test installs Debian's chromium-headless-shell (scripts/ensure-browser.mjs); or set PORTRAIT_CHROMIUM");
  nats = await startTestNats();
  prefix = uniquePrefix("dash");
  engine = await startTestEngine(nats.url, { subjectPrefix: prefix, httpPort: 0 });
  client = await PortraitClient.connect({ natsUrl: nats.url, subjectPrefix: prefix, partitions: 4 });
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
});

afterAll(async () => {
  await browser?.close();
  await client?.close();
  await engine?.close();
  await nats?.stop();
  if (engine) removeDir(engine.config.dataDir);
});

const text = (page: Page, selector: string) => page.$eval(selector, (el) => el.textContent ?? "");
const count = (s: string) => Number(s.replace(/,/g, ""));

async function rees46(n: number): Promise<DatasetEvent[]> {
  const out: DatasetEvent[] = [];
  for await (const e of readDataset("rees46", resolveDataFile(DATA_DIR, "rees46"), { limit: n })) out.push({ ...e, eventId: `${prefix}-${e.eventId}` });
  return out;
}

describe("dashboard", { timeout: 180_000 }, () => {
  it("dashboard - the overview's numbers move while events are replayed, and a looked-up user shows that user's profile", async () => {
    const events = await rees46(3000);
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const pageErrors: string[] = [];
    page.on("pageerror", (err) => pageErrors.push(String(err)));
    await page.goto(`http://127.0.0.1:${engine.httpPort}/`);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "ready", { timeout: 30_000 });
    expect(count(await text(page, "#stat-events"))).toBe(0);

    // The first half, then the page must show it; the second half, and the figure moves on.
    await client.publishMany(events.slice(0, 1500));
    await page.waitForFunction(() => Number(document.getElementById("stat-events")!.textContent!.replace(/,/g, "")) >= 1500, { timeout: 60_000 });
    const half = count(await text(page, "#stat-events"));
    await client.publishMany(events.slice(1500));
    await page.waitForFunction((h) => Number(document.getElementById("stat-events")!.textContent!.replace(/,/g, "")) > h, { timeout: 60_000 }, half);
    await page.waitForFunction(() => Number(document.getElementById("stat-events")!.textContent!.replace(/,/g, "")) === 3000, { timeout: 60_000 });
    expect(await engine.metrics.total(engine.metrics.eventsApplied)).toBe(3000);
    // One row per partition; the models the engine runs; a freshness figure once batches were acknowledged.
    expect(await page.$$eval("#lag-table tbody tr", (rows) => rows.length)).toBe(4);
    const models = await page.$$eval("#models-table tbody tr td:first-child", (cells) => cells.map((c) => c.textContent));
    expect(models.sort()).toEqual(["churn", "deepfm", "lstm"]);
    expect(await text(page, "#stat-freshness")).toMatch(/^[\d.,]+ \/ [\d.,]+ ms$/);
    // The ingest chart drew its canvas.
    expect(await page.$$eval("#chart-ingest canvas", (c) => c.length)).toBeGreaterThan(0);
    if (SHOT !== undefined) await page.screenshot({ path: SHOT, fullPage: true });

    // The most active user of the replayed events, looked up through the form.
    const byUser = new Map<string, DatasetEvent[]>();
    for (const e of events) byUser.set(e.userId, [...(byUser.get(e.userId) ?? []), e]);
    const [userId, own] = [...byUser].sort((a, b) => b[1].length - a[1].length)[0]!;
    const named = own.find((e) => e.categoryPath);
    await page.type("#user-input", userId);
    await page.click("#user-form button");
    await page.waitForFunction((id) => document.getElementById("user-title")?.textContent === id &&
      (document.querySelector("#user-profile tbody tr td:last-child")?.textContent ?? "") !== "", { timeout: 30_000 }, userId);
    const profileRows = await page.$$eval("#user-profile tbody tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
    expect(profileRows[0]).toEqual(["events applied", String(own.length)]);
    const timeline = await page.$$eval("#user-timeline tbody tr", (rows) => rows.map((r) => r.children[2]!.textContent));
    expect(timeline[0]).toBe(own.at(-1)!.itemId);
    expect(timeline).toHaveLength(Math.min(10, own.length));
    if (named !== undefined) {
      const cats = await page.$$eval("#user-categories tbody tr td:first-child", (cells) => cells.map((c) => c.textContent));
      expect(cats.some((c) => c?.startsWith(named.categoryPath!))).toBe(true);
    }
    // The bundled models have no evaluation on this shop's stream: each prediction is null with the reason, never a bare number.
    const preds = await page.$$eval("#user-predictions tbody tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent ?? "")));
    expect(preds.map((p) => p[1])).toEqual(["null", "null", "null"]);
    expect(preds[1]![2]).toMatch(/^churn \S+ has no evaluation on this shop's data/);
    expect(preds[2]![2]).toMatch(/^lstm \S+ has no evaluation on this shop's data/);
    const recs = await page.$$eval("#user-recs tbody tr", (rows) => rows.length);
    expect(recs).toBeGreaterThan(0);
    if (SHOT !== undefined) await page.screenshot({ path: SHOT.replace(/\.png$/, "-user.png"), fullPage: true });

    // An unknown user gets the engine's typed error on the page.
    await page.evaluate(() => (location.hash = "#/user/nobody-here"));
    await page.waitForFunction(() => !document.getElementById("user-error")!.hidden, { timeout: 30_000 });
    expect(await text(page, "#user-error")).toContain("UNKNOWN_USER");
    expect(pageErrors).toEqual([]);
    await page.close();
  });
});
