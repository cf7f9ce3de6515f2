/**
 * The seeded event mixes of the beyond-clicks benches (bench/beyond-ingest.ts,
 * bench/beyond-shards.ts, bench/beyond-apply.ts), `--mix beyond|generator`:
 * - `beyond` (the default): 71.5% VIEW, 14% ADD_TO_CART, 10% PURCHASE, 2%
 *   REFUND (of the user's last bought item when there is one), 1% REVIEW with
 *   the text of a real Amazon review and its stars, 1% FOLLOW, 0.5% SHARE
 *   with a target;
 * - `generator`: the calibrated generator's stream (bench/generator.ts, the
 *   max-ingest mix fitted on Taobao: 89% views, 5.5% carts, 3% favourites,
 *   2.3% purchases; seed 7, the bench's users, event time from t0), where
 *   REVIEW_PER_PURCHASE of the purchases are followed by a review of the item
 *   (an Amazon text, a second later): the beyond mix's own 0.10 reviews per
 *   purchase line, so 0.23% reviews. No refunds, follows or shares: the
 *   generator has none, and no data set here has their rate in a shop's
 *   stream.
 */
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { generateEvents } from "./generator.js";

/** Reviews per purchase line in the `generator` mix (the beyond mix has 0.99% reviews and 9.9% purchase lines). */
export const REVIEW_PER_PURCHASE = 0.1;

/** The first 2,000 review texts of ../shared/data/amazon-reviews, with their stars. */
export async function reviewTexts(dir: string): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for await (const e of readDataset("amazon-reviews", resolveDataFile(dir, "amazon-reviews"))) {
    if (e.reviewText) out.push([e.reviewText, e.rating ?? 0]);
    if (out.length >= 2000) break;
  }
  return out;
}

export interface BeyondMix {
  events: number;
  users: number;
  /** FOLLOW and SHARE become VIEWs. */
  noSocial?: boolean;
  /** REVIEW becomes a VIEW (`generator`: no reviews). */
  noReviews?: boolean;
  /** Default `beyond`. */
  mix?: "beyond" | "generator";
}

/** The `generator` mix (see the header): EVENTS events, user ids u0..u(USERS-1), integer event times. */
function generatorEvents(prefix: string, texts: [string, number][], t0: number, m: BeyondMix): IEvent[] {
  const rand = seededRandom(7);
  const out: IEvent[] = [];
  for (const g of generateEvents(m.events, { users: m.users, seed: 7, startMs: t0 })) {
    if (out.length >= m.events) break;
    const userId = `u${Number(g.userId!.slice(1)) % m.users}`;
    const t = Math.floor(Number(g.timestampMs));
    out.push({ ...g, eventId: `${prefix}-${out.length}`, userId, timestampMs: t });
    if (g.type === EventType.PURCHASE && m.noReviews !== true && rand() < REVIEW_PER_PURCHASE && out.length < m.events) {
      const [text, stars] = texts[Math.floor(rand() * texts.length)]!;
      out.push({ eventId: `${prefix}-${out.length}`, userId, type: EventType.REVIEW, timestampMs: t + 1000, itemId: g.itemId, categoryId: g.categoryId, sessionId: g.sessionId, reviewText: text, rating: stars });
    }
  }
  return out;
}

/** The shop's events of one run (the same for every run but the ids' prefix) and the notices they cause with the switch on. */
export function makeBeyondEvents(prefix: string, texts: [string, number][], t0: number, m: BeyondMix): { events: IEvent[]; notices: number } {
  if (m.mix === "generator") return { events: generatorEvents(prefix, texts, t0, m), notices: 0 };
  const { events: EVENTS, users: USERS } = m;
  const rand = seededRandom(7);
  const out: IEvent[] = [];
  const bought = new Map<number, string>();
  let notices = 0;
  for (let i = 0; i < EVENTS; i++) {
    const u = Math.floor(rand() * USERS);
    const base = { eventId: `${prefix}-${i}`, userId: `u${u}`, timestampMs: t0 + Math.floor((i / EVENTS) * 86_400_000) };
    const item = `i${Math.floor(rand() * 5000)}`;
    const cat = `c${Math.floor(rand() * 30)}`;
    const r = rand();
    const other = () => {
      const v = (u + 1 + Math.floor(rand() * (USERS - 1))) % USERS;
      return `u${v}`;
    };
    if (r < 0.025 && ((r < 0.015 && m.noSocial === true) || (r >= 0.015 && m.noReviews === true))) {
      out.push({ ...base, type: EventType.VIEW, itemId: item, categoryId: cat, price: 1 + Math.floor(rand() * 200) });
      rand();
    } else if (r < 0.01) {
      out.push({ ...base, type: EventType.FOLLOW, targetUserId: other() });
      notices += 2;
    } else if (r < 0.015) {
      out.push({ ...base, type: EventType.SHARE, itemId: item, targetUserId: other() });
      notices += 1;
    } else if (r < 0.025) {
      const [text, stars] = texts[Math.floor(rand() * texts.length)]!;
      out.push({ ...base, type: EventType.REVIEW, itemId: item, categoryId: cat, reviewText: text, rating: stars });
    } else if (r < 0.045) {
      out.push({ ...base, type: EventType.REFUND, itemId: bought.get(u) ?? item, price: 20, quantity: 1, orderId: `r${i}` });
    } else if (r < 0.145) {
      out.push({ ...base, type: EventType.PURCHASE, itemId: item, categoryId: cat, price: 1 + Math.floor(rand() * 200), quantity: 1, orderId: `o${i}` });
      bought.set(u, item);
    } else {
      out.push({ ...base, type: r < 0.285 ? EventType.ADD_TO_CART : EventType.VIEW, itemId: item, categoryId: cat, price: 1 + Math.floor(rand() * 200) });
    }
  }
  return { events: out, notices };
}
