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
 *
 * Batched: the notices a partition's batch sends are gathered while it is
 * applied (NoticeBatch) and go out as one SOCIAL_NOTICE message per
 * recipients' partition (at most MAX_NOTICES_PER_MESSAGE each, and under the
 * event size limit), each notice naming its recipient (`to_key`): one
 * signature, one outbox entry, one JetStream publish and one delivery for
 * all of them, instead of one per notice. Nats-Msg-Id
 * "<prefix>:n:<partition>:<sequence of the batch's last event that sent a
 * notice>:<recipients' partition>:<chunk>": unique per committed batch (an
 * event is applied once), and the same bytes and id when the outbox
 * republishes it after a crash, so JetStream drops the copy. A batch that
 * did not commit never left the outbox, and its events are applied again.
 */
import type { OutboundMessage } from "../bus/event-batch.js";
import type { Subjects } from "../bus/subjects.js";
import { follow, followedBy, newSocialState, noteFriendInterests, topCategoryShares, unfollow } from "../actors/social.js";
import type { UserState } from "../actors/user-profile.js";
import { MAX_NOTICES_PER_MESSAGE, type DeadLetterReason } from "../wire/event-validation.js";
import { signInternal } from "../wire/internal-mac.js";
import { EventType, pb, type Event } from "../wire/proto.js";

const Kind = pb.SocialNotice.Kind;

/** Where a message goes: a user's key and partition. */
export type Recipient = readonly [key: string, partition: number];

/** A notice to send: its recipient, its sender and what it says. */
export interface PendingNotice {
  to: Recipient;
  from: Recipient;
  kind: number;
  categories?: string[];
  shares?: number[];
}

/** A notice's encoded size, an upper bound (UTF-8 at most 3 bytes per UTF-16 unit; field tags and lengths). */
function noticeBytes(n: PendingNotice): number {
  let b = 24 + 3 * (n.from[0].length + n.to[0].length) + 10 * (n.shares?.length ?? 0);
  for (const c of n.categories ?? []) b += 4 + 3 * c.length;
  return b;
}

/**
 * The notices of one batch of one partition, gathered while it is applied
 * (see the header); `messages` makes the batch's SOCIAL_NOTICE messages.
 */
export class NoticeBatch {
  readonly #byPartition = new Map<number, PendingNotice[]>();
  /** Stream sequence of the last event that sent a notice, and the latest event time among them. */
  #lastSeq = 0;
  #atMs = 0;

  get size(): number {
    let n = 0;
    for (const xs of this.#byPartition.values()) n += xs.length;
    return n;
  }

  add(n: PendingNotice, seq: number, atMs: number): void {
    let xs = this.#byPartition.get(n.to[1]);
    if (xs === undefined) this.#byPartition.set(n.to[1], (xs = []));
    xs.push(n);
    if (seq > this.#lastSeq) this.#lastSeq = seq;
    if (atMs > this.#atMs) this.#atMs = atMs;
  }

  /**
   * One signed message per recipients' partition (more when it holds more
   * than MAX_NOTICES_PER_MESSAGE notices or would pass `maxBytes` encoded),
   * sent by `partition`; in ascending partition order, notices in the order
   * they were made.
   */
  messages(s: Subjects, key: Uint8Array, partition: number, maxBytes: number): OutboundMessage[] {
    const out: OutboundMessage[] = [];
    // Room for the event's own fields and the signature's trailer.
    const room = Math.max(1, maxBytes - 256);
    for (const to of [...this.#byPartition.keys()].sort((a, b) => a - b)) {
      const xs = this.#byPartition.get(to)!;
      let chunk = 0;
      for (let i = 0; i < xs.length; ) {
        let bytes = 0;
        let j = i;
        while (j < xs.length && j - i < MAX_NOTICES_PER_MESSAGE && (j === i || bytes + noticeBytes(xs[j]!) <= room)) bytes += noticeBytes(xs[j++]!);
        const msgId = `${s.prefix}:n:${partition}:${this.#lastSeq}:${to}:${chunk++}`;
        const notices = xs.slice(i, j).map((n) => ({
          kind: n.kind, fromKey: n.from[0], fromPartition: n.from[1], toKey: n.to[0], categories: n.categories ?? [], shares: n.shares ?? [],
        }));
        const data = pb.Event.encode({ eventId: msgId, userId: notices[0]!.toKey, type: EventType.SOCIAL_NOTICE, timestampMs: this.#atMs, forwarded: true, socialNotices: notices }).finish();
        // Signed like every forwarded message (src/wire/internal-mac.ts): only the engine sends notices.
        // Holdable: while this partition drains a backlog, its notices go out in bursts (bus/partition-consumer.ts).
        out.push({ subject: s.events(to), msgId, data: signInternal(key, data), holdable: true });
        i = j;
      }
    }
    return out;
  }
}

/**
 * The notices of a SOCIAL_NOTICE batch message as single notices, each an
 * event of its recipient (user_id = to_key, social_notice set), in order.
 */
export function unbatchNotices(e: Event): Event[] {
  return e.socialNotices.map((n) => pb.Event.create({
    eventId: e.eventId, userId: n.toKey!, type: EventType.SOCIAL_NOTICE, timestampMs: e.timestampMs, forwarded: true, hops: e.hops,
    socialNotice: { kind: n.kind!, fromKey: n.fromKey!, fromPartition: n.fromPartition ?? 0, categories: n.categories ?? [], shares: n.shares ?? [] },
  }));
}

/**
 * Applies a social event or notice to the state of `self` (key, partition);
 * `target` is the other user of a FOLLOW / UNFOLLOW / SHARE (undefined for a
 * SHARE without one). Returns the notice to send (kind and recipient), or a
 * dead-letter verdict, before anything changed.
 */
export function applySocial(u: UserState, e: Event, self: Recipient, target: Recipient | undefined):
  | { ok: true; notice?: Omit<PendingNotice, "from"> }
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
