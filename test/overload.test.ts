/**
 * Overload: events arrive far faster than the engine applies them (a backlog
 * published at the broker's speed). Memory stays bounded because consumers
 * pull only what the shards can take (max ack pending), profile queries are
 * answered or refused with a typed OVERLOADED error meanwhile, and the lag
 * drains to zero with every event applied exactly once. (The memory bound of
 * a long overload is a benchmark's job: this backlog is too small to test it.)
 */
import { headers } from "nats";
import { describe, expect, it } from "vitest";
import { partitionOf } from "../src/wire/partition.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { pb } from "../src/wire/proto.js";
import { countByUser, expectExactCounts, interleavedViews, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();

describe("overload", () => {
  it("overload - a backlog far above the apply rate: the backlog waits in the broker, queries answered or OVERLOADED, lag drains exactly once", { timeout: 240_000 }, async () => {
    const prefix = uniquePrefix("ovl");
    const maxAckPending = 512;
    const e = await fx.startEngine({ subjectPrefix: prefix, maxAckPending, maxBatchMessages: 128, maxInflightQueries: 8, lstmModel: "off", deepfmModel: "off" });
    const nc = fx.nc;
    const client = new PortraitClient(nc, { subjectPrefix: prefix, partitions: e.config.partitions });
    const events = interleavedViews(prefix, 2000, 40); // 80k events
    // Core publish as fast as the broker takes it: much faster than the engine applies.
    events.forEach((ev, i) => {
      const h = headers();
      h.set("Nats-Msg-Id", ev.eventId!);
      nc.publish(client.subjects.events(partitionOf(ev.userId!, e.config.partitions)), pb.Event.encode(ev).finish(), { headers: h });
      if (i % 10_000 === 0) void nc.flush();
    });
    await nc.flush();

    let maxAckPendingSeen = 0;
    let maxWaitingInBroker = 0;
    const jsm = await nc.jetstreamManager();
    let answered = 0;
    let overloaded = 0;
    let unknown = 0;
    const expected = countByUser(events);
    // Every user has an event in the first 2,000: from then on a profile query has something to answer.
    await waitFor(async () => (await e.metrics.total(e.metrics.eventsApplied)) >= 2000, { timeoutMs: 120_000, message: "nothing applied" });
    await waitFor(async () => {
      for (let p = 0; p < e.config.partitions; p++) {
        const ci = await jsm.consumers.info(e.subjects.eventStream, e.subjects.consumer(p));
        maxAckPendingSeen = Math.max(maxAckPendingSeen, ci.num_ack_pending);
        maxWaitingInBroker = Math.max(maxWaitingInBroker, ci.num_pending);
      }
      const burst = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => client.getProfile(`${prefix}-u${i}`)));
      for (const r of burst) {
        if (r.status === "fulfilled") answered++;
        else if (r.reason instanceof PortraitError && r.reason.code === "OVERLOADED") overloaded++;
        // A user whose first event is still in the backlog.
        else if (r.reason instanceof PortraitError && r.reason.code === "UNKNOWN_USER") unknown++;
        else throw r.reason;
      }
      return (await e.metrics.total(e.metrics.eventsApplied)) >= events.length;
    }, { timeoutMs: 180_000, message: "the backlog was not applied" });
    // What the engine refused while only the bursts above queried it.
    const refused = (await e.metrics.requests.get()).values.filter((v) => v.labels.code === "OVERLOADED");
    await expectExactCounts(client, expected);
    await waitFor(async () => (await e.metrics.total(e.metrics.lag)) === 0, { timeoutMs: 60_000, message: "lag did not drain" });
    // The backlog waited in the broker: the engine held at most maxAckPending unacknowledged messages per partition.
    expect(maxWaitingInBroker).toBeGreaterThan(maxAckPending);
    expect(maxAckPendingSeen).toBeLessThanOrEqual(maxAckPending);
    expect(answered).toBeGreaterThan(0);
    // Queries were refused with the typed error, each one counted by the engine (and nothing else refused them).
    expect(overloaded, `answered ${answered}, OVERLOADED ${overloaded}, UNKNOWN_USER ${unknown}`).toBeGreaterThan(0);
    expect(Object.fromEntries(refused.map((v) => [v.labels.endpoint, v.value]))).toEqual({ "profile.get": overloaded });
  });
});
