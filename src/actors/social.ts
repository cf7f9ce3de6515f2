/**
 * Social ties of a profile (README "Social ties"): pure, like the rest of the
 * profile. The shard (src/shard/social.ts) applies a user's FOLLOW, UNFOLLOW
 * and SHARE here and tells the other user's actor through the bus; what that
 * actor is told arrives as a SOCIAL_NOTICE and is applied here too.
 *
 * Definitions:
 * - following (out-degree): follows minus unfollows of the user; a follow of
 *   an id the user already follows (among the ids kept) changes no degree.
 * - followers (in-degree): FOLLOWED notices minus UNFOLLOWED notices, each
 *   sent by the follower's actor; never below 0.
 * - the followed ids: the last SOCIAL.followingKept, oldest first (so an
 *   unfollow can be checked and a repeated follow is not counted twice).
 *   Beyond that bound the oldest ids are not kept: a repeated follow of one
 *   of them counts again, and an unfollow of an id not kept is trusted while
 *   the user follows more ids than are kept (else it is NOT_FOLLOWING).
 * - friends' interests: a sample of the followed users, the SOCIAL.friendSample
 *   most recently followed (or re-followed) whose answer arrived and who are
 *   still followed, each with their top SOCIAL.friendCategories categories as
 *   shares of their whole category affinity (in [0, 1]) when they answered:
 *   a snapshot, refreshed by following again. The view is, per category, the
 *   mean share over the sample (a category only one of 8 friends has at 0.5
 *   reads 0.0625), strongest first, at most SOCIAL.friendsInterestsTop.
 * - shares: SHAREs sent, and SHARED notices received.
 */

import { fnv1a32String } from "../wire/partition.js";

/** Bounds of the social part of a profile (see the header). */
export const SOCIAL = Object.freeze({
  /** Followed ids kept per profile (exact degrees and checks up to it). */
  followingKept: 128,
  /** Followed users whose top categories are kept (friends' interests). */
  friendSample: 8,
  /** Categories kept per sampled friend. */
  friendCategories: 3,
  /** Categories in the friends' interests view. */
  friendsInterestsTop: 8,
});

/** One sampled friend: [fnv1a32 of their key, categories, their shares]. */
export type FriendInterest = [number, string[], number[]];

/** The stored part (short names: every byte of a profile is written on every change). */
export interface SocialState {
  /** Out-degree and in-degree. */
  o: number;
  i: number;
  /** Shares sent and received. */
  ss: number;
  sr: number;
  /**
   * Followed ids, oldest first, at most SOCIAL.followingKept: fnv1a32 of
   * their keys, not the ids (a forget of a followed user leaves no id of
   * theirs in their followers' profiles; two ids among 128 share a hash with
   * odds of about 4e-6).
   */
  fo: number[];
  /** The friends' interests sample, oldest first, at most SOCIAL.friendSample. */
  fr: FriendInterest[];
}

export function newSocialState(): SocialState {
  return { o: 0, i: 0, ss: 0, sr: 0, fo: [], fr: [] };
}

/** A follow of `key`: "new" (out-degree + 1) or "again" (already followed: no degree changes, the friend's interests are asked again). */
export function follow(s: SocialState, key: string): "new" | "again" {
  const h = fnv1a32String(key);
  const k = s.fo.indexOf(h);
  if (k >= 0) {
    s.fo.splice(k, 1);
    s.fo.push(h);
    return "again";
  }
  s.o++;
  s.fo.push(h);
  if (s.fo.length > SOCIAL.followingKept) s.fo.shift();
  return "new";
}

/** An unfollow of `key`: false when the user does not follow it (as far as the kept ids tell). */
export function unfollow(s: SocialState, key: string): boolean {
  const h = fnv1a32String(key);
  const k = s.fo.indexOf(h);
  if (k >= 0) s.fo.splice(k, 1);
  else if (s.o <= s.fo.length) return false;
  s.o = Math.max(0, s.o - 1);
  const f = s.fr.findIndex((x) => x[0] === h);
  if (f >= 0) s.fr.splice(f, 1);
  return true;
}

/** In-degree change told by a follower's actor (+1 followed, -1 unfollowed). */
export function followedBy(s: SocialState, delta: 1 | -1): void {
  s.i = Math.max(0, s.i + delta);
}

/** A followed user's answer: their top categories. Ignored when `key` is no longer followed (unfollowed meanwhile) or has no categories. */
export function noteFriendInterests(s: SocialState, key: string, categories: string[], shares: number[]): void {
  const h = fnv1a32String(key);
  const f = s.fr.findIndex((x) => x[0] === h);
  if (f >= 0) s.fr.splice(f, 1);
  if (categories.length === 0 || !(s.fo.includes(h) || s.o > s.fo.length)) return;
  const n = Math.min(categories.length, shares.length, SOCIAL.friendCategories);
  s.fr.push([h, categories.slice(0, n), shares.slice(0, n).map((x) => Math.min(1, Math.max(0, x)))]);
  if (s.fr.length > SOCIAL.friendSample) s.fr.shift();
}

/** A user's top categories as shares of their whole category table: what their actor answers a new follower. */
export function topCategoryShares(cat: { keys: string[]; scores: number[] }): { categories: string[]; shares: number[] } {
  let total = 0;
  for (const x of cat.scores) total += x;
  if (!(total > 0)) return { categories: [], shares: [] };
  const top = cat.keys.map((k, i) => [k, cat.scores[i]!] as const).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, SOCIAL.friendCategories);
  return { categories: top.map(([k]) => k), shares: top.map(([, v]) => v / total) };
}

/** Friends' interests: per category, the mean share over the sampled friends, strongest first. */
export function friendsInterests(s: SocialState | undefined, top: number = SOCIAL.friendsInterestsTop): { key: string; score: number }[] {
  if (s === undefined || s.fr.length === 0) return [];
  const sum = new Map<string, number>();
  for (const [, cats, shares] of s.fr) cats.forEach((c, j) => sum.set(c, (sum.get(c) ?? 0) + shares[j]!));
  return [...sum]
    .map(([key, v]) => ({ key, score: v / s.fr.length }))
    .sort((a, b) => b.score - a.score || (a.key < b.key ? -1 : 1))
    .slice(0, top);
}

/** The proto `Social` as plain data. */
export interface SocialView {
  following: number;
  followers: number;
  sharesSent: number;
  sharesReceived: number;
  /** Friends' interests (see the header); `friendsSampled` friends behind them. */
  friendsInterests: { key: string; score: number; label?: string }[];
  friendsSampled: number;
}

export function socialView(s: SocialState | undefined): SocialView | undefined {
  if (s === undefined) return undefined;
  return { following: s.o, followers: s.i, sharesSent: s.ss, sharesReceived: s.sr, friendsInterests: friendsInterests(s), friendsSampled: s.fr.length };
}

/** Two users' social parts merged (identity merge): degrees and shares add, followed ids and samples are joined (the primary's first), bounds kept. */
export function mergeSocial(a: SocialState | undefined, b: SocialState): SocialState {
  if (a === undefined) return structuredClone(b);
  const fo = [...new Set([...b.fo, ...a.fo])].slice(-SOCIAL.followingKept);
  const seen = new Set(a.fr.map((x) => x[0]));
  const fr = [...b.fr.filter((x) => !seen.has(x[0])), ...a.fr].slice(-SOCIAL.friendSample);
  return { o: a.o + b.o, i: a.i + b.i, ss: a.ss + b.ss, sr: a.sr + b.sr, fo, fr: structuredClone(fr) };
}
