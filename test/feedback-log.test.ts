/** The served-reply log's memory (src/recs/feedback-log.ts): replies are kept only while someone may log feedback on them. */
import type { JetStreamClient } from "nats";
import { describe, expect, it } from "vitest";
import type { LoggedFeedback } from "../src/bus/event-batch.js";
import { subjects } from "../src/bus/subjects.js";
import { compileEngineOptions } from "../src/config/engine-options.js";
import { FeedbackLog, type ServedRecord } from "../src/recs/feedback-log.js";

const WINDOW = 60_000;

function fixture(keep?: "always" | "when-asked") {
  const published: string[] = [];
  const js = { publish: (subject: string) => (published.push(subject), Promise.resolve({})) } as unknown as JetStreamClient;
  const clock = { now: 1_000_000 };
  const log = new FeedbackLog(js, subjects("t"), { windowMs: WINDOW, maxRequests: 100, ...(keep !== undefined ? { keep } : {}) }, () => clock.now);
  return { log, clock, published };
}

function reply(id: string, atMs: number): ServedRecord {
  return { requestId: id, servedAtMs: atMs, policy: "ranking source:sknn", share: 0, explored: false, k: 1, pool: [{ itemId: "i1", scores: {}, prior: 1 }], shown: [{ itemId: "i1", slot: 0, propensity: 1 }] };
}

const impression = (requestId: string, seq: number): LoggedFeedback => ({ index: 0, seq, click: false, requestId, itemId: "i1", propensity: 1, timestampMs: 0, eventId: `e${seq}` });

describe("feedback log - memory", () => {
  it("feedback log - when-asked: no reply is kept until logged feedback arrives, then replies are kept for a window", async () => {
    const { log, clock } = fixture("when-asked");
    log.served(reply("r1", clock.now));
    expect(log.keeping).toBe(false);
    expect(log.size).toBe(0);
    // The first logged feedback names a reply that was not kept.
    const first = await log.judge([impression("r1", 1)]);
    expect(first.deadLetters.map((d) => d.reason)).toEqual(["UNKNOWN_REC_REQUEST"]);
    expect(first.deadLetters[0]!.detail).toMatch(/feedbackKeep/);
    // From then on, replies are kept and judged.
    clock.now += 1000;
    log.served(reply("r2", clock.now));
    expect(log.size).toBe(1);
    expect((await log.judge([impression("r2", 2)])).impressions).toBe(1);
    // A window without logged feedback: nothing is kept again, and the kept replies age out.
    clock.now += WINDOW + 1;
    log.served(reply("r3", clock.now));
    expect(log.keeping).toBe(false);
    expect(log.size).toBe(0);
  });

  it("feedback log - always (the default): every reply is kept up to the bound", async () => {
    const { log, clock } = fixture();
    for (let i = 0; i < 150; i++) log.served(reply(`r${i}`, clock.now));
    expect(log.size).toBe(100);
    expect((await log.judge([impression("r149", 1)])).impressions).toBe(1);
  });

  it("feedback log - the engine option feedbackKeep is auto by default and checked", () => {
    expect(compileEngineOptions({}).feedbackKeep).toBe("auto");
    expect(compileEngineOptions({ feedbackKeep: "always" }).feedbackKeep).toBe("always");
    expect(() => compileEngineOptions({ feedbackKeep: "never" as never })).toThrow(/feedbackKeep/);
  });
});
