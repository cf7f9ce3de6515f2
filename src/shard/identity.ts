/**
 * Identity in a shard (README "Identity"): the messages a merge sends through
 * the bus and the alias table's in-memory side.
 *
 * - An IDENTIFY (user_id = secondary A, primary_user_id = B) is applied on A's
 *   partition: A's state leaves in a hand-over (an IDENTITY_HANDOVER event on
 *   B's partition, Nats-Msg-Id = merge id), A's profile is removed and A's
 *   alias entry written, all in the batch's LMDB transaction; the hand-over
 *   waits in the outbox until JetStream acknowledged it (republished at start
 *   after a crash, deduplicated by its id).
 * - B's partition folds a hand-over once per merge id (UserState.mg).
 * - A later event of A is forwarded: the same event with user_id = B's key,
 *   `forwarded` set, on B's partition, through the same outbox, with
 *   Nats-Msg-Id `<prefix>:x:<stream sequence>` (once per original event;
 *   `<prefix>:x:<stream sequence>:<index>` for a notice of a SOCIAL_NOTICE
 *   batch, several of which may be forwarded).
 * - Both are signed with the deployment's internal key (src/wire/internal-mac.ts):
 *   a publisher cannot forge them.
 */
import type { UserState } from "../actors/user-profile.js";
import type { OutboundMessage } from "../bus/event-batch.js";
import type { Subjects } from "../bus/subjects.js";
import type { AliasEntry, SideWrites } from "../store/profile-store.js";
import { signInternal } from "../wire/internal-mac.js";
import { EventType, pb, type Event } from "../wire/proto.js";

/** Most forwards of one event along alias chains before it is dead-lettered (IDENTIFY_CYCLE). */
export const MAX_HOPS = 16;

/** What a hand-over carries: the secondary's key, its partition and its state. */
export interface HandoverPayload {
  /** The secondary's key and partition. */
  k: string;
  p: number;
  /** The secondary's state. */
  s: UserState;
  /** The primary's key the merge was made for (its `merging` entry); absent in hand-overs written before it was carried. */
  o?: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The merge id of an IDENTIFY: unique per stream message. */
export function mergeIdOf(s: Subjects, partition: number, seq: number): string {
  return `${s.prefix}:h:${partition}:${seq}`;
}

/** The hand-over message of a merge, to B's partition. */
export function handoverMessage(s: Subjects, key: Uint8Array, mergeId: string, primary: AliasEntry, atMs: number, payload: HandoverPayload): OutboundMessage {
  // Not carried: the LSTM state (re-encoded by the primary) and the memberships (the secondary exits them; the primary re-evaluates).
  const state = { ...payload.s };
  delete state.lstm;
  delete state.lstmV;
  if (state.aud !== undefined) state.aud = { ...state.aud, m: {} };
  const data = pb.Event.encode({
    eventId: mergeId, userId: primary[0], type: EventType.IDENTITY_HANDOVER, timestampMs: atMs, mergeId,
    handoverState: encoder.encode(JSON.stringify({ k: payload.k, p: payload.p, s: state, o: payload.o })), forwarded: true,
  }).finish();
  return { subject: s.events(primary[1]), msgId: mergeId, data: signInternal(key, data) };
}

export function readHandover(e: Event): HandoverPayload {
  return JSON.parse(decoder.decode(e.handoverState)) as HandoverPayload;
}

/**
 * An event of an alias, forwarded to its primary's partition (one more hop);
 * `part`: the index of a notice in its SOCIAL_NOTICE batch message (several
 * notices of one message may be forwarded: each gets its own message id).
 */
export function forwardMessage(s: Subjects, key: Uint8Array, e: Event, seq: number, to: AliasEntry, part?: number): OutboundMessage {
  // The signature it arrived with (a forward of a forward) is not carried: the new one is appended.
  const { internalMac: _signed, ...event } = e;
  // A follow notice remembers the id that was followed (the first alias on the way): the primary answers as it.
  const n = e.socialNotice;
  const followed = n != null && (n.kind === pb.SocialNotice.Kind.FOLLOWED || n.kind === pb.SocialNotice.Kind.FOLLOWED_AGAIN) && !n.followedKey;
  const data = pb.Event.encode({ ...event, ...(followed ? { socialNotice: { ...n, followedKey: e.userId } } : {}), userId: to[0], forwarded: true, hops: e.hops + 1 }).finish();
  return { subject: s.events(to[1]), msgId: part === undefined ? `${s.prefix}:x:${seq}` : `${s.prefix}:x:${seq}:${part}`, data: signInternal(key, data) };
}

/** Puts a message in the partition's outbox (committed with the batch) and in the batch's outbound list. */
export function toOutbox(partition: number, m: OutboundMessage, side: SideWrites, out: OutboundMessage[]): void {
  side.puts.push([["o", partition, m.msgId], { s: m.subject, b: m.data }]);
  out.push(m);
}
