/**
 * Next-click evaluation through the live engine on a small synthetic log:
 * every target is scored before it is applied (the session's profile holds
 * exactly the clicks before it), a planted future click changes nothing,
 * and the engine learns what follows what from the training sessions.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import type { DatasetEvent } from "../src/data/types.js";
import { carveValidation, runNextClick, type NextClickTarget } from "../src/eval/next-click.js";
import { EventType } from "../src/wire/proto.js";
import { startTestNats } from "./helpers/nats.js";

const T0 = Date.UTC(2024, 4, 1);
const MIN = 60_000;

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startTestNats();
});
afterAll(async () => {
  await nats?.stop();
});

let n = 0;
function click(session: string, itemId: string, t: number): DatasetEvent {
  return { eventId: `nc:${n++}`, userId: `yc-${session}`, type: EventType.CLICK, timestampMs: t, itemId };
}

/** 30 training sessions walk a -> b -> c -> d (and 10 walk x -> y); the test sessions start the same walks later. */
function log(): { train: DatasetEvent[]; test: DatasetEvent[] } {
  const train: DatasetEvent[] = [];
  for (let s = 0; s < 30; s++) ["a", "b", "c", "d"].forEach((it, i) => train.push(click(`tr${s}`, it, T0 + s * 2 * MIN + i * 1000)));
  for (let s = 0; s < 10; s++) ["x", "y"].forEach((it, i) => train.push(click(`tx${s}`, it, T0 + s * 3 * MIN + i * 1000)));
  const test: DatasetEvent[] = [];
  const t1 = T0 + 3 * 3600_000;
  ["a", "b", "c"].forEach((it, i) => test.push(click("t1", it, t1 + i * 1000)));
  ["x", "y", "x"].forEach((it, i) => test.push(click("t2", it, t1 + 500 + i * 1000)));
  return { train, test };
}

describe("next-click evaluation", () => {
  it("next-click - targets scored before they are applied; a planted future click changes nothing; rules learnt from training", async () => {
    const { train, test } = log();
    const engine = { deepfmModel: "off", lstmModel: "off", churnModel: "off", logLevel: "silent" };
    const seen: NextClickTarget[] = [];
    const table = await runNextClick(train, test, "synthetic", {
      natsUrl: nats.url, engine, baselines: true,
      onTarget: async (t, client) => {
        seen.push(t);
        // Independent of the harness's bookkeeping: the session's profile holds exactly the clicks before the target.
        expect((await client.getProfile(t.event.userId)).eventsApplied).toBe(t.position);
      },
    });
    // t1: b (after a), c (after a, b); t2: y, x.
    expect(seen.map((t) => `${t.event.userId}:${t.event.itemId}@${t.position}`)).toEqual(["yc-t1:b@1", "yc-t2:y@1", "yc-t1:c@2", "yc-t2:x@2"]);
    // What follows a in training is b; after a, b it is c: ranked first.
    expect(seen[0]!.engineRank).toBe(1);
    expect(seen[2]!.engineRank).toBe(1);
    expect(table.rows[0]!.targets).toBe(4);
    expect(table.rows.map((r) => String(r.model).split(" ")[0])).toEqual(["engine", "SR", "SKNN", "item-kNN", "S-POP", "pop"]);

    // The same log with planted later clicks: one in a test session after its last target
    // (a new target, scored last) and a new session; the earlier targets see the same engine.
    const planted = [...test, click("t1", "d", T0 + 3 * 3600_000 + 60_000), click("t9", "c", T0 + 3 * 3600_000 + 60_000), click("t9", "a", T0 + 3 * 3600_000 + 61_000)];
    const again: NextClickTarget[] = [];
    await runNextClick(train, planted, "synthetic + planted", { natsUrl: nats.url, engine, baselines: false, onTarget: (t) => void again.push(t) });
    expect(again.length).toBe(6);
    expect(again.slice(0, 4).map((t) => [t.event.eventId, t.engineRank, t.served])).toEqual(seen.map((t) => [t.event.eventId, t.engineRank, t.served]));
  });

  it("next-click - the validation carve keeps whole sessions: the ones ending in the last day", () => {
    const ev = [click("s1", "a", T0), click("s1", "b", T0 + 3 * 86_400_000), click("s2", "c", T0 + MIN), click("s3", "d", T0 + 3 * 86_400_000 - 3600_000)];
    const c = carveValidation(ev, 1);
    expect(c.earlier.map((e) => e.itemId)).toEqual(["c"]);
    expect(c.validation.map((e) => e.itemId)).toEqual(["a", "b", "d"]);
  });
});
