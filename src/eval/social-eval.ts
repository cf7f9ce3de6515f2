/**
 * Do friends' interests help rank a user's next category? None of the public
 * data sets in ../shared/data has a social graph (../shared/DATA.md), so the
 * graph is simulated over a real log, and the answer is only as good as the
 * simulation: it says how much the feature can help when friends share
 * interests to the planted degree, and that it cannot help when they do not.
 *
 * Protocol (seeded, event time, the profile's own functions):
 * - The log's events in time order through `applyEvent`. At the split time
 *   (the median event's time) every user of the log follows `follows` other
 *   users, and each followed user answers with their top categories at that
 *   moment, exactly as the engine does (src/actors/social.ts: follow,
 *   topCategoryShares, noteFriendInterests; the sample of 8).
 * - Two graphs: "random" (followed users drawn uniformly: no homophily), and
 *   "planted homophily" (each followed user is, with probability
 *   `homophily`, drawn from the users whose most frequent category over the
 *   whole log is the follower's own, else uniformly). The planted graph uses
 *   the whole log's categories on purpose: that is what homophily means, and
 *   why it is a simulation and not evidence about real friends.
 * - Every later event with a category is a ranking task before it is
 *   applied: rank categories by (own) the user's decayed category affinity
 *   as shares of its total, (friends) friends' interests, (own + friends) the
 *   sum of the two, each falling back to the categories' popularity before
 *   the split (ties and missing keys); HR@5 and MRR@5 of the event's
 *   category, for cold users (no category of their own yet) and warm ones.
 */
import { applyEvent, newUserState, type UserState } from "../actors/user-profile.js";
import { compileProfileOptions } from "../actors/profile-options.js";
import { follow, friendsInterests, newSocialState, noteFriendInterests, SOCIAL, topCategoryShares, type SocialState } from "../actors/social.js";
import type { DatasetFormat } from "../data/types.js";
import { seededRandom } from "../models/seeded-random.js";
import { loadProfileEvents, type Ev } from "./risk-eval.js";

export interface SocialEvalOptions {
  dataDir: string;
  seed?: number;
  /** Users each user follows. Default 8 (the friends' sample). */
  follows?: number;
  /** Share of follows drawn from users of the same main category in the planted graph. Default 0.5. */
  homophily?: number;
  /** Logs to run on. Default REES46 and the Taobao slice. */
  logs?: DatasetFormat[];
}

const K = 5;
type Ranker = "own" | "friends" | "own + friends" | "popularity";
const RANKERS: Ranker[] = ["popularity", "own", "friends", "own + friends"];

export interface SocialEvalRow {
  log: string;
  graph: "random" | "planted homophily";
  /** Users with a friends' interests sample at the split (a followed user had categories). */
  usersWithFriends: number;
  users: number;
  cohort: "cold" | "warm";
  tasks: number;
  /** HR@5 and MRR@5 per ranker. */
  hr: Record<Ranker, number>;
  mrr: Record<Ranker, number>;
}

function shares(cat: { keys: string[]; scores: number[] } | undefined): Map<string, number> {
  const m = new Map<string, number>();
  if (cat === undefined) return m;
  let total = 0;
  for (const x of cat.scores) total += x;
  if (total > 0) cat.keys.forEach((k, i) => m.set(k, cat.scores[i]! / total));
  return m;
}

/** The top K of `scores`, ties and the rest filled by popularity order. */
function rankTop(scores: Map<string, number>, popular: string[]): string[] {
  const pop = new Map(popular.map((c, i) => [c, i]));
  const ranked = [...scores].sort((a, b) => b[1] - a[1] || (pop.get(a[0]) ?? Infinity) - (pop.get(b[0]) ?? Infinity) || (a[0] < b[0] ? -1 : 1)).map(([c]) => c).slice(0, K);
  for (const c of popular) {
    if (ranked.length >= K) break;
    if (!ranked.includes(c)) ranked.push(c);
  }
  return ranked;
}

function graphOf(users: string[], main: Map<string, string>, follows: number, homophily: number, seed: number): Map<string, string[]> {
  const rand = seededRandom(seed);
  const byMain = new Map<string, string[]>();
  for (const u of users) {
    const c = main.get(u);
    if (c !== undefined) (byMain.get(c) ?? byMain.set(c, []).get(c)!).push(u);
  }
  const out = new Map<string, string[]>();
  for (const u of users) {
    const same = byMain.get(main.get(u) ?? "") ?? [];
    const chosen = new Set<string>();
    for (let tries = 0; chosen.size < follows && tries < follows * 20; tries++) {
      const pool = homophily > 0 && same.length > 1 && rand() < homophily ? same : users;
      const v = pool[Math.floor(rand() * pool.length)]!;
      if (v !== u) chosen.add(v);
    }
    out.set(u, [...chosen]);
  }
  return out;
}

function runLog(events: Ev[], log: string, graph: SocialEvalRow["graph"], o: SocialEvalOptions, seed: number): SocialEvalRow[] {
  const po = compileProfileOptions();
  const sorted = events.map((e, i) => [e, i] as const).sort((a, b) => a[0].timestampMs - b[0].timestampMs || a[1] - b[1]).map(([e]) => e);
  const split = sorted[Math.floor(sorted.length / 2)]!.timestampMs;
  const users = [...new Set(sorted.map((e) => e.userId))].sort();
  const catCount = new Map<string, Map<string, number>>();
  for (const e of sorted) {
    if (e.categoryId === "") continue;
    const m = catCount.get(e.userId) ?? catCount.set(e.userId, new Map()).get(e.userId)!;
    m.set(e.categoryId, (m.get(e.categoryId) ?? 0) + 1);
  }
  const main = new Map<string, string>();
  for (const [u, m] of catCount) main.set(u, [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]![0]);
  const g = graphOf(users, main, o.follows ?? SOCIAL.friendSample, graph === "random" ? 0 : (o.homophily ?? 0.5), seed);
  const states = new Map<string, UserState>();
  const social = new Map<string, SocialState>();
  const popCount = new Map<string, number>();
  let popular: string[] = [];
  let followed = false;
  const acc = { cold: newAcc(), warm: newAcc() };
  for (const e of sorted) {
    if (!followed && e.timestampMs >= split) {
      followed = true;
      popular = [...popCount].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 50).map(([c]) => c);
      for (const [u, vs] of g) {
        const so = newSocialState();
        for (const v of vs) {
          follow(so, v);
          const top = topCategoryShares(states.get(v)?.cat ?? { keys: [], scores: [] });
          noteFriendInterests(so, v, top.categories, top.shares);
        }
        if (so.fr.length > 0) social.set(u, so);
      }
    }
    let s = states.get(e.userId);
    if (followed && e.categoryId !== "") {
      const own = shares(s?.cat);
      const fi = new Map(friendsInterests(social.get(e.userId), 100).map((x) => [x.key, x.score]));
      const mix = new Map(own);
      for (const [c, v] of fi) mix.set(c, (mix.get(c) ?? 0) + v);
      const a = own.size === 0 ? acc.cold : acc.warm;
      a.n++;
      const lists: Record<Ranker, string[]> = { popularity: popular.slice(0, K), own: rankTop(own, popular), friends: rankTop(fi, popular), "own + friends": rankTop(mix, popular) };
      for (const r of RANKERS) {
        const at = lists[r].indexOf(e.categoryId);
        if (at >= 0) {
          a.hr[r]++;
          a.mrr[r] += 1 / (at + 1);
        }
      }
    }
    if (s === undefined) states.set(e.userId, (s = newUserState()));
    applyEvent(s, e, po);
    if (!followed && e.categoryId !== "") popCount.set(e.categoryId, (popCount.get(e.categoryId) ?? 0) + 1);
  }
  return (["cold", "warm"] as const).map((cohort) => {
    const a = acc[cohort];
    const per = (x: Record<Ranker, number>) => Object.fromEntries(RANKERS.map((r) => [r, a.n > 0 ? x[r] / a.n : 0])) as Record<Ranker, number>;
    return { log, graph, usersWithFriends: social.size, users: users.length, cohort, tasks: a.n, hr: per(a.hr), mrr: per(a.mrr) };
  });
}

function newAcc() {
  const z = () => Object.fromEntries(RANKERS.map((r) => [r, 0])) as Record<Ranker, number>;
  return { n: 0, hr: z(), mrr: z() };
}

export async function evalSocial(o: SocialEvalOptions): Promise<SocialEvalRow[]> {
  const seed = o.seed ?? 42;
  const out: SocialEvalRow[] = [];
  for (const log of o.logs ?? (["rees46", "taobao"] as DatasetFormat[])) {
    const events = await loadProfileEvents(o.dataDir, log);
    out.push(...runLog(events, log, "random", o, seed), ...runLog(events, log, "planted homophily", o, seed));
  }
  return out;
}

export { RANKERS as SOCIAL_RANKERS };
