/**
 * Candidate generation: the items the ranker (DeepFM) scores for one
 * recommendation request, each with the sources that found it and a
 * human-readable reason. Pure: reads the index, changes nothing; the same
 * index and inputs give the same candidates in the same order.
 *
 * Sources, for a known user (in this order, which is also the precedence on
 * ties and in backfill):
 * - "sknn": session-kNN over recent sessions (src/recs/session-knn.ts) for
 *   the user's current session. Reason "viewed in sessions like yours".
 * - "rules": sequential rules (src/recs/sequential-rules.ts) from the newest
 *   item of the current session. Reason "often viewed after <item>".
 * - "covisit": co-visitation neighbours of the newest `covisitSeeds` recent
 *   items; seed j (0 = newest) weighs 1 / (j + 1), each seed's neighbour
 *   scores are divided by its best one, contributions add up.
 *   Reason "viewed together with <the seed that contributed most>".
 * - "next-category": trending items of the LSTM's predicted next categories
 *   (first `nextCategories`), category probability x item score / the
 *   category's best item score. Reason "top in predicted next category <cat>".
 * - "category": the same over the page category (request `category`, weight
 *   1) and the user's first `topCategories` affinity categories (weights
 *   divided by the best). Reason "top in category <cat>".
 * - "recent": the user's recent items themselves, 1 / (j + 1) (repeat views
 *   are frequent in real logs). Reason "viewed recently".
 * - "repeat": replenishment, only when `excludePurchased` is off: each item
 *   of the user's j-th newest kept session (j = 0 the current one; `history`)
 *   adds 1 / (j + 1), each item of `purchasedItems` at position j (newest
 *   first) adds 1 / (j + 1): items bought or seen in many recent sessions
 *   first. Reason "bought before" for bought items, else "from your earlier
 *   sessions".
 * - "trending": the global trending list. Reason "trending".
 * For an unknown user (`known` false) the history is ignored: the page
 * category when given ("category"), then "popular": the global trending list
 * with reason "popular".
 *
 * Every source's scores are normalised to (0, 1] by its best item (for the
 * trending and category lists: the list's best item, eligible or not).
 * Merging: pass 1 lets each source add up to round(quota x count) new items,
 * in source order (an item another source already added does not use the
 * quota; unknown users: category by its quota, popular without limit); pass 2
 * fills what is left one new item per source in turn. Then every source's
 * list is matched against the result: a candidate lists every source that
 * found it, keeps the reason of the source that scored it highest (ties: the
 * earlier source), and its prior is the sum of its normalised source scores.
 * The result is sorted by prior, best first (ties by item id).
 *
 * Never returned: items in `exclude`, items in `purchasedItems` when
 * `excludePurchased`, the recent and current-session items when not `allowRecent`, and items the catalog does not hold or marks unavailable.
 */
import type { CompiledCandidateOptions } from "./recs-options.js";
import type { RecsIndex } from "./recs-index.js";
import type { ScoredItem, ScoredKey } from "./types.js";
import type { Session } from "./session-store.js";
import { sessionKnnScores } from "./session-knn.js";

import { CANDIDATE_SOURCES, type CandidateSource } from "./sources.js";

export { CANDIDATE_SOURCES, type CandidateSource };

/** What a request knows about the user, taken from the profile and the request. */
export interface CandidateContext {
  userId: string;
  /** False when the engine has no profile for the user: popular items are returned. */
  known: boolean;
  /** Recent distinct items, newest first (the profile's recentItems). */
  recentItems: readonly string[];
  /** Category affinities, best first (the profile's categories). */
  topCategories: readonly ScoredKey[];
  /** The LSTM's next-category predictions, best first, score = probability; may be empty. */
  nextCategories: readonly ScoredKey[];
  /** Items the user bought recently; left out when options.excludePurchased. */
  purchasedItems: readonly string[];
  /** Items the request says must not be returned. */
  exclude: readonly string[];
  /** The category of the page the request comes from, if any. */
  category?: string;
  /** The request's time on the event clock, Unix ms (decayed scores are read at it). */
  nowMs: number;
  /** The user's current session in the index (its items in order, repeats kept); absent = none within the session gap. */
  session?: Session;
  /** The user's kept sessions, newest first (the repeat source); absent = none. */
  history?: readonly Session[];
}

export interface Candidate {
  itemId: string;
  /** Every source that found the item, in source order. */
  sources: CandidateSource[];
  /** Why, for people: the reason of the source that scored the item highest. */
  reason: string;
  /** Sum of the item's normalised source scores (each in (0, 1]); for tie-breaking and as a fallback ranking. */
  prior: number;
  /** Each finding source's normalised score (in (0, 1]): the ranking policy's features. */
  scores: Partial<Record<CandidateSource, number>>;
}

interface Hit {
  itemId: string;
  score: number;
  reason: string;
}

interface SourceList {
  source: CandidateSource;
  /** Most new items in pass 1. */
  quota: number;
  hits: Hit[];
  pos: number;
}

function byScore(a: Hit, b: Hit): number {
  return b.score - a.score || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0);
}

/** The hits divided by the best score (zeros dropped), best first. */
function finish(acc: Map<string, Hit>): Hit[] {
  const hits = [...acc.values()];
  let best = 0;
  for (const h of hits) if (h.score > best) best = h.score;
  if (best <= 0) return [];
  for (const h of hits) h.score /= best;
  return hits.filter((h) => h.score > 0).sort(byScore);
}

function keepMax(acc: Map<string, Hit>, itemId: string, score: number, reason: string): void {
  const h = acc.get(itemId);
  if (h === undefined) acc.set(itemId, { itemId, score, reason });
  else if (score > h.score) {
    h.score = score;
    h.reason = reason;
  }
}

/** Category weights: divided by the best positive score (1 when none is positive), first occurrence of a key kept. */
function weighted(cats: readonly ScoredKey[]): ScoredKey[] {
  let best = 0;
  for (const c of cats) if (c.score > best) best = c.score;
  return cats.map((c) => ({ key: c.key, score: best > 0 ? Math.max(0, c.score) / best : 1 }));
}

/**
 * The first `need` eligible items of a top list, and the list's best score
 * (eligible or not). Reads `need` + `skip` entries, and twice as many again
 * while filtering left too few and the list has more.
 */
function topEligible(
  get: (k: number) => ScoredItem[], need: number, skip: number, eligible: (id: string) => boolean,
): { items: ScoredItem[]; top: number } {
  for (let k = need + skip; ; k *= 2) {
    const all = get(k);
    const items: ScoredItem[] = [];
    for (const it of all) {
      if (!eligible(it.itemId)) continue;
      items.push(it);
      if (items.length >= need) break;
    }
    if (items.length >= need || all.length < k) return { items, top: all[0]?.score ?? 0 };
  }
}

function categoryHits(
  index: RecsIndex, cats: readonly ScoredKey[], need: number, skip: number, nowMs: number,
  eligible: (id: string) => boolean, reason: (cat: string) => string,
): Hit[] {
  const acc = new Map<string, Hit>();
  const seen = new Set<string>();
  for (const c of cats) {
    if (c.key === "" || seen.has(c.key) || c.score <= 0) continue;
    seen.add(c.key);
    const { items, top } = topEligible((k) => index.trending.topInCategory(c.key, k, nowMs), need, skip, eligible);
    if (top <= 0) continue;
    const why = reason(c.key);
    for (const it of items) keepMax(acc, it.itemId, (c.score * it.score) / top, why);
  }
  return finish(acc);
}

function covisitHits(index: RecsIndex, seeds: readonly string[], nowMs: number, eligible: (id: string) => boolean): Hit[] {
  const acc = new Map<string, Hit & { best: number }>();
  for (let j = 0; j < seeds.length; j++) {
    const seed = seeds[j]!;
    const nbrs = index.covisitation.neighbours(seed, Infinity, nowMs);
    const top = nbrs[0]?.score ?? 0;
    if (top <= 0) continue;
    const w = 1 / (j + 1);
    for (const n of nbrs) {
      if (!eligible(n.itemId)) continue;
      const s = (w * n.score) / top;
      const h = acc.get(n.itemId);
      if (h === undefined) acc.set(n.itemId, { itemId: n.itemId, score: s, reason: `viewed together with ${seed}`, best: s });
      else {
        h.score += s;
        if (s > h.best) {
          h.best = s;
          h.reason = `viewed together with ${seed}`;
        }
      }
    }
  }
  return finish(acc);
}

function trendingHits(
  index: RecsIndex, need: number, skip: number, nowMs: number, eligible: (id: string) => boolean, reason: string,
): Hit[] {
  const { items, top } = topEligible((k) => index.trending.topGlobal(k, nowMs), need, skip, eligible);
  if (top <= 0) return [];
  return items.map((it) => ({ itemId: it.itemId, score: it.score / top, reason }));
}

function recentHits(recent: readonly string[], eligible: (id: string) => boolean, reason = "viewed recently"): Hit[] {
  const acc = new Map<string, Hit>();
  recent.forEach((id, j) => {
    if (eligible(id)) keepMax(acc, id, 1 / (j + 1), reason);
  });
  return finish(acc);
}

function sknnHits(index: RecsIndex, session: Session | undefined, o: CompiledCandidateOptions, eligible: (id: string) => boolean): Hit[] {
  if (session === undefined) return [];
  const acc = new Map<string, Hit>();
  for (const [id, score] of sessionKnnScores(index.sessions, session, index.sessionKnnOptions)) {
    if (eligible(id)) acc.set(id, { itemId: id, score, reason: "viewed in sessions like yours" });
  }
  return finish(acc).slice(0, o.count);
}

function rulesHits(index: RecsIndex, session: Session | undefined, o: CompiledCandidateOptions, eligible: (id: string) => boolean): Hit[] {
  const last = session?.items.at(-1);
  if (last === undefined) return [];
  const acc = new Map<string, Hit>();
  for (const it of index.rules.successors(last, Infinity)) {
    if (eligible(it.itemId)) acc.set(it.itemId, { itemId: it.itemId, score: it.score, reason: `often viewed after ${last}` });
  }
  return finish(acc).slice(0, o.count);
}

function repeatHits(ctx: CandidateContext, eligible: (id: string) => boolean): Hit[] {
  const acc = new Map<string, Hit>();
  const bought = new Set(ctx.purchasedItems);
  const add = (id: string, w: number) => {
    if (!eligible(id)) return;
    const h = acc.get(id);
    if (h === undefined) acc.set(id, { itemId: id, score: w, reason: bought.has(id) ? "bought before" : "from your earlier sessions" });
    else h.score += w;
  };
  (ctx.history ?? []).forEach((s, j) => {
    for (const id of s.distinct) add(id, 1 / (j + 1));
  });
  ctx.purchasedItems.forEach((id, j) => add(id, 1 / (j + 1)));
  return finish(acc);
}

/** The candidates for one request (see the module comment). At most options.count. */
export function generateCandidates(ctx: CandidateContext, index: RecsIndex, options: CompiledCandidateOptions): Candidate[] {
  const count = options.count;
  const blocked = new Set<string>(ctx.exclude);
  if (options.excludePurchased) for (const id of ctx.purchasedItems) blocked.add(id);
  if (!options.allowRecent) {
    for (const id of ctx.recentItems) blocked.add(id);
    for (const id of ctx.session?.items ?? []) blocked.add(id);
  }
  const eligible = (id: string) => !blocked.has(id) && index.catalog.isAvailable(id);
  const skip = blocked.size;
  const now = ctx.nowMs;
  const q = options.quotas;
  const slots = (share: number) => Math.round(share * count);
  const page: ScoredKey[] = ctx.category ? [{ key: ctx.category, score: 1 }] : [];
  const lists: SourceList[] = [];
  const add = (source: CandidateSource, quota: number, hits: Hit[]) => {
    if (hits.length > 0) lists.push({ source, quota, hits, pos: 0 });
  };

  if (ctx.known) {
    add("sknn", slots(q.sknn), sknnHits(index, ctx.session, options, eligible));
    add("rules", slots(q.rules), rulesHits(index, ctx.session, options, eligible));
    add("covisit", slots(q.covisit), covisitHits(index, ctx.recentItems.slice(0, options.covisitSeeds), now, eligible));
    add("next-category", slots(q.nextCategory), categoryHits(
      index, weighted(ctx.nextCategories.slice(0, options.nextCategories)), count, skip, now, eligible,
      (c) => `top in predicted next category ${c}`,
    ));
    add("category", slots(q.category), categoryHits(
      index, [...page, ...weighted(ctx.topCategories.slice(0, options.topCategories))], count, skip, now, eligible,
      (c) => `top in category ${c}`,
    ));
    add("recent", slots(q.recent), recentHits(ctx.recentItems, eligible));
    if (!options.excludePurchased) add("repeat", slots(q.repeat), repeatHits(ctx, eligible));
    add("trending", slots(q.trending), trendingHits(index, count, skip, now, eligible, "trending"));
  } else {
    add("category", slots(q.category), categoryHits(index, page, count, skip, now, eligible, (c) => `top in category ${c}`));
    add("popular", count, trendingHits(index, count, skip, now, eligible, "popular"));
  }

  const chosen = new Map<string, Candidate & { best: number }>();
  const choose = (itemId: string) => chosen.set(itemId, { itemId, sources: [], reason: "", prior: 0, scores: {}, best: -1 });
  for (const l of lists) {
    let taken = 0;
    while (taken < l.quota && l.pos < l.hits.length && chosen.size < count) {
      const id = l.hits[l.pos++]!.itemId;
      if (chosen.has(id)) continue;
      choose(id);
      taken++;
    }
  }
  for (let progress = true; progress && chosen.size < count;) {
    progress = false;
    for (const l of lists) {
      while (l.pos < l.hits.length) {
        const id = l.hits[l.pos++]!.itemId;
        if (chosen.has(id)) continue;
        choose(id);
        progress = true;
        break;
      }
      if (chosen.size >= count) break;
    }
  }

  for (const l of lists) {
    for (const h of l.hits) {
      const c = chosen.get(h.itemId);
      if (c === undefined) continue;
      c.sources.push(l.source);
      c.prior += h.score;
      c.scores[l.source] = h.score;
      if (h.score > c.best) {
        c.best = h.score;
        c.reason = h.reason;
      }
    }
  }
  const out: Candidate[] = [];
  for (const c of chosen.values()) out.push({ itemId: c.itemId, sources: c.sources, reason: c.reason, prior: c.prior, scores: c.scores });
  return out.sort((a, b) => b.prior - a.prior || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0));
}

/** How many candidates each source found (an item found by two sources counts for both): the reply's source summary. */
export function countSources(candidates: readonly Candidate[]): Partial<Record<CandidateSource, number>> {
  const counts: Partial<Record<CandidateSource, number>> = {};
  for (const c of candidates) for (const s of c.sources) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}
