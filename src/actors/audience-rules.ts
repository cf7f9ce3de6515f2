/**
 * The audience rule language: typed JSON, validated with zod, compiled into a
 * set that the actors evaluate (audience-state.ts). README "Audiences" shows
 * the same language to users.
 *
 * A definition:
 *   { "id": "lapsed-30", "name": "Lapsed 30 days", "holdoutShare": 0.1,
 *     "rule": { "all": [ { "field": "orders", "op": ">=", "value": 1 },
 *                        { "field": "daysSincePurchase", "op": ">=", "value": 30 } ] } }
 *
 * Rules (each an object with exactly one of these shapes):
 * - `{ "all": [rule, ...] }`, `{ "any": [rule, ...] }`, `{ "not": rule }`;
 * - `{ "field": F, "op": ">"|">="|"<"|"<="|"=="|"!=", "value": number }` where F is
 *   one of FIELDS below (windowed activity, RFM, recency, totals, predictions).
 *   A field without a value (daysSincePurchase of a user who never bought, a
 *   prediction of a model that is off) makes every comparison false;
 * - `{ "affinity": { "dimension": "category"|"brand"|"priceBand", "key": K, "topN"?: n, "minScore"?: s } }`:
 *   K is among the user's top n keys of that dimension, and/or its decayed score is at least s;
 * - `{ "session": { "category": K, "topN"?: n } }`: short-term interest: K is among the
 *   n most frequent categories of the user's current session (a session ends after the
 *   profile's sessionGapMs without events);
 * - `{ "cartAbandoned": { "afterMinutes": m } }`: the user's last add-to-cart is at least m
 *   minutes old and no purchase came after it;
 * - `{ "inAudience": id }`: the user is a member of another audience (no cycles);
 * - `{ "percentile": { "field": P, "top": t } }` where P is a prediction field: a
 *   percentile cohort, the user's prediction is in the top t% (0 < t < 100) of the
 *   predictions of the shard's users as they stand (a sketch kept current with
 *   every evaluation: audience-state.ts CohortSketches);
 * - `{ "reviewSentiment": { "dimension": "category"|"brand", "key": K, "op": op, "value": x, "minWeight"?: w } }`:
 *   the user's decayed mean review sentiment about K compares to x (false when the user has not
 *   reviewed K, or the decayed weight of those reviews is below w);
 * - `{ "reviewAspect": { "key": K, "topN": n } }`: K is among the n aspects the user's reviews
 *   talk about most.
 *
 * Time is part of the rules: windows end at the evaluation time, "days since"
 * grows; the engine fires the transitions that time alone causes (audience-state.ts).
 *
 * Bad definitions get BAD_AUDIENCE naming the audience and the field (a JSON
 * path into the definition): unknown field or key, wrong type, an unknown or
 * cyclic audience reference, more than MAX_RULE_NODES rule nodes.
 */
import { z } from "zod";
import { ErrorCode, PortraitError } from "../errors.js";
import { EventType } from "../wire/proto.js";

/** Most rule nodes (leaves and all/any/not) in one definition. */
export const MAX_RULE_NODES = 64;
/** Most audiences active at once in one deployment. */
export const MAX_AUDIENCES = 500;
/** Windows of the windowed activity fields, days. */
export const WINDOWS = [1, 7, 30, 90] as const;

/**
 * The comparable fields. Windowed ones count over the last N days of UTC day
 * buckets ending with the evaluation day (1d = today so far).
 */
export const FIELDS = [
  "events.1d", "events.7d", "events.30d", "events.90d",
  "carts.1d", "carts.7d", "carts.30d", "carts.90d",
  "purchases.1d", "purchases.7d", "purchases.30d", "purchases.90d",
  /** Money: sum of price x quantity of PURCHASE events in the window, in currency units. */
  "revenue.1d", "revenue.7d", "revenue.30d", "revenue.90d",
  /** RFM scores 1..5 (profile's bins); 0 for a user who never bought. */
  "rfm.r", "rfm.f", "rfm.m",
  /** Whole-history totals: orders, net money (purchased - refunded), events applied. */
  "orders", "net", "eventsTotal",
  /** Days (fractional) since the last purchase / the last event; no value when there is none. */
  "daysSincePurchase", "daysSinceSeen",
  /** Model predictions (no value when that model is off or has no answer for the user). */
  "prediction.churnRisk", "prediction.purchasePropensity",
  /** Reviews: decayed mean sentiment in [-1, 1] of the user's reviews, and how many have one (README "Reviews"); sentiment has no value without reviews. */
  "review.sentiment", "review.count",
  /** Risk scores in [0, 1], 1 = flagged (README "Risk signals"). */
  "risk.velocity", "risk.refundAbuse", "risk.accountSharing",
  /** Social ties: out-degree and in-degree (README "Social ties"); 0 for a user without any. */
  "social.following", "social.followers",
] as const;
export type Field = (typeof FIELDS)[number];
export const PREDICTION_FIELDS = ["prediction.churnRisk", "prediction.purchasePropensity"] as const;
export type PredictionField = (typeof PREDICTION_FIELDS)[number];
export const OPS = [">", ">=", "<", "<=", "==", "!="] as const;
export type Op = (typeof OPS)[number];

const ID_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const key = z.string().min(1).max(256);

export type Rule =
  | { all: Rule[] }
  | { any: Rule[] }
  | { not: Rule }
  | { field: Field; op: Op; value: number }
  | { affinity: { dimension: "category" | "brand" | "priceBand"; key: string; topN?: number | undefined; minScore?: number | undefined } }
  | { session: { category: string; topN?: number | undefined } }
  | { cartAbandoned: { afterMinutes: number } }
  | { inAudience: string }
  | { reviewSentiment: { dimension: "category" | "brand"; key: string; op: Op; value: number; minWeight?: number | undefined } }
  | { reviewAspect: { key: string; topN: number } }
  | { percentile: { field: PredictionField; top: number } };

// Built once: a bare z.lazy(() => z.union(...)) builds the whole union again at every rule node of every parse.
let ruleUnion: z.ZodType<Rule> | undefined;
const ruleSchema: z.ZodType<Rule> = z.lazy(() => (ruleUnion ??= z.union([
  z.object({ all: z.array(ruleSchema).min(1) }).strict(),
  z.object({ any: z.array(ruleSchema).min(1) }).strict(),
  z.object({ not: ruleSchema }).strict(),
  z.object({ field: z.enum(FIELDS), op: z.enum(OPS), value: z.number().finite() }).strict(),
  z.object({
    affinity: z.object({
      dimension: z.enum(["category", "brand", "priceBand"]), key,
      topN: z.number().int().min(1).max(16).optional(), minScore: z.number().positive().finite().optional(),
    }).strict().refine((a) => a.topN !== undefined || a.minScore !== undefined, { message: "affinity needs topN or minScore" }),
  }).strict(),
  z.object({ session: z.object({ category: key, topN: z.number().int().min(1).max(8).optional() }).strict() }).strict(),
  z.object({ cartAbandoned: z.object({ afterMinutes: z.number().positive().max(90 * 24 * 60) }).strict() }).strict(),
  z.object({ inAudience: z.string().regex(ID_RE) }).strict(),
  z.object({
    reviewSentiment: z.object({
      dimension: z.enum(["category", "brand"]), key, op: z.enum(OPS), value: z.number().min(-1).max(1),
      minWeight: z.number().positive().finite().optional(),
    }).strict(),
  }).strict(),
  z.object({ reviewAspect: z.object({ key, topN: z.number().int().min(1).max(8) }).strict() }).strict(),
  z.object({ percentile: z.object({ field: z.enum(PREDICTION_FIELDS), top: z.number().gt(0).lt(100) }).strict() }).strict(),
])));

export const definitionSchema = z.object({
  /** Stable id: lower-case letters, digits, '-' and '_', at most 64 (it is part of subjects and message ids). */
  id: z.string().regex(ID_RE, "id must be 1-64 of a-z 0-9 - _, starting with a letter or digit"),
  name: z.string().min(1).max(200).optional(),
  description: z.string().max(2000).optional(),
  /** Share of entering users held out (recorded, flagged do-not-contact), 0..0.5. Default 0. */
  holdoutShare: z.number().min(0).max(0.5).optional(),
  rule: ruleSchema,
}).strict();

export type AudienceDefinition = z.infer<typeof definitionSchema>;

export class AudienceError extends PortraitError {
  readonly audience: string;
  readonly field: string;
  constructor(audience: string, field: string, message: string) {
    super(ErrorCode.BAD_AUDIENCE, `audience ${JSON.stringify(audience)}: ${field === "" ? "" : `at ${field}: `}${message}`);
    this.audience = audience;
    this.field = field;
  }
}

function pathOf(path: readonly (string | number)[]): string {
  return path.reduce<string>((s, p) => (typeof p === "number" ? `${s}[${p}]` : s === "" ? p : `${s}.${p}`), "");
}

/**
 * The issue to report. For a rule that fails every union branch, the branch
 * to blame is the one whose keys the rule has (its other branches fail with
 * unrecognized keys at the rule itself); a rule no branch recognises is
 * reported as such.
 */
function blame(issues: readonly z.ZodIssue[]): z.ZodIssue {
  const i = issues[0]!;
  if (i.code !== "invalid_union") return i;
  const here = i.path.length;
  const fits = i.unionErrors.filter((u) => !u.issues.some((x) => x.code === "unrecognized_keys" && x.path.length === here));
  if (fits.length === 0) {
    return { code: "custom", path: i.path, message: `not a rule: a rule has one of the keys all, any, not, field, affinity, session, cartAbandoned, inAudience, reviewSentiment, reviewAspect, percentile` };
  }
  fits.sort((a, b) => a.issues.length - b.issues.length);
  return blame(fits[0]!.issues);
}

function countNodes(r: Rule): number {
  if ("all" in r) return 1 + r.all.reduce((n, x) => n + countNodes(x), 0);
  if ("any" in r) return 1 + r.any.reduce((n, x) => n + countNodes(x), 0);
  if ("not" in r) return 1 + countNodes(r.not);
  return 1;
}

export function referencesOf(r: Rule, out: Set<string> = new Set()): Set<string> {
  if ("all" in r) for (const x of r.all) referencesOf(x, out);
  else if ("any" in r) for (const x of r.any) referencesOf(x, out);
  else if ("not" in r) referencesOf(r.not, out);
  else if ("inAudience" in r) out.add(r.inAudience);
  return out;
}

/** Parses and checks one definition on its own (not its references). BAD_AUDIENCE when it is not valid. */
export function parseDefinition(input: unknown): AudienceDefinition {
  const r = definitionSchema.safeParse(input);
  const id = typeof (input as { id?: unknown })?.id === "string" ? (input as { id: string }).id : "?";
  if (!r.success) {
    const i = blame(r.error.issues);
    const where = pathOf(i.path);
    const extra = i.code === "unrecognized_keys" ? ` (${i.keys.join(", ")})` : "";
    throw new AudienceError(id, where, `${i.message}${extra}`);
  }
  const nodes = countNodes(r.data.rule);
  if (nodes > MAX_RULE_NODES) throw new AudienceError(r.data.id, "rule", `has ${nodes} rule nodes; at most ${MAX_RULE_NODES} are allowed`);
  return r.data;
}

/**
 * Checks a whole set (after adding or replacing one): every referenced
 * audience exists and no audience reaches itself. Returns the ids in an order
 * where each comes after the audiences it references.
 */
export function orderDefinitions(defs: readonly AudienceDefinition[]): string[] {
  if (defs.length > MAX_AUDIENCES) throw new AudienceError(defs[defs.length - 1]!.id, "", `more than ${MAX_AUDIENCES} audiences`);
  const byId = new Map(defs.map((d) => [d.id, d]));
  const order: string[] = [];
  const state = new Map<string, 1 | 2>();
  const visit = (id: string, stack: string[]) => {
    const s = state.get(id);
    if (s === 2) return;
    if (s === 1) throw new AudienceError(stack[0]!, "rule", `cycle of audience references: ${[...stack.slice(stack.indexOf(id)), id].join(" -> ")}`);
    state.set(id, 1);
    for (const ref of referencesOf(byId.get(id)!.rule)) {
      if (!byId.has(ref)) throw new AudienceError(id, "rule.inAudience", `references unknown audience ${JSON.stringify(ref)}`);
      visit(ref, [...stack, ref]);
    }
    state.set(id, 2);
    order.push(id);
  };
  for (const d of defs) visit(d.id, [d.id]);
  return order;
}

/** Which windows and time-dependent parts a set uses (so the actors do only that work). */
export interface CompiledAudiences {
  /** Definitions in evaluation order (references first). */
  readonly defs: readonly AudienceDefinition[];
  /** A content hash per audience: a changed definition is re-evaluated over every profile. */
  readonly versions: ReadonlyMap<string, string>;
  /** Per definition (same order as defs): the event types (bit 1 << type) that can change its rule's value; see eventMask. */
  readonly masks: readonly number[];
  /** Per definition: its rule reads a model's prediction (directly or through a reference), which moves without events. */
  readonly predictive: readonly boolean[];
  /** Per definition: its guard (guardOf), or undefined. */
  readonly guards: readonly (Guard | undefined)[];
}

/**
 * A guard of a rule: an affinity or session leaf that the rule needs (the rule
 * is true only when the leaf is: the leaf itself, a conjunct of a top-level
 * `all`, or the guard of an audience it needs through `inAudience`), and
 * whose value time alone can only turn false (a top-N rank is the same at
 * every time, a decayed score only falls, a session only ends). So while the
 * guard is false the rule is false, and stays false until an event: an
 * evaluation need not run the rule of a non-member whose guard is false, and
 * the rule adds no due time (audience-state.ts evaluateAudiences finds the
 * audiences whose guard may hold from the keys of the user's tables, not by
 * running each rule).
 * `slot`: 0 category, 1 brand, 2 price band (the affinity tables), 3 the
 * current session's categories.
 */
export interface Guard {
  readonly slot: 0 | 1 | 2 | 3;
  readonly key: string;
  readonly topN?: number | undefined;
  readonly minScore?: number | undefined;
}

/** Whether a rule has a percentile leaf of its own (evaluating it counts the user in the cohort sketch: never skipped by a guard). */
function hasPercentile(r: Rule): boolean {
  if ("all" in r) return r.all.some(hasPercentile);
  if ("any" in r) return r.any.some(hasPercentile);
  if ("not" in r) return hasPercentile(r.not);
  return "percentile" in r;
}

/** A rule's guard (Guard), if it has one; `refs`: the guards of the audiences already compiled. */
function guardOf(r: Rule, refs: ReadonlyMap<string, Guard | undefined>): Guard | undefined {
  if ("affinity" in r) {
    const x = r.affinity;
    const slot = x.dimension === "category" ? 0 : x.dimension === "brand" ? 1 : 2;
    return { slot, key: x.dimension === "brand" ? x.key.toLowerCase() : x.key, topN: x.topN, minScore: x.minScore };
  }
  if ("session" in r) return { slot: 3, key: r.session.category };
  if ("inAudience" in r) return refs.get(r.inAudience);
  if ("all" in r) {
    for (const x of r.all) {
      const g = guardOf(x, refs);
      if (g !== undefined) return g;
    }
  }
  return undefined;
}

/** Bit of an event type in a mask. */
export const eventBit = (type: number): number => 2 ** type;
/** Every event type. */
export const ANY_EVENT = 2 ** 31 - 1;
const PURCHASE_BITS = eventBit(EventType.PURCHASE);
const MONEY_BITS = eventBit(EventType.PURCHASE) | eventBit(EventType.REFUND);
const CART_BITS = eventBit(EventType.ADD_TO_CART);
const REVIEW_BITS = eventBit(EventType.REVIEW);
const SOCIAL_BITS = eventBit(EventType.FOLLOW) | eventBit(EventType.UNFOLLOW) | eventBit(EventType.SOCIAL_NOTICE);

/**
 * The event types whose application can change a field's value (besides time
 * passing, which the timers cover): what user-profile.ts applyEvent and
 * audience-state.ts observeAudienceEvent update for each type.
 */
function fieldMask(f: Field): number {
  if (f.startsWith("carts.")) return CART_BITS;
  if (f.startsWith("purchases.") || f.startsWith("revenue.")) return PURCHASE_BITS;
  switch (f) {
    case "rfm.r": case "rfm.f": case "orders": case "daysSincePurchase": return PURCHASE_BITS;
    case "rfm.m": case "net": return MONEY_BITS;
    case "review.sentiment": case "review.count": return REVIEW_BITS;
    case "risk.refundAbuse": return MONEY_BITS;
    case "social.following": case "social.followers": return SOCIAL_BITS;
    default: return ANY_EVENT; // events.*, eventsTotal, daysSinceSeen, predictions
  }
}

/** The event types that can change a rule's value; `refs`: the masks of the audiences already compiled. */
export function eventMask(r: Rule, refs: ReadonlyMap<string, number>): number {
  if ("all" in r) return r.all.reduce((m, x) => m | eventMask(x, refs), 0);
  if ("any" in r) return r.any.reduce((m, x) => m | eventMask(x, refs), 0);
  if ("not" in r) return eventMask(r.not, refs);
  if ("field" in r) return fieldMask(r.field);
  if ("cartAbandoned" in r) return CART_BITS | PURCHASE_BITS;
  if ("inAudience" in r) return refs.get(r.inAudience) ?? ANY_EVENT;
  if ("reviewAspect" in r) return REVIEW_BITS;
  if ("reviewSentiment" in r) return r.reviewSentiment.minWeight === undefined ? REVIEW_BITS : ANY_EVENT;
  return ANY_EVENT; // affinities and sessions move with every event
}

/** Whether a rule reads a prediction; `refs`: the audiences already compiled. */
function readsPredictions(r: Rule, refs: ReadonlyMap<string, boolean>): boolean {
  if ("all" in r) return r.all.some((x) => readsPredictions(x, refs));
  if ("any" in r) return r.any.some((x) => readsPredictions(x, refs));
  if ("not" in r) return readsPredictions(r.not, refs);
  if ("field" in r) return r.field.startsWith("prediction.");
  if ("inAudience" in r) return refs.get(r.inAudience) ?? true;
  return "percentile" in r;
}

export function compileAudiences(defs: readonly AudienceDefinition[]): CompiledAudiences {
  const order = orderDefinitions(defs);
  const byId = new Map(defs.map((d) => [d.id, d]));
  const sorted = order.map((id) => byId.get(id)!);
  const refs = new Map<string, number>();
  const predictive = new Map<string, boolean>();
  const guards = new Map<string, Guard | undefined>();
  for (const d of sorted) {
    refs.set(d.id, eventMask(d.rule, refs));
    predictive.set(d.id, readsPredictions(d.rule, predictive));
    guards.set(d.id, hasPercentile(d.rule) ? undefined : guardOf(d.rule, guards));
  }
  return Object.freeze({
    defs: sorted,
    versions: new Map(defs.map((d) => [d.id, JSON.stringify(d)])),
    masks: sorted.map((d) => refs.get(d.id)!),
    predictive: sorted.map((d) => predictive.get(d.id)!),
    guards: sorted.map((d) => guards.get(d.id)),
  });
}

/**
 * What a backfill after a change from set `before` to set `after` must
 * evaluate, per audience of `after` (1 = evaluate): the new and changed
 * audiences, those that reference one of them (directly or not), and those
 * that read predictions (a backfill re-evaluated them against the current
 * models before it was selective). The others' memberships are kept, as an
 * event of no type of theirs keeps them (evaluateAudiences `only`).
 */
export function backfillSelection(before: CompiledAudiences, after: CompiledAudiences): Uint8Array {
  const sel = new Uint8Array(after.defs.length);
  const selected = new Set<string>();
  after.defs.forEach((d, i) => {
    const changed = before.versions.get(d.id) !== after.versions.get(d.id);
    if (changed || after.predictive[i] || [...referencesOf(d.rule)].some((ref) => selected.has(ref))) {
      sel[i] = 1;
      selected.add(d.id);
    }
  });
  return sel;
}
