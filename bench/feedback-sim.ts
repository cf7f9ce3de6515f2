/**
 * A seeded click simulator with known true preferences, for the feedback
 * loop (README "The feedback loop"): none of our data sets has impressions.
 *
 * The world (all drawn from the seed):
 * - items: `items` items in `categories` categories, each with a quality q ~ N(0, 1);
 * - users: each likes `liked` categories (taste 1) and not the others (taste 0);
 * - attraction of item i to user u (the probability of a click once the item
 *   is examined): sigmoid(BASE + TASTE x taste_u[c_i] + QUALITY x q_i);
 * - position bias: slot j (0-based) is examined with probability
 *   1 / (1 + j)^BIAS_POWER;
 * - a click on (u, i, j) happens with probability examine(j) x attraction(u, i),
 *   drawn with the seeded generator.
 * History (published before any recommendation, so that the engine has
 * profiles, sessions and item statistics): each user's `history` views, in
 * sessions, each view from a liked category with probability LIKED_SHARE, the
 * item within the category drawn by softmax of quality (good items are viewed more).
 *
 * The true click-through rate of a reply is its expected clicks per shown
 * item, sum_j examine(j) x attraction(u, item_j) / k: known exactly, so every
 * policy's truth is computed, not sampled.
 */
import type { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { seededRandom } from "../src/models/seeded-random.js";
import type { RecommendView } from "../src/recs/recommender.js";
import { EventType, type IEvent } from "../src/wire/proto.js";

const BASE = -4;
const TASTE = 3.6;
const QUALITY = 0.8;
const BIAS_POWER = 0.8;
const LIKED_SHARE = 0.8;

export interface SimOptions {
  seed: number;
  users: number;
  items: number;
  categories: number;
  liked: number;
  history: number;
}

export const SIM_DEFAULTS: SimOptions = { seed: 1, users: 400, items: 400, categories: 16, liked: 2, history: 12 };

export interface SimWorld {
  o: SimOptions;
  prefix: string;
  itemCategory: Int32Array;
  itemQuality: Float64Array;
  /** users x categories, 0 or 1. */
  taste: Uint8Array;
  itemIndex: Map<string, number>;
}

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

export function makeWorld(prefix: string, o: SimOptions = SIM_DEFAULTS): SimWorld {
  const r = seededRandom(o.seed);
  const itemCategory = new Int32Array(o.items);
  const itemQuality = new Float64Array(o.items);
  const itemIndex = new Map<string, number>();
  for (let i = 0; i < o.items; i++) {
    itemCategory[i] = i % o.categories;
    itemQuality[i] = gauss(r);
    itemIndex.set(itemId(i), i);
  }
  const taste = new Uint8Array(o.users * o.categories);
  for (let u = 0; u < o.users; u++) {
    const cats = new Set<number>();
    while (cats.size < Math.min(o.liked, o.categories)) cats.add(Math.floor(r() * o.categories));
    for (const c of cats) taste[u * o.categories + c] = 1;
  }
  return { o, prefix, itemCategory, itemQuality, taste, itemIndex };
}

export function itemId(i: number): string {
  return `si${i}`;
}

export function userId(w: SimWorld, u: number): string {
  return `${w.prefix}-su${u}`;
}

/** P(examine slot j). */
export function examine(slot: number): number {
  return 1 / (1 + slot) ** BIAS_POWER;
}

export function attraction(w: SimWorld, u: number, item: string): number {
  const i = w.itemIndex.get(item);
  if (i === undefined) return 0;
  const t = w.taste[u * w.o.categories + w.itemCategory[i]!]!;
  return 1 / (1 + Math.exp(-(BASE + TASTE * t + QUALITY * w.itemQuality[i]!)));
}

/** Expected clicks per shown item of a slate for user u. */
export function trueCtr(w: SimWorld, u: number, slate: readonly string[]): number {
  if (slate.length === 0) return 0;
  let s = 0;
  slate.forEach((it, j) => (s += examine(j) * attraction(w, u, it)));
  return s / slate.length;
}

/** The history views (see the file comment), times from `t0` on, one user's sessions after another's. */
export function historyEvents(w: SimWorld, t0: number): IEvent[] {
  const r = seededRandom(w.o.seed * 7919 + 1);
  const byCat: number[][] = Array.from({ length: w.o.categories }, () => []);
  for (let i = 0; i < w.o.items; i++) byCat[w.itemCategory[i]!]!.push(i);
  const pick = (c: number) => {
    const items = byCat[c]!;
    const ws = items.map((i) => Math.exp(1.2 * w.itemQuality[i]!));
    let x = r() * ws.reduce((a, b) => a + b, 0);
    for (let k = 0; k < items.length; k++) if ((x -= ws[k]!) <= 0) return items[k]!;
    return items.at(-1)!;
  };
  const out: IEvent[] = [];
  let n = 0;
  for (let u = 0; u < w.o.users; u++) {
    const liked: number[] = [];
    for (let c = 0; c < w.o.categories; c++) if (w.taste[u * w.o.categories + c]) liked.push(c);
    for (let k = 0; k < w.o.history; k++) {
      const c = r() < LIKED_SHARE ? liked[Math.floor(r() * liked.length)]! : Math.floor(r() * w.o.categories);
      const i = pick(c);
      // Sessions of 4 views, 20 s apart; 2 h between sessions.
      const t = t0 + u * 1000 + Math.floor(k / 4) * 7_200_000 + (k % 4) * 20_000;
      out.push({ eventId: `${w.prefix}-h${n++}`, userId: userId(w, u), type: EventType.VIEW, timestampMs: t, itemId: itemId(i), categoryId: `sc${c}` });
    }
  }
  return out;
}

/** A recommendation, asked again after OVERLOADED (retryable: a loaded machine sheds queries; the simulated user just asks later). */
async function recommend(client: PortraitClient, user: string, k: number): Promise<RecommendView> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.recommend(user, { k });
    } catch (err) {
      if (!(err instanceof PortraitError && err.retryable) || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

/** One served reply as the simulator saw it. */
export interface SimReply {
  user: number;
  reply: RecommendView;
  /** True CTR of what was shown. */
  ctr: number;
  clicks: number;
}

export interface PhaseResult {
  replies: SimReply[];
  /** Mean true CTR of every reply, of the greedy (not exploring) ones and of the exploring ones. */
  ctrAll: number;
  ctrGreedy: number;
  ctrExplored: number;
  explored: number;
  impressions: number;
  clicks: number;
  /** Logged feedback events published (impressions + clicks). */
  published: number;
  seconds: number;
}

/**
 * Serves `requests` recommendations to users drawn with `seed`, `concurrency`
 * at a time, and publishes what a shop's front end would: a rec_impression
 * of every shown item and a rec_click of each item clicked (drawn from the
 * known probabilities), both echoing rec_request_id and rec_propensity.
 */
export async function runPhase(client: PortraitClient, w: SimWorld, o: { requests: number; seed: number; k: number; concurrency?: number; timeMs: number; log?: boolean }): Promise<PhaseResult> {
  const r = seededRandom(o.seed);
  // Users and click draws are fixed by the seed, whatever order replies come back in.
  const users = Array.from({ length: o.requests }, () => Math.floor(r() * w.o.users));
  const draws = Array.from({ length: o.requests }, () => Array.from({ length: o.k }, () => r()));
  const replies: SimReply[] = new Array(o.requests);
  const events: IEvent[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= o.requests) return;
      const u = users[i]!;
      const reply = await recommend(client, userId(w, u), o.k);
      const slate = reply.items.map((x) => x.itemId);
      let clicks = 0;
      reply.items.forEach((it, j) => {
        const base = { userId: userId(w, u), itemId: it.itemId, recRequestId: reply.requestId, modelVersion: reply.modelVersion, recPropensity: it.propensity, timestampMs: o.timeMs + i };
        if (o.log !== false) events.push({ ...base, eventId: `${reply.requestId}-i${j}`, type: EventType.REC_IMPRESSION });
        if (draws[i]![j]! < examine(j) * attraction(w, u, it.itemId)) {
          clicks++;
          if (o.log !== false) events.push({ ...base, eventId: `${reply.requestId}-c${j}`, type: EventType.REC_CLICK });
        }
      });
      replies[i] = { user: u, reply, ctr: trueCtr(w, u, slate), clicks };
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 4 }, worker));
  // Impressions before clicks of the same reply: publishMany keeps the order per partition (one user's events share one).
  // A publish that timed out on a loaded machine is published again: the event ids deduplicate what was stored.
  for (let attempt = 1; events.length > 0; attempt++) {
    try {
      await client.publishMany(events);
      break;
    } catch (err) {
      if (!(err instanceof PortraitError && err.retryable) || attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const mean = (xs: SimReply[]) => (xs.length > 0 ? xs.reduce((a, x) => a + x.ctr, 0) / xs.length : NaN);
  const explored = replies.filter((x) => x.reply.explored);
  const greedy = replies.filter((x) => !x.reply.explored);
  const impressions = replies.reduce((a, x) => a + x.reply.items.length, 0);
  return {
    replies, ctrAll: mean(replies), ctrGreedy: mean(greedy), ctrExplored: mean(explored), explored: explored.length,
    impressions, clicks: replies.reduce((a, x) => a + x.clicks, 0), published: events.length, seconds,
  };
}

/**
 * The true CTR (expected clicks per logged impression) that `slate` would
 * have had on the logged replies: what an off-policy estimate of it estimates.
 */
export function truthOnLog(w: SimWorld, logged: ReadonlyArray<{ user: number; impressions: number; slate: readonly string[] }>): number {
  let clicks = 0;
  let n = 0;
  for (const q of logged) {
    q.slate.forEach((it, j) => {
      if (j < q.impressions) clicks += examine(j) * attraction(w, q.user, it);
    });
    n += q.impressions;
  }
  return n > 0 ? clicks / n : NaN;
}
