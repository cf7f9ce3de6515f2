/**
 * Session-kNN over recent sessions: V-SKNN (session-rec's VMContextKNN,
 * Ludewig & Jannach 2018) on the live SessionStore.
 *
 * For the current session s = (x_1 .. x_n) (event order, repeats kept):
 * - Position weights: w(x) = p / n, where p is the 1-based position of x's
 *   last occurrence in s (session-rec weighting "div": the newest item
 *   weighs 1).
 * - Candidate neighbours: the sessions the store indexes under any item of s,
 *   other than s itself; the `sampleSize` whose last event is newest (ties:
 *   the newer session id).
 * - Similarity of a neighbour u: sim(s, u) = sum of w(x) over the distinct
 *   items x of s that u holds, divided by the number of distinct items of s.
 *   The `k` most similar neighbours are kept (ties: newer last event, then
 *   newer id).
 * - Item scores: each item i of a kept neighbour u (items of s included, so
 *   repeats can be recommended) gets sim(s, u) / d, where d is the distance
 *   from the end of s (1 = the newest) of the newest item of s that u holds
 *   (session-rec weighting_score "div").
 *
 * Cost per request: the index lists of s's distinct items (each at most
 * about 2 x maxSessionsPerItem), a sort of the candidates, and the items of k
 * sessions.
 */
import type { CompiledSessionKnnOptions } from "./recs-options.js";
import type { Session, SessionStore } from "./session-store.js";

/** Item -> V-SKNN score for the session (empty when it has no neighbours). Items are not filtered. */
export function sessionKnnScores(store: SessionStore, current: Session, o: CompiledSessionKnnOptions): Map<string, number> {
  const scores = new Map<string, number>();
  const items = current.items;
  const n = items.length;
  if (n === 0) return scores;
  const weight = new Map<string, number>();
  const lastPos = new Map<string, number>();
  for (let p = 0; p < n; p++) {
    weight.set(items[p]!, (p + 1) / n);
    lastPos.set(items[p]!, p);
  }
  const candidates = new Set<Session>();
  for (const x of weight.keys()) {
    for (const u of store.sessionsOf(x)) if (!u.dead && u !== current) candidates.add(u);
  }
  if (candidates.size === 0) return scores;
  let sample = [...candidates];
  const newer = (a: Session, b: Session) => b.lastMs - a.lastMs || b.id - a.id;
  if (sample.length > o.sampleSize) sample = sample.sort(newer).slice(0, o.sampleSize);
  const distinct = weight.size;
  const neighbours: Array<{ u: Session; sim: number }> = [];
  for (const u of sample) {
    let dot = 0;
    for (const [x, w] of weight) if (u.distinct.has(x)) dot += w;
    if (dot > 0) neighbours.push({ u, sim: dot / distinct });
  }
  neighbours.sort((a, b) => b.sim - a.sim || newer(a.u, b.u));
  if (neighbours.length > o.k) neighbours.length = o.k;
  for (const { u, sim } of neighbours) {
    let newest = -1;
    for (const x of u.distinct) {
      const p = lastPos.get(x);
      if (p !== undefined && p > newest) newest = p;
    }
    const s = sim / (n - newest);
    for (const i of u.distinct) scores.set(i, (scores.get(i) ?? 0) + s);
  }
  return scores;
}
