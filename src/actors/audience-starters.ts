/**
 * Starter audiences a shop can switch on (`portrait audience create --starter
 * NAME`). Plain definitions in the rule language (audience-rules.ts); RFM
 * scores use the profile's bins (user-profile.ts RFM_BINS: recency <= 7 / 30 /
 * 90 / 180 days, orders 2 / 3 / 5 / 10, net 50 / 200 / 500 / 2000).
 */
import type { AudienceDefinition } from "./audience-rules.js";

const STARTERS: Record<string, (o: { category?: string }) => AudienceDefinition> = {
  "rfm-champions": () => ({
    id: "rfm-champions", name: "Champions", description: "Bought recently, often and much: R, F and M scores all at least 4.",
    rule: { all: [{ field: "rfm.r", op: ">=", value: 4 }, { field: "rfm.f", op: ">=", value: 4 }, { field: "rfm.m", op: ">=", value: 4 }] },
  }),
  "rfm-loyal": () => ({
    id: "rfm-loyal", name: "Loyal customers", description: "Buy regularly (F at least 3) and not long ago (R at least 3).",
    rule: { all: [{ field: "rfm.f", op: ">=", value: 3 }, { field: "rfm.r", op: ">=", value: 3 }] },
  }),
  "rfm-at-risk": () => ({
    id: "rfm-at-risk", name: "At risk", description: "Used to buy often (F at least 3) but not for over 90 days (R at most 2).",
    rule: { all: [{ field: "rfm.f", op: ">=", value: 3 }, { field: "rfm.r", op: "<=", value: 2 }] },
  }),
  "rfm-hibernating": () => ({
    id: "rfm-hibernating", name: "Hibernating", description: "Bought once or twice (F at most 2), over 90 days ago (R at most 2).",
    rule: { all: [{ field: "orders", op: ">=", value: 1 }, { field: "rfm.f", op: "<=", value: 2 }, { field: "rfm.r", op: "<=", value: 2 }] },
  }),
  "rfm-new": () => ({
    id: "rfm-new", name: "New customers", description: "First and only order within the last 30 days.",
    rule: { all: [{ field: "orders", op: "==", value: 1 }, { field: "daysSincePurchase", op: "<=", value: 30 }] },
  }),
  "high-churn-risk": () => ({
    id: "high-churn-risk", name: "High churn risk", description: "The churn risk the profile serves is at least 0.7 (no value, so no member, when the churn model is off or not judged fit for this shop's data).",
    rule: { field: "prediction.churnRisk", op: ">=", value: 0.7 },
  }),
  "cart-abandoners": () => ({
    id: "cart-abandoners", name: "Cart abandoners", description: "Added to cart, and no purchase within 1 hour after it.",
    rule: { cartAbandoned: { afterMinutes: 60 } },
  }),
  "category-lovers": (o) => {
    if (o.category === undefined || o.category === "") throw new Error("the category-lovers starter needs a category id (--category)");
    const id = `category-lovers-${o.category.toLowerCase().replace(/[^a-z0-9_-]/g, "-")}`.slice(0, 64);
    return {
      id, name: `Lovers of category ${o.category}`, description: "The category is the user's top decayed category and had events in the last 30 days.",
      rule: { all: [{ affinity: { dimension: "category", key: o.category, topN: 1 } }, { field: "events.30d", op: ">=", value: 1 }] },
    };
  },
};

export const STARTER_NAMES = Object.freeze(Object.keys(STARTERS));

/** A starter's definition; undefined for an unknown name. */
export function starterAudience(name: string, o: { category?: string } = {}): AudienceDefinition | undefined {
  return STARTERS[name]?.(o);
}
