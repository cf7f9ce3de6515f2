/**
 * Social ties in a shard (README "Social ties"): a user's FOLLOW, UNFOLLOW or
 * SHARE is applied on that user's partition, and the other user's actor is
 * told through the bus, the way identity forwards an alias's events
 * (identity.ts): a SOCIAL_NOTICE on the other user's partition, put in the
 * partition's outbox in the batch's LMDB transaction and published after the
 * commit (republished at start after a crash; JetStream drops the copy by its
 * Nats-Msg-Id, "<prefix>:n:<partition>:<stream sequence of its cause>", one
 * per cause). The recipient's partition applies it in stream order like an
 * event; when the recipient is an alias, the notice is forwarded to its
 * primary like any event of an alias. A FOLLOWED notice is answered with an
 * INTERESTS notice back to the follower: two hops, no shared state.
 */
import type { OutboundMessage } from "../bus/event-batch.js";
import type { Subjects } from "../bus/subjects.js";
import { follow, followedBy, newSocialState, noteFriendInterests, topCategoryShares, unfollow } from "../actors/social.js";
import type { UserState } from "../actors/user-profile.js";
import type { DeadLetterReason } from "../wire/event-validation.js";
import { signInternal } from "../wire/internal-mac.js";
import { EventType, pb, type Event } from "../wire/proto.js";

const Kind = pb.SocialNotice.Kind;

/** Where a message goes: a user's key and partition. */
export type Recipient = readonly [key: string, partition: number];

/** A notice from `from` to `to`, caused by stream message `seq` of `partition`. */
export function noticeMessage(s: Subjects, key: Uint8Array, partition: number, seq: number, to: Recipient, from: Recipient, atMs: number, n: { kind: number; categories?: string[]; shares?: number[] }): OutboundMessage {
  const msgId = `${s.prefix}:n:${partition}:${seq}`;
  const data = pb.Event.encode({
    eventId: msgId, userId: to[0], type: EventType.SOCIAL_NOTICE, timestampMs: atMs, forwarded: true,
    socialNotice: { kind: n.kind, fromKey: from[0], fromPartition: from[1], categories: n.categories ?? [], shares: n.shares ?? [] },
  }).finish();
  // Signed like every forwarded message (src/wire/internal-mac.ts): only the engine sends notices.
  return { subject: s.events(to[1]), msgId, data: signInternal(key, data) };
}

/**
 * Applies a social event or notice to the state of `self` (key, partition);
 * `target` is the other user of a FOLLOW / UNFOLLOW / SHARE (undefined for a
 * SHARE without one). Returns the notice to send (kind and recipient), or a
 * dead-letter verdict, before anything changed.
 */
export function applySocial(u: UserState, e: Event, self: Recipient, target: Recipient | undefined):
  | { ok: true; notice?: { to: Recipient; kind: number; categories?: string[]; shares?: number[] } }
  | { ok: false; reason: DeadLetterReason; detail: string } {
  if (e.type === EventType.UNFOLLOW) {
    // unfollow changes nothing when it refuses.
    if (u.so === undefined || !unfollow(u.so, target![0])) {
      return { ok: false, reason: "NOT_FOLLOWING", detail: "user_id does not follow target_user_id (as far as the followed ids its profile keeps tell)" };
    }
    return { ok: true, notice: { to: target!, kind: Kind.UNFOLLOWED } };
  }
  const so = (u.so ??= newSocialState());
  switch (e.type) {
    case EventType.FOLLOW:
      return { ok: true, notice: { to: target!, kind: follow(so, target![0]) === "new" ? Kind.FOLLOWED : Kind.FOLLOWED_AGAIN } };
    case EventType.SHARE:
      so.ss++;
      return target !== undefined ? { ok: true, notice: { to: target, kind: Kind.SHARED } } : { ok: true };
    default: {
      // SOCIAL_NOTICE (validated: kind and from_key set).
      const n = e.socialNotice!;
      const from: Recipient = [n.fromKey!, n.fromPartition ?? 0];
      switch (n.kind) {
        case Kind.FOLLOWED:
        case Kind.FOLLOWED_AGAIN: {
          if (n.kind === Kind.FOLLOWED) followedBy(so, 1);
          const top = topCategoryShares(u.cat);
          return top.categories.length > 0 ? { ok: true, notice: { to: from, kind: Kind.INTERESTS, ...top } } : { ok: true };
        }
        case Kind.UNFOLLOWED:
          followedBy(so, -1);
          return { ok: true };
        case Kind.SHARED:
          so.sr++;
          return { ok: true };
        case Kind.INTERESTS:
          noteFriendInterests(so, from[0], n.categories ?? [], n.shares ?? []);
          return { ok: true };
        default:
          return { ok: false, reason: "BAD_NOTICE", detail: `unknown social notice kind ${n.kind}` };
      }
    }
  }
}
