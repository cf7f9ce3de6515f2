/**
 * The audience sets and the synthetic events of the audience benchmarks
 * (bench/audiences.ts, bench/audience-eval.ts): one definition for both, so
 * that the micro-bench measures what the engine bench measures.
 */
import type { AudienceDefinition, Field, Op, Rule } from "../src/actors/audience-rules.js";
import { STARTER_NAMES, starterAudience } from "../src/actors/audience-starters.js";
import { EventType, type IEvent } from "../src/wire/proto.js";

/** 100 audiences a shop would run: the starters and typical shop rules (30 categories c0..c29 in the synthetic events). */
export function shopAudiences(): AudienceDefinition[] {
  const out: AudienceDefinition[] = [];
  for (const name of STARTER_NAMES) {
    if (name === "category-lovers") for (let c = 0; c < 30; c++) out.push(starterAudience(name, { category: `c${c}` })!);
    else out.push(starterAudience(name)!);
  }
  const f = (field: Field, op: Op, value: number): Rule => ({ field, op, value });
  out.push({ id: "active-7d", rule: f("events.7d", ">=", 1) });
  out.push({ id: "active-30d", rule: f("events.30d", ">=", 1) });
  out.push({ id: "engaged-7d", rule: f("events.7d", ">=", 20) });
  out.push({ id: "buyers-30d", rule: f("purchases.30d", ">=", 1) });
  out.push({ id: "buyers-90d", rule: f("purchases.90d", ">=", 1) });
  out.push({ id: "repeat-buyers-90d", rule: f("purchases.90d", ">=", 3) });
  out.push({ id: "big-spenders-90d", rule: f("revenue.90d", ">=", 500) });
  out.push({ id: "vip", rule: f("net", ">=", 2000) });
  for (const days of [30, 60, 90]) out.push({ id: `lapsed-${days}`, rule: { all: [f("orders", ">=", 1), f("daysSincePurchase", ">=", days)] } });
  out.push({ id: "dormant-14", rule: f("daysSinceSeen", ">=", 14) });
  out.push({ id: "window-shoppers", rule: { all: [f("events.30d", ">=", 20), f("orders", "==", 0)] } });
  out.push({ id: "cart-heavy-7d", rule: { all: [f("carts.7d", ">=", 5), f("purchases.7d", "==", 0)] } });
  for (let c = 0; c < 20; c++) out.push({ id: `interest-c${c}`, rule: { affinity: { dimension: "category", key: `c${c}`, minScore: 5 } } });
  for (let c = 0; c < 10; c++) out.push({ id: `browsing-c${c}`, rule: { session: { category: `c${c}`, topN: 1 } } });
  for (let c = 0; out.length < 100; c++) out.push({ id: `buyer-lovers-c${c}`, rule: { all: [{ inAudience: "buyers-30d" }, { inAudience: `category-lovers-c${c}` }] } });
  return out;
}

/** The stress case: 100 audiences over every kind of rule, most of them flipping often. */
export function churnyAudiences(): AudienceDefinition[] {
  const out: AudienceDefinition[] = [];
  const fields = ["events", "carts", "purchases", "revenue"] as const;
  const windows = [1, 7, 30, 90] as const;
  let i = 0;
  for (const f of fields) for (const w of windows) for (const v of [1, 3, 10]) out.push({ id: `w${i++}`, rule: { field: `${f}.${w}d`, op: ">=", value: v } });
  for (let c = 0; c < 20; c++) out.push({ id: `aff${c}`, rule: { affinity: { dimension: "category", key: `c${c}`, topN: 3 } } });
  for (let c = 0; c < 10; c++) out.push({ id: `sess${c}`, rule: { session: { category: `c${c}`, topN: 2 } } });
  out.push({ id: "abandon", rule: { cartAbandoned: { afterMinutes: 60 } } });
  out.push({ id: "lapsed", rule: { all: [{ field: "orders", op: ">=", value: 1 }, { field: "daysSincePurchase", op: ">=", value: 30 }] } });
  out.push({ id: "champ", rule: { all: [{ field: "rfm.r", op: ">=", value: 4 }, { field: "rfm.f", op: ">=", value: 4 }, { field: "rfm.m", op: ">=", value: 4 }] } });
  while (out.length < 100) {
    const k = out.length;
    out.push({ id: `mix${k}`, rule: { any: [{ all: [{ inAudience: `w${k % 48}` }, { not: { inAudience: `aff${k % 20}` } }] }, { field: "net", op: ">", value: k * 10 }] } });
  }
  return out;
}

/**
 * `n` events of `users` users (u0, u1, ...) over [t0, t0 + spanMs]: 75% views, 17% add-to-carts, 8% purchases, items of
 * 30 categories. `focus`: the share of a user's events in its own favourite category (user k's is c(k mod 30)), the
 * rest uniform; 0 (the default) = every event's category uniform over the 30, so most events move a category-lovers
 * or browsing-now membership (the worst case for those audiences); a shop's users keep to a few categories.
 */
export function makeEvents(prefix: string, n: number, users: number, t0: number, spanMs: number, focus = 0): IEvent[] {
  const out: IEvent[] = [];
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  // The focus draws have a generator of their own: the users, types, items and prices are those of focus 0.
  let seed2 = 11;
  const rnd2 = () => ((seed2 = (seed2 * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const type = r < 0.75 ? EventType.VIEW : r < 0.92 ? EventType.ADD_TO_CART : EventType.PURCHASE;
    const user = Math.floor(rnd() * users);
    const itemId = `i${Math.floor(rnd() * 5000)}`;
    const uniform = `c${Math.floor(rnd() * 30)}`;
    const categoryId = focus > 0 && rnd2() < focus ? `c${user % 30}` : uniform;
    out.push({
      eventId: `${prefix}-${i}`, userId: `u${user}`, type, timestampMs: t0 + Math.floor((i / n) * spanMs),
      itemId, categoryId, price: 1 + Math.floor(rnd() * 200), quantity: 1, orderId: type === EventType.PURCHASE ? `o${i}` : "",
    });
  }
  return out;
}

