/**
 * Audiences on a replay of a slice of UCI Online Retail through a real engine:
 * every audience's members and count equal a reference computed from the
 * input events by separate code (the definitions below, evaluated at the
 * engine clock after the replay), including the entries and exits that time
 * alone causes (lapsing, leaving "active in 7 days"), and the enter/exit
 * stream is a clean history (each transition once, no gap) ending in the same
 * members. An audience created afterwards is backfilled to the same members.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { AudienceDefinition } from "../src/actors/audience-rules.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetEvent } from "../src/data/types.js";
import { EventType } from "../src/wire/proto.js";
import { readTransitions, replayTransitions } from "./helpers/audiences.js";
import { uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(REPO_ROOT, "../shared/data");
/** Invoice lines replayed: 2010-12-01 to 2011-01-06 (1,000 customers). */
const LIMIT = 30_000;
const DAY = 86_400_000;
const HALF_LIFE = 7 * DAY;

const DEFS: AudienceDefinition[] = [
  { id: "active-7d", rule: { field: "events.7d", op: ">=", value: 1 } },
  { id: "today-buyers", rule: { field: "purchases.1d", op: ">=", value: 1 } },
  { id: "lapsed-30", rule: { all: [{ field: "orders", op: ">=", value: 1 }, { field: "daysSincePurchase", op: ">=", value: 30 }] } },
  { id: "recent-3d", rule: { field: "daysSincePurchase", op: "<", value: 3 } },
  { id: "big-30d", rule: { field: "revenue.30d", op: ">=", value: 500 } },
  { id: "frequent-90d", rule: { field: "purchases.90d", op: ">=", value: 40 } },
  { id: "champions", rule: { all: [{ field: "rfm.r", op: ">=", value: 4 }, { field: "rfm.f", op: ">=", value: 4 }, { field: "rfm.m", op: ">=", value: 4 }] } },
  { id: "refunded-net-low", rule: { any: [{ field: "net", op: "<", value: 50 }, { field: "rfm.m", op: "<=", value: 1 }] } },
  { id: "lapsed-small", rule: { all: [{ inAudience: "lapsed-30" }, { not: { inAudience: "big-30d" } }] } },
  { id: "cheap-lovers", rule: { affinity: { dimension: "priceBand", key: "0-5", topN: 1 } } },
];

/** The reference: the definitions above written out by hand over a user's raw events, at time `t`. */
function reference(events: DatasetEvent[], t: number): Map<string, Set<string>> {
  const byUser = new Map<string, DatasetEvent[]>();
  for (const e of events) (byUser.get(e.userId) ?? byUser.set(e.userId, []).get(e.userId)!).push(e);
  const out = new Map<string, Set<string>>(DEFS.map((d) => [d.id, new Set<string>()]));
  const today = Math.floor(t / DAY);
  const inDays = (e: DatasetEvent, w: number) => Math.floor(e.timestampMs / DAY) > today - w;
  for (const [user, evs] of byUser) {
    const at = Math.max(t, ...evs.map((e) => e.timestampMs));
    const buys = evs.filter((e) => e.type === EventType.PURCHASE);
    const cents = (e: DatasetEvent) => Math.round((e.price ?? 0) * Math.max(1, e.quantity ?? 1) * 100);
    const orders = new Set(buys.map((e) => e.orderId)).size;
    const lastBuy = buys.length > 0 ? Math.max(...buys.map((e) => e.timestampMs)) : 0;
    const since = lastBuy > 0 ? (at - lastBuy) / DAY : undefined;
    const purchased = buys.reduce((s, e) => s + (e.price ?? 0) * Math.max(1, e.quantity ?? 1), 0);
    const refunded = evs.filter((e) => e.type === EventType.REFUND).reduce((s, e) => s + (e.price ?? 0) * Math.max(1, e.quantity ?? 1), 0);
    const net = purchased - refunded;
    // RFM bins as README "The profile" states them.
    const r = since === undefined ? 0 : since <= 7 ? 5 : since <= 30 ? 4 : since <= 90 ? 3 : since <= 180 ? 2 : 1;
    const f = lastBuy === 0 ? 0 : orders >= 10 ? 5 : orders >= 5 ? 4 : orders >= 3 ? 3 : orders >= 2 ? 2 : 1;
    const m = lastBuy === 0 ? 0 : net >= 2000 ? 5 : net >= 500 ? 4 : net >= 200 ? 3 : net >= 50 ? 2 : 1;
    // Price bands: purchases weigh 5, halved every 7 days; the band with the highest score (ties: lower key).
    const bands = new Map<string, number>();
    for (const e of buys) {
      const p = e.price ?? 0;
      if (p <= 0) continue;
      const band = p >= 2000 ? "2000+" : p >= 1000 ? "1000-2000" : p >= 500 ? "500-1000" : p >= 200 ? "200-500" : p >= 100 ? "100-200"
        : p >= 50 ? "50-100" : p >= 20 ? "20-50" : p >= 10 ? "10-20" : p >= 5 ? "5-10" : "0-5";
      bands.set(band, (bands.get(band) ?? 0) + 5 * Math.pow(2, (e.timestampMs - at) / HALF_LIFE));
    }
    const topBand = [...bands].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
    const is: Record<string, boolean> = {};
    is["active-7d"] = evs.some((e) => inDays(e, 7));
    is["today-buyers"] = buys.some((e) => inDays(e, 1));
    is["lapsed-30"] = orders >= 1 && since !== undefined && since >= 30;
    is["recent-3d"] = since !== undefined && since < 3;
    is["big-30d"] = buys.filter((e) => inDays(e, 30)).reduce((s, e) => s + cents(e), 0) / 100 >= 500;
    is["frequent-90d"] = buys.filter((e) => inDays(e, 90)).length >= 40;
    is["champions"] = r >= 4 && f >= 4 && m >= 4;
    is["refunded-net-low"] = net < 50 || m <= 1;
    is["lapsed-small"] = is["lapsed-30"] && !is["big-30d"];
    is["cheap-lovers"] = topBand === "0-5";
    for (const d of DEFS) if (is[d.id]) out.get(d.id)!.add(user);
  }
  return out;
}

describe("audiences - Online Retail replay", () => {
  const fx = useEngineFixture();

  it("audiences - members and counts equal a reference from the input, time-driven transitions included; the stream holds each once", async () => {
    const file = resolveDataFile(DATA_DIR, "online-retail");
    const events: DatasetEvent[] = [];
    for await (const e of readDataset("online-retail", file, { limit: LIMIT })) events.push(e);
    const prefix = uniquePrefix("audr");
    const engine = await fx.startEngine({ subjectPrefix: prefix });
    const client = new PortraitClient(fx.nc, { partitions: engine.config.partitions, subjectPrefix: prefix });
    for (const d of DEFS) await client.audienceCreate(d);
    await client.publishMany(events);
    const users = [...new Set(events.map((e) => e.userId))];
    // Every event applied.
    await waitFor(async () => (await engine.metrics.eventsApplied.get()).values[0]?.value === events.length, { timeoutMs: 60_000, intervalMs: 100 });
    // The engine clock after the replay: "now" of a user whose last event is older.
    const first = users.reduce((a, b) => (events.findLast((e) => e.userId === a)!.timestampMs <= events.findLast((e) => e.userId === b)!.timestampMs ? a : b));
    const clock = (await client.getProfile(first)).asOfMs;
    const want = reference(events, clock);
    let diff = "";
    await waitFor(async () => {
      diff = "";
      for (const d of DEFS) {
        const got = new Set<string>();
        for await (const m of client.audienceMembersAll(d.id, 5000)) got.add(m.userId);
        const exp = want.get(d.id)!;
        const count = await client.audienceCount(d.id);
        const missing = [...exp].filter((u) => !got.has(u));
        const extra = [...got].filter((u) => !exp.has(u));
        if (missing.length > 0 || extra.length > 0 || count !== exp.size) {
          diff += `${d.id}: count ${count}, members ${got.size}, reference ${exp.size}; missing ${missing.slice(0, 5).join(",")} extra ${extra.slice(0, 5).join(",")}\n`;
        }
      }
      return diff === "";
    }, { timeoutMs: 20_000, intervalMs: 500 }).catch(() => undefined);
    expect(diff).toBe("");
    // Not empty audiences: the comparison means something.
    for (const id of ["active-7d", "lapsed-30", "big-30d", "champions", "lapsed-small", "cheap-lovers", "recent-3d"]) expect(want.get(id)!.size, id).toBeGreaterThan(5);

    const ts = await readTransitions(fx.nc, engine.subjects.audienceStream);
    const { members, problems } = replayTransitions(ts);
    expect(problems).toEqual([]);
    for (const d of DEFS) expect([...(members.get(d.id) ?? [])].sort(), d.id).toEqual([...want.get(d.id)!].sort());
    // Time alone made users lapse and leave "active in 7 days".
    expect(ts.filter((t) => t.audienceId === "lapsed-30" && t.entered && t.reason === "time").length).toBeGreaterThan(10);
    expect(ts.filter((t) => t.audienceId === "active-7d" && !t.entered && t.reason === "time").length).toBeGreaterThan(10);

    // An audience created after the replay is backfilled over the stored profiles to the same members.
    await client.audienceCreate({ id: "champions-late", rule: DEFS.find((d) => d.id === "champions")!.rule });
    await waitFor(async () => !(await client.audienceShow("champions-late")).backfill.running && (await client.audienceCount("champions-late")) === want.get("champions")!.size,
      { timeoutMs: 20_000 });
    const late = new Set<string>();
    for await (const m of client.audienceMembersAll("champions-late")) late.add(m.userId);
    expect([...late].sort()).toEqual([...want.get("champions")!].sort());
    const backfilled = (await readTransitions(fx.nc, engine.subjects.audienceStream)).filter((t) => t.audienceId === "champions-late");
    expect(backfilled.every((t) => t.reason === "backfill" && t.entered && t.transition === 1)).toBe(true);
  }, 90_000);
});
