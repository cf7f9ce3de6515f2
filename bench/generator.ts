/**
 * Calibrated synthetic event generator: a seeded, deterministic stream of
 * shop sessions for millions of users, with parameters fitted on the real data
 * (bench/fit-generator.ts → bench/generator-params.json; bench/GENERATOR.md).
 * bench/synthetic.ts (`syntheticEvents`, the crude stream recorded results
 * depend on) is unchanged beside it.
 *
 * Model (one shared PRNG stream, src/models/seeded-random.ts, plus keyed draws
 * of the same PRNG for per-user and per-item values, so that no per-user
 * state exists):
 * - Catalogue: `items` items ranked by popularity, weight (r+1)^-itemZipfExponent.
 *   Each item belongs to one of `categories` leaf categories, drawn with weight
 *   (c+1)^-categoryZipfExponent, so a category's event share follows that Zipf
 *   law in expectation and the item marginal stays exactly Zipf. Each item has
 *   a price (lognormal) and, for a `brand.share` of items, a brand (Zipf).
 * - Sessions arrive as a Poisson process of rate eventsPerSecond / E[L]. Each
 *   picks a user by Zipf(userZipfExponent) over `users` (closed-form inverse
 *   CDF: O(1) memory whatever `users` is), a length L (ceil-lognormal), and
 *   emits L events separated by gaps (< 1 s with prob. zeroShare, otherwise a
 *   lognormal truncated to [1 s, 30 min]). Active sessions are the only state:
 *   a heap of at most `maxActiveSessions` (when full, arrivals wait).
 * - Each event's type is drawn from the behaviour mix. A view re-views an item
 *   already viewed in the session with prob. revisitShare; a cart / fav / buy
 *   takes a viewed item with prob. viewedShare[type] (when the session has
 *   views); otherwise the item is fresh: drawn by popularity inside the
 *   session's current category, which is switched (to another category)
 *   before a fresh item with prob. categorySwitch.
 * - Interests: a user has INTEREST_SLOTS preferred categories; a new category
 *   is slot j with prob. slotWeights[j], else a draw from the whole catalogue
 *   (exploration). Slot j of user u is a keyed draw from the category
 *   popularity law for the epoch floor((t/day + phase_uj) / driftDays): each
 *   slot is redrawn once every driftDays days, slots and users staggered by
 *   their phase, so over a lag Δ ≤ driftDays a slot has been redrawn with
 *   probability Δ / driftDays.
 *
 * Parameters (meaning, unit, fitted value, how fitted; exact numbers and the
 * fit's files, rows and date in generator-params.json, estimators in
 * GENERATOR.md; refit with `npx tsx bench/fit-generator.ts`). "Slice" is the
 * Taobao 2 h time slice, which is a row sample (it holds 4 of the 55 events the
 * 43 complete histories have in its window): only per-event marginals are
 * fitted on it; everything per session comes from the 43 complete 9-day
 * Taobao histories ("histories").
 * - behaviourMix.{pv,cart,fav,buy}: share of events of each type; slice
 *   counts / rows: 0.8918 / 0.0550 / 0.0307 / 0.0226.
 * - itemZipfExponent (0.533), categoryZipfExponent (1.317): Zipf s of item
 *   popularity and of the category assignment. The statistic (least squares of
 *   ln count on ln rank over ranks with count ≥ 3) is 0.376 / 1.239 on the
 *   slice; it depends on sample size and on within-session repeats, so s is
 *   the value for which 110,300 events of a generated stream thinned like the
 *   slice (10 %, after 30 min of warm-up, 100 events/s, seeds 1 and 2) give
 *   the same statistic (indirect inference by bisection: 0.364 / 1.240;
 *   zipfCalibration). Unthinned at 3 events/s: 0.313 / 1.258.
 * - itemsPerCategoryZipfExponent (1.184): the statistic for distinct items per
 *   category on the slice; reported only (items per category follow
 *   categoryZipfExponent here).
 * - userZipfExponent (0.585, sessions per user): statistic over the 43
 *   histories' sessions per user (count ≥ 1). Weakly identified (43 users).
 * - sessionLength.{mu 0.720, sigma 1.520, max 200} (events):
 *   L = min(200, ceil(exp(mu + sigma·Z))); MLE on 722 history sessions (30-min
 *   gap); beats a geometric law (log-lik −1856 vs −1950). Model mean 6.86,
 *   observed 5.98 (the lognormal tail is heavier than the data's).
 * - gap.{zeroShare 0.0022, mu 3.940, sigma 1.436, [1 s, 1800 s]}: intra-session
 *   gap; share of 0 s gaps (then uniform in [0, 1 s)), else a lognormal in
 *   seconds truncated to [1, 1800], MLE. Mean 124 s (observed 134 s).
 * - revisitShare (0.1152): P(a view is of an item viewed earlier in the
 *   session | the session has a view), histories.
 * - viewedShare.{cart 0.0828, fav 0.0648, buy 0.6170}: the same for carts,
 *   favourites and buys (n = 157 / 108 / 47: buy is ±7 points).
 * - categorySwitch (0.5281): P(category differs from the previous event's |
 *   the item is new to the session), histories.
 * - price.{mu 4.714, sigma 1.316}: lognormal of an item's unit price
 *   (currency units; median 111), MLE on one price per REES46 product (6,479).
 * - brand.{share 0.7975, zipfExponent 0.964}: share of REES46 products with a
 *   brand; statistic of products per brand (count ≥ 2). `brands` (default
 *   4,000) is chosen, not fitted (the sample has 864).
 * - interests.slotWeights (0.393 / 0.169 / 0.098 / 0.066, explore 0.274):
 *   mean share of a history user-day's j-th most frequent category (70
 *   user-days with ≥ 20 events).
 * - interests.driftDays (1.23 days; a slot is redrawn 0.81 times a day): least
 *   squares of the model's P(same top category Δ days apart) = max(0, 1 − Δ/D)
 *   against the histories' (lags 1..8, 104 pairs). Users change their top
 *   category from one day to the next 81 % of the time; the model reads that
 *   as fast drift. Weakly identified.
 */
import { EventType, type IEvent } from "../src/wire/proto.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { ceilLognormalMean, truncatedLognormalMean } from "./generator-stats.js";
import fittedParams from "./generator-params.json" with { type: "json" };

/** Inactivity gap that ends a session, seconds (the engine's default too). */
export const SESSION_GAP_S = 1800;
/** Longest session, events (the fit lumps longer ones into it). */
export const SESSION_MAX_EVENTS = 200;
/** Longest intra-session gap, seconds. */
export const GAP_MAX_S = SESSION_GAP_S;
/** Preferred categories per user. */
export const INTEREST_SLOTS = 4;
/** Distinct recently viewed items a session remembers for re-views and buys. */
const VIEWED_CAP = 32;
const DAY_MS = 86_400_000;

export interface GeneratorParams {
  version: number;
  fittedFrom: {
    date: string;
    commit: string;
    command: string;
    files: { path: string; rows: number; used: string }[];
    sessionGapSeconds: number;
    zipfMinCount: number;
  };
  behaviourMix: { pv: number; cart: number; fav: number; buy: number };
  /** Zipf s of the generator's item popularity law (calibrated, see zipfCalibration). */
  itemZipfExponent: number;
  /** Zipf s of the generator's category assignment law (calibrated, see zipfCalibration). */
  categoryZipfExponent: number;
  /**
   * The rank-frequency statistic (zipfExponent() of generator-stats.ts) is
   * biased by sample size, catalogue size and within-session repeats, so the
   * generator's exponents are found by indirect inference: the values for
   * which the statistic on `events` events of a generated stream (warmed up,
   * thinned to `thin` like the slice's row sample, `seeds` averaged) equals
   * the statistic on the same number of real events.
   */
  zipfCalibration: {
    events: number;
    seeds: number[];
    /** Share of the generated stream kept, like the slice's row sampling. */
    thin: number;
    eventsPerSecond: number;
    warmupMinutes: number;
    itemStatistic: number;
    categoryStatistic: number;
    itemStatisticGenerated: number;
    categoryStatisticGenerated: number;
    /** The statistic on the first `events` events of an unthinned stream at this rate (what the tests check). */
    unthinnedEventsPerSecond: number;
    itemStatisticUnthinned: number;
    categoryStatisticUnthinned: number;
  };
  itemsPerCategoryZipfExponent: number;
  userZipfExponent: number;
  sessionLength: {
    model: "ceil-lognormal"; mu: number; sigma: number; max: number; mean: number;
    observedMean: number; observedSessions: number; logLik: number; geometricLogLik: number;
  };
  gap: {
    zeroShare: number; mu: number; sigma: number; minSeconds: number; maxSeconds: number;
    meanSeconds: number; observedMeanSeconds: number; observedGaps: number;
  };
  revisitShare: number;
  viewedShare: { cart: number; fav: number; buy: number };
  categorySwitch: number;
  observedCategorySwitch: number;
  price: { mu: number; sigma: number; products: number };
  brand: { share: number; zipfExponent: number; brandsInSample: number };
  interests: {
    slotWeights: number[];
    userDays: number;
    driftDays: number;
    driftFit: { intercept: number; slopePerDay: number; rawDays: number | null; pairs: number };
  };
}

/** The committed fit (bench/generator-params.json). */
export const FITTED_PARAMS: Readonly<GeneratorParams> = fittedParams as GeneratorParams;

export interface GeneratorOptions {
  seed?: number;
  /** Users the sessions are drawn from (Zipf); default 1,000,000. No per-user memory. */
  users?: number;
  /** Items in the catalogue; default 1,000,000 (typed arrays, ~24 MB). */
  items?: number;
  /** Leaf categories; default 10,000 (Taobao has 9,439). */
  categories?: number;
  /** Brands; default 4,000; 0 = no brand field. */
  brands?: number;
  /** Event time of the first session start, ms; default 2024-01-01T00:00Z. */
  startMs?: number;
  /** Target mean event rate of the whole stream in event time, events/s; default 1,000. */
  eventsPerSecond?: number;
  /** Bound on concurrently active sessions (the generator's only growing state); default 200,000. */
  maxActiveSessions?: number;
  /** Overrides of fitted parameters (e.g. a drift period for a test). */
  params?: Partial<GeneratorParams>;
  /** When given, kept up to date with the generator's counters. */
  stats?: GeneratorStats;
}

export interface GeneratorStats {
  sessionsStarted: number;
  activeSessions: number;
  peakActiveSessions: number;
  /** Arrivals that had to wait because maxActiveSessions sessions were active. */
  delayedArrivals: number;
}

interface Resolved {
  seed: number; users: number; items: number; categories: number; brands: number;
  startMs: number; eventsPerSecond: number; maxActiveSessions: number; p: GeneratorParams;
}

function resolveOptions(o: GeneratorOptions): Resolved {
  const r: Resolved = {
    seed: o.seed ?? 42,
    users: o.users ?? 1_000_000,
    items: o.items ?? 1_000_000,
    categories: o.categories ?? 10_000,
    brands: o.brands ?? 4_000,
    startMs: o.startMs ?? Date.UTC(2024, 0, 1),
    eventsPerSecond: o.eventsPerSecond ?? 1_000,
    maxActiveSessions: o.maxActiveSessions ?? 200_000,
    p: { ...FITTED_PARAMS, ...o.params } as GeneratorParams,
  };
  for (const k of ["users", "items", "categories", "maxActiveSessions"] as const) {
    if (!(Number.isInteger(r[k]) && r[k] >= 1)) throw new RangeError(`generator: ${k} must be an integer ≥ 1, got ${r[k]}`);
  }
  if (!(r.eventsPerSecond > 0)) throw new RangeError(`generator: eventsPerSecond must be > 0`);
  return r;
}

// ---------- keyed draws: the project's PRNG, seeded by a mix of integers ----------

function mix32(h: number, x: number): number {
  h = Math.imul(h ^ (x >>> 0), 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

/** A uniform in [0, 1) that depends only on the integers (first output of mulberry32 seeded by their mix). */
function keyedUniform(a: number, b: number, c: number, d: number): number {
  return seededRandom(mix32(mix32(mix32(mix32(0x2545f491, a), b), c), d))();
}

/** Zipf rank in [0, n) with exponent s, continuous inverse CDF of x^-s on [1, n+1). O(1) memory. */
function zipfRank(u: number, n: number, s: number): number {
  let x: number;
  if (Math.abs(1 - s) < 1e-9) x = Math.exp(u * Math.log(n + 1));
  else x = Math.pow(1 + u * (Math.pow(n + 1, 1 - s) - 1), 1 / (1 - s));
  return Math.min(n - 1, Math.max(0, Math.floor(x) - 1));
}

function gaussian(rnd: () => number): number {
  const u = 1 - rnd();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
}

/** First index i in [lo, hi) with cum[i] > x (cum ascending). */
function search(cum: Float64Array, x: number, lo: number, hi: number): number {
  let l = lo, h = hi - 1;
  while (l < h) {
    const m = (l + h) >>> 1;
    if (cum[m]! > x) h = m;
    else l = m + 1;
  }
  return l;
}

// ---------- catalogue ----------

interface Catalogue {
  /** Category of each item. */
  itemCategory: Int32Array;
  /** Items of category c are catItems[catStart[c] .. catStart[c+1]), most popular first. */
  catStart: Int32Array;
  catItems: Int32Array;
  /** Cumulative item weight within each category's slice. */
  catItemCum: Float64Array;
  /** Cumulative category mass (sum of its items' weights) over categories. */
  catCum: Float64Array;
  price: Float64Array;
  /** Brand rank, or -1 for none. */
  brand: Int32Array;
}

let cached: { key: string; cat: Catalogue } | undefined;

function catalogue(r: Resolved): Catalogue {
  const { p } = r;
  const key = JSON.stringify([r.seed, r.items, r.categories, r.brands, p.itemZipfExponent, p.categoryZipfExponent, p.price, p.brand]);
  if (cached?.key === key) return cached.cat;
  const rnd = seededRandom(mix32(r.seed, 0xca7a1061));
  const N = r.items, C = r.categories;
  const assignCum = new Float64Array(C);
  let acc = 0;
  for (let c = 0; c < C; c++) assignCum[c] = acc += Math.pow(c + 1, -p.categoryZipfExponent);
  const itemCategory = new Int32Array(N);
  const catStart = new Int32Array(C + 1);
  for (let i = 0; i < N; i++) {
    const c = search(assignCum, rnd() * acc, 0, C);
    itemCategory[i] = c;
    catStart[c + 1]!++;
  }
  for (let c = 0; c < C; c++) catStart[c + 1]! += catStart[c]!;
  const fill = catStart.slice(0, C);
  const catItems = new Int32Array(N);
  const catItemCum = new Float64Array(N);
  const catCum = new Float64Array(C);
  for (let i = 0; i < N; i++) catItems[fill[itemCategory[i]!]!++] = i;
  let mass = 0;
  for (let c = 0; c < C; c++) {
    let m = 0;
    for (let k = catStart[c]!; k < catStart[c + 1]!; k++) catItemCum[k] = m += Math.pow(catItems[k]! + 1, -p.itemZipfExponent);
    catCum[c] = mass += m;
  }
  const price = new Float64Array(N);
  const brand = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    price[i] = Math.max(0.01, Math.round(Math.exp(p.price.mu + p.price.sigma * gaussian(rnd)) * 100) / 100);
    brand[i] = r.brands > 0 && rnd() < p.brand.share ? zipfRank(rnd(), r.brands, p.brand.zipfExponent) : -1;
  }
  const cat = { itemCategory, catStart, catItems, catItemCum, catCum, price, brand };
  cached = { key, cat };
  return cat;
}

function categoryByMass(cat: Catalogue, u: number): number {
  const C = cat.catCum.length;
  return search(cat.catCum, u * cat.catCum[C - 1]!, 0, C);
}

function itemInCategory(cat: Catalogue, c: number, u: number): number {
  const lo = cat.catStart[c]!, hi = cat.catStart[c + 1]!;
  return cat.catItems[search(cat.catItemCum, u * cat.catItemCum[hi - 1]!, lo, hi)]!;
}

function interestSlots(r: Resolved, cat: Catalogue, user: number, tMs: number): number[] {
  const D = r.p.interests.driftDays;
  const days = tMs / DAY_MS;
  const out: number[] = [];
  for (let j = 0; j < INTEREST_SLOTS; j++) {
    // Phase and category draws use different keys (slot j vs INTEREST_SLOTS + j).
    const epoch = Number.isFinite(D) && D > 0 ? Math.floor((days + keyedUniform(r.seed, user, INTEREST_SLOTS + j, 0) * D) / D) : 0;
    out[j] = categoryByMass(cat, keyedUniform(r.seed, user, j, epoch >>> 0));
  }
  return out;
}

/**
 * The preferred categories (slot 0 first) of user `userIndex` at event time
 * `tMs`, as category indices (categoryId is `c<index>`). For tests and reports.
 */
export function userInterests(userIndex: number, tMs: number, options: GeneratorOptions = {}): number[] {
  const r = resolveOptions(options);
  return interestSlots(r, catalogue(r), userIndex, tMs);
}

// ---------- sessions ----------

interface Session {
  seq: number;
  user: number;
  userId: string;
  sessionId: string;
  remaining: number;
  nextMs: number;
  cat: number;
  slots: number[];
  /** Distinct recently viewed items (≤ VIEWED_CAP; a plain array: typed arrays cost ~0.3 KB each). */
  viewed: number[];
  nViewed: number;
  viewedNext: number;
}

const before = (a: Session, b: Session) => a.nextMs < b.nextMs || (a.nextMs === b.nextMs && a.seq < b.seq);

class SessionHeap {
  readonly h: Session[] = [];
  get size(): number { return this.h.length; }
  top(): Session | undefined { return this.h[0]; }
  push(s: Session): void {
    const h = this.h;
    h.push(s);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  /** Restores the heap after the top's key grew, or removes the top. */
  fixTop(remove: boolean): void {
    const h = this.h;
    if (remove) {
      const last = h.pop()!;
      if (h.length === 0) return;
      h[0] = last;
    }
    this.down(0);
  }
  private down(i: number): void {
    const h = this.h;
    const n = h.length;
    const x = h[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && before(h[c + 1]!, h[c]!)) c++;
      if (!before(h[c]!, x)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = x;
  }
}

/**
 * `count` events in event-time order. Same seed and options → the same
 * sequence. Memory: the catalogue (typed arrays, ~24 B per item) plus the
 * active sessions (≤ maxActiveSessions); nothing per user.
 */
export function* generateEvents(count: number, options: GeneratorOptions = {}): Generator<IEvent> {
  const r = resolveOptions(options);
  const { p, seed } = r;
  const cat = catalogue(r);
  const rnd = seededRandom(seed);
  const stats = options.stats ?? { sessionsStarted: 0, activeSessions: 0, peakActiveSessions: 0, delayedArrivals: 0 };
  const mix = p.behaviourMix;
  const mixTotal = mix.pv + mix.cart + mix.fav + mix.buy;
  const cPv = mix.pv / mixTotal, cCart = cPv + mix.cart / mixTotal, cFav = cCart + mix.fav / mixTotal;
  const slotCum: number[] = [];
  let sAcc = 0;
  for (const w of p.interests.slotWeights.slice(0, INTEREST_SLOTS)) slotCum.push((sAcc += w));
  const L = p.sessionLength;
  const meanLen = ceilLognormalMean(L.mu, L.sigma, L.max);
  const meanInterarrivalMs = (1000 * meanLen) / r.eventsPerSecond;
  const g = p.gap;
  const gapLo = (Math.log(g.minSeconds) - g.mu) / g.sigma, gapHi = (Math.log(g.maxSeconds) - g.mu) / g.sigma;

  const heap = new SessionHeap();
  const activeUsers = new Set<number>();
  let nextArrival = r.startMs;
  let now = r.startMs;
  let seq = 0;

  const sessionLength = () => Math.min(L.max, Math.max(1, Math.ceil(Math.exp(L.mu + L.sigma * gaussian(rnd)))));
  const gapMs = () => {
    if (rnd() < g.zeroShare) return Math.floor(rnd() * 1000);
    let z: number;
    do z = gaussian(rnd); while (z < gapLo || z > gapHi);
    return Math.round(1000 * Math.exp(g.mu + g.sigma * z));
  };
  const chooseCategory = (s: Session, current: number): number => {
    let c = current;
    for (let attempt = 0; attempt < 4 && c === current; attempt++) {
      const x = rnd();
      let j = 0;
      while (j < slotCum.length && x >= slotCum[j]!) j++;
      c = j < slotCum.length ? s.slots[j]! : categoryByMass(cat, rnd());
    }
    return c;
  };
  const pickViewed = (s: Session) => s.viewed[Math.floor(rnd() * s.nViewed)]!;
  const rememberView = (s: Session, item: number) => {
    for (let k = 0; k < s.nViewed; k++) if (s.viewed[k] === item) return;
    s.viewed[s.viewedNext] = item;
    s.viewedNext = (s.viewedNext + 1) % VIEWED_CAP;
    if (s.nViewed < VIEWED_CAP) s.nViewed++;
  };
  const startSession = (t: number): Session => {
    let user = zipfRank(rnd(), r.users, p.userZipfExponent);
    for (let k = 0; k < 8 && activeUsers.has(user); k++) user = zipfRank(rnd(), r.users, p.userZipfExponent);
    activeUsers.add(user);
    const s: Session = {
      seq, user, userId: `u${user}`, sessionId: `g${seed}s${seq}`, remaining: sessionLength(), nextMs: t, cat: -1,
      slots: interestSlots(r, cat, user, t),
      viewed: [], nViewed: 0, viewedNext: 0,
    };
    seq++;
    s.cat = chooseCategory(s, -1);
    stats.sessionsStarted++;
    return s;
  };

  for (let i = 0; i < count; i++) {
    const top = heap.top();
    let s: Session;
    if (top !== undefined && (heap.size >= r.maxActiveSessions || top.nextMs <= nextArrival)) {
      if (heap.size >= r.maxActiveSessions && top.nextMs > nextArrival) stats.delayedArrivals++;
      s = top;
    } else {
      s = startSession(Math.max(nextArrival, now));
      heap.push(s);
      nextArrival += -Math.log(1 - rnd()) * meanInterarrivalMs;
    }
    now = Math.max(now, s.nextMs);
    stats.activeSessions = heap.size;
    stats.peakActiveSessions = Math.max(stats.peakActiveSessions, heap.size);

    const x = rnd();
    const type = x < cPv ? EventType.VIEW : x < cCart ? EventType.ADD_TO_CART : x < cFav ? EventType.FAVORITE : EventType.PURCHASE;
    const reuse = type === EventType.VIEW ? p.revisitShare
      : type === EventType.ADD_TO_CART ? p.viewedShare.cart
      : type === EventType.FAVORITE ? p.viewedShare.fav : p.viewedShare.buy;
    let item: number;
    if (s.nViewed > 0 && rnd() < reuse) {
      item = pickViewed(s);
    } else {
      if (s.cat >= 0 && rnd() < p.categorySwitch) s.cat = chooseCategory(s, s.cat);
      item = itemInCategory(cat, s.cat, rnd());
    }
    const c = cat.itemCategory[item]!;
    s.cat = c;
    if (type === EventType.VIEW) rememberView(s, item);
    const b = cat.brand[item]!;
    const e: IEvent = {
      eventId: `g${seed}-${i}`,
      userId: s.userId,
      type,
      timestampMs: s.nextMs,
      itemId: `i${item}`,
      categoryId: `c${c}`,
      price: cat.price[item]!,
      quantity: type === EventType.PURCHASE || type === EventType.ADD_TO_CART ? 1 : 0,
      sessionId: s.sessionId,
    };
    if (b >= 0) e.brand = `b${b}`;
    if (type === EventType.PURCHASE) e.orderId = `g${seed}o${s.seq}`;

    if (--s.remaining === 0) {
      heap.fixTop(true);
      activeUsers.delete(s.user);
    } else {
      s.nextMs += gapMs();
      heap.fixTop(false);
    }
    yield e;
  }
  stats.activeSessions = heap.size;
}

/** The resolved options, the parameters in force and what follows from them, for reports. */
export function describeGenerator(options: GeneratorOptions = {}): {
  options: Omit<Resolved, "p">;
  params: GeneratorParams;
  derived: {
    meanSessionLength: number;
    meanGapSeconds: number;
    sessionsPerSecond: number;
    meanSessionSeconds: number;
    expectedActiveSessions: number;
    exploreShare: number;
    slotRedrawPerDay: number;
  };
} {
  const { p, ...rest } = resolveOptions(options);
  const L = p.sessionLength;
  const meanSessionLength = ceilLognormalMean(L.mu, L.sigma, L.max);
  const g = p.gap;
  const meanGapSeconds = g.zeroShare * 0.5 + (1 - g.zeroShare) * truncatedLognormalMean(g.mu, g.sigma, g.minSeconds, g.maxSeconds);
  const sessionsPerSecond = rest.eventsPerSecond / meanSessionLength;
  const meanSessionSeconds = (meanSessionLength - 1) * meanGapSeconds;
  return {
    options: rest,
    params: p,
    derived: {
      meanSessionLength,
      meanGapSeconds,
      sessionsPerSecond,
      meanSessionSeconds,
      expectedActiveSessions: sessionsPerSecond * meanSessionSeconds,
      exploreShare: 1 - p.interests.slotWeights.slice(0, INTEREST_SLOTS).reduce((x, y) => x + y, 0),
      slotRedrawPerDay: Number.isFinite(p.interests.driftDays) ? 1 / p.interests.driftDays : 0,
    },
  };
}
