/**
 * Calibrates the synthetic event generator (bench/generator.ts) on the real
 * data sets and writes bench/generator-params.json. Every parameter's
 * meaning and estimator is documented in bench/GENERATOR.md.
 *
 *   npx tsx bench/fit-generator.ts [--datasets ../shared/data] [--out bench/generator-params.json] [--dry-run]
 *
 * Reads (through the project's dataset readers, src/data/):
 * - taobao/UserBehavior_timeslice.csv.gz: behaviour mix, item / category /
 *   user popularity, sessions (30-minute inactivity gap), intra-session gaps,
 *   repeat views, buys/carts/favs on viewed items, category switches;
 * - taobao/UserBehavior_first_users.csv.gz: per-user interest concentration
 *   (slot weights) and interest drift over 9 days;
 * - rees46/2019-Oct_head_sample.csv.gz: item prices (lognormal) and brands.
 */
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import {
  ceilLognormalMean, ceilLognormalPmf, countBy, gridMaximize, normCdf, truncatedLognormalMean, zipfExponent, ZIPF_MIN_COUNT,
} from "./generator-stats.js";
import { generateEvents, INTEREST_SLOTS, SESSION_GAP_S, SESSION_MAX_EVENTS, GAP_MAX_S, type GeneratorParams } from "./generator.js";
import { commit, printTable, repoRoot } from "./report.js";

const { values: a } = parseArgs({
  options: {
    datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? `${repoRoot()}/../shared/data` },
    out: { type: "string", default: `${repoRoot()}/bench/generator-params.json` },
    "dry-run": { type: "boolean", default: false },
  },
});

interface Ev { user: string; item: string; cat: string; type: EventType; t: number }

const TAOBAO_SLICE = "taobao/UserBehavior_timeslice.csv.gz";
const TAOBAO_USERS = "taobao/UserBehavior_first_users.csv.gz";
const REES46 = "rees46/2019-Oct_head_sample.csv.gz";

async function loadTaobao(file: string): Promise<Ev[]> {
  const out: Ev[] = [];
  for await (const e of readDataset("taobao", resolveDataFile(a.datasets!, "taobao", file))) {
    out.push({ user: e.userId, item: e.itemId ?? "", cat: e.categoryId ?? "", type: e.type, t: e.timestampMs / 1000 });
  }
  return out;
}

/** Each user's events in time order (stable: file order within a second), cut into sessions at gaps > 30 min. */
function sessionsOf(events: readonly Ev[]): Ev[][] {
  const byUser = new Map<string, Ev[]>();
  for (const e of events) {
    let l = byUser.get(e.user);
    if (!l) byUser.set(e.user, (l = []));
    l.push(e);
  }
  const sessions: Ev[][] = [];
  for (const l of byUser.values()) {
    l.sort((x, y) => x.t - y.t);
    let cur: Ev[] = [];
    for (const e of l) {
      if (cur.length > 0 && e.t - cur[cur.length - 1]!.t > SESSION_GAP_S) {
        sessions.push(cur);
        cur = [];
      }
      cur.push(e);
    }
    sessions.push(cur);
  }
  return sessions;
}

/** Of the complete histories' events inside the slice's time window, how many the slice holds. */
function countInWindow(full: readonly Ev[], slice: readonly Ev[]): { inWindow: number; inSlice: number } {
  let t0 = Infinity, t1 = -Infinity;
  for (const e of slice) { t0 = Math.min(t0, e.t); t1 = Math.max(t1, e.t); }
  const users = new Set(full.map((e) => e.user));
  return {
    inWindow: full.filter((e) => e.t >= t0 && e.t <= t1).length,
    inSlice: slice.filter((e) => users.has(e.user)).length,
  };
}

/** Seeds whose generated streams the Zipf calibration averages. */
const CALIBRATION_SEEDS = [1, 2];
/** Share of a steady generated stream kept to mimic the slice's row sampling (it holds 4 of 55 events: ~7 %; 100M events / 9 days → ~10 %). */
const THIN = 0.1;
/** Event-time rate of the calibration streams, events/s. */
const CALIBRATION_EPS = 100;
/** Event-time rate of the unthinned reference stream the tests regenerate. */
const UNTHINNED_EPS = 3;

const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
const pct = (x: number) => `${(100 * x).toFixed(2)} %`;

async function main(): Promise<void> {
  const slice = await loadTaobao(TAOBAO_SLICE);
  const firstUsers = await loadTaobao(TAOBAO_USERS);
  const rees: { item: string; price: number; brand: string }[] = [];
  for await (const e of readDataset("rees46", resolveDataFile(a.datasets!, "rees46", REES46))) {
    rees.push({ item: e.itemId ?? "", price: e.price ?? 0, brand: e.brand ?? "" });
  }

  // --- behaviour mix ---
  const nType = (t: EventType) => slice.filter((e) => e.type === t).length;
  const mix = {
    pv: nType(EventType.VIEW) / slice.length,
    cart: nType(EventType.ADD_TO_CART) / slice.length,
    fav: nType(EventType.FAVORITE) / slice.length,
    buy: nType(EventType.PURCHASE) / slice.length,
  };

  // --- popularity ---
  const itemZ = zipfExponent(countBy(slice.map((e) => e.item)).values());
  const catZ = zipfExponent(countBy(slice.map((e) => e.cat)).values());
  const itemsOfCat = new Map<string, Set<string>>();
  for (const e of slice) {
    let s = itemsOfCat.get(e.cat);
    if (!s) itemsOfCat.set(e.cat, (s = new Set()));
    s.add(e.item);
  }
  const ipcZ = zipfExponent([...itemsOfCat.values()].map((s) => s.size));

  // --- sessions ---
  // The slice is a row sample, not every event of its window: of the 55 events
  // the 43 first users have inside the window it holds 4. Sampling thins
  // sessions (shorter, longer gaps), so everything per session is fitted on
  // the 43 complete 9-day histories; the slice's values are printed beside.
  const sliceSessions = sessionsOf(slice);
  const sessions = sessionsOf(firstUsers);
  const sliceSampled = countInWindow(firstUsers, slice);
  const userSessions = zipfExponent(countBy(sessions.map((s) => s[0]!.user)).values(), 1);
  const userEvents = zipfExponent(countBy(slice.map((e) => e.user)).values());
  const lenCounts = countBy(sessions.map((s) => Math.min(s.length, SESSION_MAX_EVENTS)));
  const meanLenObserved = sessions.reduce((m, s) => m + Math.min(s.length, SESSION_MAX_EVENTS), 0) / sessions.length;
  const llLen = (mu: number, sigma: number) => {
    let ll = 0;
    for (const [k, w] of lenCounts) ll += w * Math.log(Math.max(ceilLognormalPmf(k, mu, sigma, SESSION_MAX_EVENTS), 1e-300));
    return ll;
  };
  const lenFit = gridMaximize(llLen, [-3, 5], [0.1, 3.5]);
  const pGeo = 1 / meanLenObserved;
  let llGeo = 0;
  for (const [k, w] of lenCounts) llGeo += w * (Math.log(pGeo) + (k - 1) * Math.log(1 - pGeo));
  const lenMeanModel = ceilLognormalMean(lenFit.a, lenFit.b, SESSION_MAX_EVENTS);
  const p1Observed = (lenCounts.get(1) ?? 0) / sessions.length;
  const sliceMean = sliceSessions.reduce((m, s) => m + s.length, 0) / sliceSessions.length;

  // --- intra-session gaps (seconds; the data has 1 s resolution) ---
  const gapsOf = (ss: Ev[][]) => ss.flatMap((s) => s.slice(1).map((e, i) => e.t - s[i]!.t));
  const gaps = gapsOf(sessions);
  const sliceGaps = gapsOf(sliceSessions);
  const zeroShare = gaps.filter((g) => g === 0).length / gaps.length;
  const pos = gaps.filter((g) => g >= 1).map((g) => Math.log(g));
  const llGap = (mu: number, sigma: number) => {
    const z = normCdf((Math.log(GAP_MAX_S) - mu) / sigma) - normCdf((0 - mu) / sigma);
    if (!(z > 1e-300)) return Number.NEGATIVE_INFINITY;
    let ll = -pos.length * (Math.log(sigma) + Math.log(z));
    for (const x of pos) ll -= ((x - mu) / sigma) ** 2 / 2;
    return ll;
  };
  const gapFit = gridMaximize(llGap, [-2, 8], [0.2, 4]);
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  const gapMeanObserved = mean(gaps);
  const gapMeanModel = zeroShare * 0.5 + (1 - zeroShare) * truncatedLognormalMean(gapFit.a, gapFit.b, 1, GAP_MAX_S);

  // --- within-session behaviour (complete histories) ---
  const within = (ss: Ev[][]) => {
    const hit: Record<string, [number, number]> = { pv: [0, 0], cart: [0, 0], fav: [0, 0], buy: [0, 0] };
    const key: Record<number, string> = { [EventType.VIEW]: "pv", [EventType.ADD_TO_CART]: "cart", [EventType.FAVORITE]: "fav", [EventType.PURCHASE]: "buy" };
    let freshEvents = 0, freshSwitches = 0, pairs = 0, pairSwitches = 0;
    for (const s of ss) {
      const viewed = new Set<string>();
      const seen = new Set<string>();
      for (let i = 0; i < s.length; i++) {
        const e = s[i]!;
        const k = key[e.type]!;
        if (viewed.size > 0) {
          hit[k]![1]++;
          if (viewed.has(e.item)) hit[k]![0]++;
        }
        if (i > 0) {
          const sw = e.cat !== s[i - 1]!.cat;
          pairs++;
          if (sw) pairSwitches++;
          if (!seen.has(e.item)) {
            freshEvents++;
            if (sw) freshSwitches++;
          }
        }
        seen.add(e.item);
        if (e.type === EventType.VIEW) viewed.add(e.item);
      }
    }
    return { share: (k: string) => hit[k]![0] / hit[k]![1], n: (k: string) => hit[k]![1], freshSwitch: freshSwitches / freshEvents, pairSwitch: pairSwitches / pairs };
  };
  const wb = within(sessions);
  const share = wb.share;
  const sliceWb = within(sliceSessions);

  // --- prices and brands (REES46: one price per product, its first non-zero one) ---
  const priceOf = new Map<string, number>();
  const brandOf = new Map<string, string>();
  for (const e of rees) {
    if (e.price > 0 && !priceOf.has(e.item)) priceOf.set(e.item, e.price);
    if (!brandOf.has(e.item)) brandOf.set(e.item, e.brand);
  }
  const logs = [...priceOf.values()].map(Math.log);
  const priceMu = logs.reduce((x, y) => x + y, 0) / logs.length;
  const priceSigma = Math.sqrt(logs.reduce((m, x) => m + (x - priceMu) ** 2, 0) / logs.length);
  const branded = [...brandOf.values()].filter((b) => b !== "");
  const brandShare = branded.length / brandOf.size;
  const brandZ = zipfExponent(countBy(branded).values(), 2);

  // --- interests and drift (43 complete 9-day Taobao histories) ---
  // Per user and UTC day with ≥ 20 events: the shares of the day's categories,
  // largest first. Slot weight j = mean share of the (j+1)-th category.
  const DAY = 86400;
  const byUserDay = new Map<string, Map<number, Ev[]>>();
  for (const e of firstUsers) {
    let m = byUserDay.get(e.user);
    if (!m) byUserDay.set(e.user, (m = new Map()));
    const d = Math.floor(e.t / DAY);
    let l = m.get(d);
    if (!l) m.set(d, (l = []));
    l.push(e);
  }
  const slotSums = new Array<number>(INTEREST_SLOTS).fill(0);
  let userDays = 0;
  const sameByLag = new Map<number, [number, number]>();
  for (const days of byUserDay.values()) {
    const top = new Map<number, string>();
    for (const [d, l] of days) {
      if (l.length < 20) continue;
      const shares = [...countBy(l.map((e) => e.cat)).entries()].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
      for (let j = 0; j < INTEREST_SLOTS; j++) slotSums[j]! += (shares[j]?.[1] ?? 0) / l.length;
      userDays++;
      top.set(d, shares[0]![0]);
    }
    const ds = [...top.keys()].sort((x, y) => x - y);
    for (let i = 0; i < ds.length; i++) {
      for (let j = i + 1; j < ds.length; j++) {
        const lag = ds[j]! - ds[i]!;
        const c = sameByLag.get(lag) ?? [0, 0];
        c[1]++;
        if (top.get(ds[i]!) === top.get(ds[j]!)) c[0]++;
        sameByLag.set(lag, c);
      }
    }
  }
  const slotWeights = slotSums.map((x) => x / userDays);
  // In the model the top category of a day is slot 0's (the heaviest slot),
  // which is redrawn once every D days: P(same top category Δ days apart) =
  // max(0, 1 − Δ/D). D minimizes the pair-weighted squared error of that curve
  // against the observed P over lags 1..8 (a grid over [0.25, 60] days). The
  // free-intercept line c − bΔ is printed too: its c ≈ 0.2 says a user's top
  // category is unstable even between consecutive days, which this model can
  // only express as fast drift.
  const lags = [...sameByLag].filter(([lag]) => lag <= 8);
  let driftDays = 60, bestErr = Infinity;
  for (let D = 0.25; D <= 60; D += 0.01) {
    let err = 0;
    for (const [lag, [same, n]] of lags) err += n * (same / n - Math.max(0, 1 - lag / D)) ** 2;
    if (err < bestErr) { bestErr = err; driftDays = D; }
  }
  let sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const [lag, [same, n]] of lags) {
    const y = same / n;
    sw += n; sx += n * lag; sy += n * y; sxx += n * lag * lag; sxy += n * lag * y;
  }
  const slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
  const intercept = (sy - slope * sx) / sw;
  const driftDaysRaw = slope < 0 ? intercept / -slope : Infinity;

  const params: GeneratorParams = {
    version: 1,
    fittedFrom: {
      date: new Date().toISOString(),
      commit: commit(),
      command: "npx tsx bench/fit-generator.ts",
      files: [
        { path: TAOBAO_SLICE, rows: slice.length, used: "behaviour mix; item, category and items-per-category popularity" },
        { path: TAOBAO_USERS, rows: firstUsers.length, used: "user activity, sessions, gaps, within-session behaviour, interest slot weights, drift" },
        { path: REES46, rows: rees.length, used: "price lognormal, brands" },
      ],
      sessionGapSeconds: SESSION_GAP_S,
      zipfMinCount: ZIPF_MIN_COUNT,
    },
    behaviourMix: { pv: r4(mix.pv), cart: r4(mix.cart), fav: r4(mix.fav), buy: r4(mix.buy) },
    itemZipfExponent: r4(itemZ.s),
    categoryZipfExponent: r4(catZ.s),
    zipfCalibration: {
      events: slice.length, seeds: CALIBRATION_SEEDS, itemStatistic: r4(itemZ.s), categoryStatistic: r4(catZ.s),
      thin: THIN, eventsPerSecond: CALIBRATION_EPS, warmupMinutes: 30,
      itemStatisticGenerated: Number.NaN, categoryStatisticGenerated: Number.NaN,
      unthinnedEventsPerSecond: UNTHINNED_EPS, itemStatisticUnthinned: Number.NaN, categoryStatisticUnthinned: Number.NaN,
    },
    itemsPerCategoryZipfExponent: r4(ipcZ.s),
    userZipfExponent: r4(userSessions.s),
    sessionLength: {
      model: "ceil-lognormal",
      mu: r4(lenFit.a),
      sigma: r4(lenFit.b),
      max: SESSION_MAX_EVENTS,
      mean: r4(lenMeanModel),
      observedMean: r4(meanLenObserved),
      observedSessions: sessions.length,
      logLik: r4(lenFit.value),
      geometricLogLik: r4(llGeo),
    },
    gap: {
      zeroShare: r4(zeroShare),
      mu: r4(gapFit.a),
      sigma: r4(gapFit.b),
      minSeconds: 1,
      maxSeconds: GAP_MAX_S,
      meanSeconds: r4(gapMeanModel),
      observedMeanSeconds: r4(gapMeanObserved),
      observedGaps: gaps.length,
    },
    revisitShare: r4(share("pv")),
    viewedShare: { cart: r4(share("cart")), fav: r4(share("fav")), buy: r4(share("buy")) },
    categorySwitch: r4(wb.freshSwitch),
    observedCategorySwitch: r4(wb.pairSwitch),
    price: { mu: r4(priceMu), sigma: r4(priceSigma), products: priceOf.size },
    brand: { share: r4(brandShare), zipfExponent: r4(brandZ.s), brandsInSample: new Set(branded).size },
    interests: {
      slotWeights: slotWeights.map(r4),
      userDays,
      driftDays: r4(driftDays),
      driftFit: { intercept: r4(intercept), slopePerDay: r4(slope), rawDays: Number.isFinite(driftDaysRaw) ? r4(driftDaysRaw) : null, pairs: sw },
    },
  };

  const S = "taobao first users", T = "taobao slice";
  const rows: string[][] = [
    ["behaviour mix pv/cart/fav/buy", T, `${pct(mix.pv)} / ${pct(mix.cart)} / ${pct(mix.fav)} / ${pct(mix.buy)}`, "counts / rows"],
    ["item Zipf exponent", T, `${itemZ.s.toFixed(3)}`, `log-log LS, ${itemZ.ranks} ranks with count ≥ ${ZIPF_MIN_COUNT}`],
    ["category Zipf exponent", T, `${catZ.s.toFixed(3)}`, `log-log LS, ${catZ.ranks} ranks`],
    ["items/category Zipf exponent (info)", T, `${ipcZ.s.toFixed(3)}`, `log-log LS, ${ipcZ.ranks} ranks`],
    ["user Zipf exponent (sessions/user)", S, `${userSessions.s.toFixed(3)}`, `log-log LS over ${userSessions.ranks} users (slice events/user: ${userEvents.s.toFixed(3)})`],
    ["slice completeness", T, `${sliceSampled.inSlice} / ${sliceSampled.inWindow}`, "first users' events inside the slice window that the slice holds"],
    ["session length ceil-lognormal mu, sigma", S, `${lenFit.a.toFixed(3)}, ${lenFit.b.toFixed(3)}`, `MLE on ${sessions.length} sessions; LL ${lenFit.value.toFixed(0)} vs geometric ${llGeo.toFixed(0)}`],
    ["mean session length (events)", S, `${lenMeanModel.toFixed(2)} model`, `observed ${meanLenObserved.toFixed(2)}; P(L=1) obs ${pct(p1Observed)} model ${pct(ceilLognormalPmf(1, lenFit.a, lenFit.b, SESSION_MAX_EVENTS))}; slice (thinned) ${sliceMean.toFixed(2)}`],
    ["gap: share < 1 s", S, pct(zeroShare), `${gaps.length} gaps within sessions`],
    ["gap lognormal mu, sigma (s, on [1, 1800])", S, `${gapFit.a.toFixed(3)}, ${gapFit.b.toFixed(3)}`, `truncated MLE; mean model ${gapMeanModel.toFixed(1)} s, observed ${gapMeanObserved.toFixed(1)} s (slice ${mean(sliceGaps).toFixed(1)} s)`],
    ["repeat view share", S, pct(share("pv")), `pv on an item viewed earlier in the session | a view before (n ${wb.n("pv")}; slice ${pct(sliceWb.share("pv"))})`],
    ["cart / fav / buy on viewed item", S, `${pct(share("cart"))} / ${pct(share("fav"))} / ${pct(share("buy"))}`, `same condition (n ${wb.n("cart")} / ${wb.n("fav")} / ${wb.n("buy")}; slice ${pct(sliceWb.share("cart"))} / ${pct(sliceWb.share("fav"))} / ${pct(sliceWb.share("buy"))})`],
    ["category switch (fresh items)", S, pct(wb.freshSwitch), `all consecutive pairs: ${pct(wb.pairSwitch)} (slice ${pct(sliceWb.freshSwitch)})`],
    ["price lognormal mu, sigma", "rees46", `${priceMu.toFixed(3)}, ${priceSigma.toFixed(3)}`, `MLE over ${priceOf.size} products; median ${Math.exp(priceMu).toFixed(2)}`],
    ["brand share, brand Zipf exponent", "rees46", `${pct(brandShare)}, ${brandZ.s.toFixed(3)}`, `${new Set(branded).size} brands in the sample`],
    ["interest slot weights", S, slotWeights.map((x) => x.toFixed(3)).join(" / "), `mean share of a day's j-th category, ${userDays} user-days; explore ${pct(1 - slotWeights.reduce((x, y) => x + y, 0))}`],
    ["interest drift period (days)", S, driftDays.toFixed(2), `LS of max(0, 1 − lag/D) on P(same top category); free line ${intercept.toFixed(3)} ${slope.toFixed(3)}·lag → ${driftDaysRaw.toFixed(1)}`],
  ];
  // Indirect inference of the generator's Zipf exponents (see
  // GeneratorParams.zipfCalibration): the slice is a row sample of a steady
  // stream, so the generated counterpart is a steady stream (after a warm-up
  // of 30 min of event time) thinned to THIN of its events, as many as the
  // slice has. The statistic of the unthinned stream (what the tests check)
  // is recorded beside.
  const sample = (p: GeneratorParams, seed: number, thin: number, eventsPerSecond: number, warmupMs: number) => {
    const keep = seededRandom(seed + 1000);
    const out: IEvent[] = [];
    const startMs = Date.UTC(2024, 0, 1);
    for (const e of generateEvents(Number.MAX_SAFE_INTEGER, { seed, params: p, eventsPerSecond, startMs })) {
      if ((e.timestampMs as number) < startMs + warmupMs || keep() >= thin) continue;
      out.push(e);
      if (out.length === slice.length) break;
    }
    return out;
  };
  const statistic = (p: GeneratorParams, field: "itemId" | "categoryId", thin = THIN, eps = CALIBRATION_EPS, warmupMs = 30 * 60_000) => {
    let sum = 0;
    for (const seed of CALIBRATION_SEEDS) sum += zipfExponent(countBy(sample(p, seed, thin, eps, warmupMs).map((e) => e[field]!)).values()).s;
    return sum / CALIBRATION_SEEDS.length;
  };
  const solve = (field: "itemId" | "categoryId", key: "itemZipfExponent" | "categoryZipfExponent", target: number, lo: number, hi: number) => {
    for (let it = 0; it < 8; it++) {
      const mid = (lo + hi) / 2;
      if (statistic({ ...params, [key]: mid }, field) < target) lo = mid;
      else hi = mid;
    }
    params[key] = r4((lo + hi) / 2);
  };
  solve("itemId", "itemZipfExponent", itemZ.s, 0.2, 1.0);
  solve("categoryId", "categoryZipfExponent", catZ.s, 0.9, 1.7);
  params.zipfCalibration.itemStatisticGenerated = r4(statistic(params, "itemId"));
  params.zipfCalibration.categoryStatisticGenerated = r4(statistic(params, "categoryId"));
  params.zipfCalibration.itemStatisticUnthinned = r4(statistic(params, "itemId", 1, UNTHINNED_EPS, 0));
  params.zipfCalibration.categoryStatisticUnthinned = r4(statistic(params, "categoryId", 1, UNTHINNED_EPS, 0));
  rows[1]![0] = "item rank-frequency statistic";
  rows[2]![0] = "category rank-frequency statistic";
  rows.splice(2, 0, ["item Zipf exponent of the generator", "calibrated", params.itemZipfExponent.toFixed(3),
    `statistic on ${slice.length} events of a ${THIN}-thinned generated stream: ${params.zipfCalibration.itemStatisticGenerated.toFixed(3)} (seeds ${CALIBRATION_SEEDS.join(", ")}); unthinned ${params.zipfCalibration.itemStatisticUnthinned.toFixed(3)}`]);
  rows.splice(4, 0, ["category Zipf exponent of the generator", "calibrated", params.categoryZipfExponent.toFixed(3),
    `statistic thinned ${params.zipfCalibration.categoryStatisticGenerated.toFixed(3)}, unthinned ${params.zipfCalibration.categoryStatisticUnthinned.toFixed(3)}`]);

  printTable("Synthetic generator calibration", ["parameter", "source", "fitted", "how"], rows);
  console.log("\nP(same top category) by lag (days):", [...sameByLag].sort((x, y) => x[0] - y[0]).map(([l, [s, n]]) => `${l}:${(s / n).toFixed(2)}(${n})`).join(" "));
  if (!a["dry-run"]) {
    writeFileSync(resolve(a.out!), JSON.stringify(params, null, 2) + "\n");
    console.log(`\nwrote ${a.out}`);
  }
}

await main();
