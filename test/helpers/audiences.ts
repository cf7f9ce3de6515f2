/** Test helpers for audiences: read the enter/exit stream back. */
import type { NatsConnection } from "nats";
import { pb } from "../../src/wire/proto.js";

export interface StreamTransition {
  audienceId: string;
  userId: string;
  transition: number;
  entered: boolean;
  atMs: number;
  reason: string;
  holdout: boolean;
  msgId: string;
}

/** Every message of the audience stream, in stream order. */
export async function readTransitions(nc: NatsConnection, stream: string): Promise<StreamTransition[]> {
  const jsm = await nc.jetstreamManager();
  const last = (await jsm.streams.info(stream)).state.last_seq;
  const out: StreamTransition[] = [];
  if (last === 0) return out;
  const c = await nc.jetstream().consumers.get(stream);
  const msgs = await c.consume({ max_messages: 1000 });
  for await (const m of msgs) {
    const t = pb.AudienceTransition.decode(m.data);
    out.push({
      audienceId: t.audienceId, userId: t.userId, transition: Number(t.transition), entered: t.entered, atMs: Number(t.atMs),
      reason: t.reason, holdout: t.holdout, msgId: m.headers?.get("Nats-Msg-Id") ?? "",
    });
    if (m.seq >= last) break;
  }
  await msgs.close();
  return out;
}

/**
 * Checks the stream is a clean history: per (audience, user) the transition
 * numbers are 1, 2, 3, ... with no gap and no repeat, odd ones enter and even
 * ones exit. Returns the members each audience has at the end of it.
 */
export function replayTransitions(ts: StreamTransition[]): { members: Map<string, Set<string>>; problems: string[] } {
  const last = new Map<string, number>();
  const members = new Map<string, Set<string>>();
  const problems: string[] = [];
  const sorted = [...ts].sort((a, b) => a.transition - b.transition);
  for (const t of sorted) {
    const k = `${t.audienceId}\u0000${t.userId}`;
    const prev = last.get(k) ?? 0;
    if (t.transition !== prev + 1) problems.push(`${t.audienceId}/${t.userId}: transition ${t.transition} after ${prev}`);
    if (t.entered !== (t.transition % 2 === 1)) problems.push(`${t.audienceId}/${t.userId}: transition ${t.transition} entered=${t.entered}`);
    last.set(k, t.transition);
    const set = members.get(t.audienceId) ?? members.set(t.audienceId, new Set()).get(t.audienceId)!;
    if (t.entered) set.add(t.userId);
    else set.delete(t.userId);
  }
  return { members, problems };
}
