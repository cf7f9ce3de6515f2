/**
 * The training log as the off-policy estimates and the feedback ranker read
 * it (README "The feedback loop"): served replies joined with their logged
 * impressions and clicks.
 */
import type { JetStreamClient, JetStreamManager } from "nats";
import { readWholeStream } from "../bus/stream-reader.js";
import type { Subjects } from "../bus/subjects.js";
import type { FeedbackRecord, ServedRecord } from "../recs/feedback-log.js";

/** A reply of the training log with its logged impressions and their outcomes. */
export interface LoggedRequest {
  record: ServedRecord;
  impressions: Array<{ slot: number; itemId: string; propensity: number; clicked: boolean }>;
}

/** Joins served replies, impressions and clicks by request and item; replies without a logged impression are left out. Oldest reply first. */
export function joinFeedback(served: readonly ServedRecord[], impressions: readonly FeedbackRecord[], clicks: readonly FeedbackRecord[]): LoggedRequest[] {
  const clicked = new Set(clicks.map((c) => `${c.requestId}\u0000${c.itemId}`));
  const by = new Map<string, LoggedRequest>();
  for (const r of served) by.set(r.requestId, { record: r, impressions: [] });
  const seen = new Set<string>();
  for (const m of impressions) {
    const key = `${m.requestId}\u0000${m.itemId}`;
    const req = by.get(m.requestId);
    if (req === undefined || seen.has(key)) continue;
    seen.add(key);
    req.impressions.push({ slot: m.slot, itemId: m.itemId, propensity: m.propensity, clicked: clicked.has(key) });
  }
  return [...by.values()].filter((r) => r.impressions.length > 0).sort((a, b) => a.record.servedAtMs - b.record.servedAtMs);
}

/** Reads the whole training log (stream <PREFIX>_FEEDBACK) and joins it. */
export async function readFeedbackLog(js: JetStreamClient, jsm: JetStreamManager, s: Subjects): Promise<LoggedRequest[]> {
  const served: ServedRecord[] = [];
  const impressions: FeedbackRecord[] = [];
  const clicks: FeedbackRecord[] = [];
  const dec = new TextDecoder();
  await readWholeStream(js, jsm, s.feedbackStream, (subject, data) => {
    const body = JSON.parse(dec.decode(data)) as unknown;
    if (subject === s.feedback("served")) served.push(body as ServedRecord);
    else if (subject === s.feedback("impression")) impressions.push(body as FeedbackRecord);
    else if (subject === s.feedback("click")) clicks.push(body as FeedbackRecord);
  });
  return joinFeedback(served, impressions, clicks);
}
