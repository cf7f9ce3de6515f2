/**
 * Options of the profile model (the pure per-user update). Units are in the
 * names. Compiled once by `compileProfileOptions`; the compiled object is frozen.
 */
import { ConfigError } from "../errors.js";

export interface ProfileOptions {
  /** Half-life of the decayed affinities, ms. Default 7 days. */
  halfLifeMs?: number;
  /** Inactivity gap that ends a session when events carry no session_id, ms. Default 30 minutes. */
  sessionGapMs?: number;
  /** How many distinct recent items a profile keeps. Default 20. */
  recentItems?: number;
  /** How many keys each affinity (category, brand, price band) keeps; the weakest is dropped. Default 16. */
  affinityTopK?: number;
  /**
   * The profile beyond clicks: review sentiment and aspects (the shard's
   * sentiment model is not run), social ties (FOLLOW / UNFOLLOW / SHARE are
   * acknowledged and change nothing; no notices are sent) and risk signals.
   * false turns all three off, e.g. for a shop that has none of these events
   * or to measure what they cost (bench/beyond-ingest.ts). Default true.
   */
  beyondClicks?: boolean;
}

export interface CompiledProfileOptions {
  readonly halfLifeMs: number;
  readonly sessionGapMs: number;
  readonly recentItems: number;
  readonly affinityTopK: number;
  readonly beyondClicks: boolean;
}

export const PROFILE_DEFAULTS: CompiledProfileOptions = Object.freeze({
  halfLifeMs: 7 * 24 * 3600_000,
  sessionGapMs: 30 * 60_000,
  recentItems: 20,
  affinityTopK: 16,
  beyondClicks: true,
});

function positive(name: string, v: unknown, integer: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    throw new ConfigError(`options.${name} must be a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(name: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new ConfigError(`options.${name} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

export function compileProfileOptions(o: ProfileOptions = {}): CompiledProfileOptions {
  const known = new Set(Object.keys(PROFILE_DEFAULTS));
  for (const k of Object.keys(o)) if (!known.has(k)) throw new ConfigError(`unknown profile option ${JSON.stringify(k)}`);
  return Object.freeze({
    halfLifeMs: positive("halfLifeMs", o.halfLifeMs ?? PROFILE_DEFAULTS.halfLifeMs, false),
    sessionGapMs: positive("sessionGapMs", o.sessionGapMs ?? PROFILE_DEFAULTS.sessionGapMs, false),
    recentItems: positive("recentItems", o.recentItems ?? PROFILE_DEFAULTS.recentItems, true),
    affinityTopK: positive("affinityTopK", o.affinityTopK ?? PROFILE_DEFAULTS.affinityTopK, true),
    beyondClicks: bool("beyondClicks", o.beyondClicks ?? PROFILE_DEFAULTS.beyondClicks),
  });
}
