/**
 * Audiences on a real engine (nats-server, LMDB): definitions validated with
 * typed errors, stored in KV and watched; enter/exit events on the stream once
 * each, by event and by time passing (live clock); maintained counts and the
 * member index; memberships in the profile; the holdout; forget exits.
 */
import { describe, expect, it } from "vitest";
import { parseDefinition, compileAudiences, MAX_RULE_NODES, type AudienceDefinition } from "../src/actors/audience-rules.js";
import { holdoutDraw } from "../src/actors/audience-state.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { readTransitions, replayTransitions, type StreamTransition } from "./helpers/audiences.js";
import { uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

function badAudience(f: () => unknown): PortraitError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(PortraitError);
    expect((err as PortraitError).code).toBe("BAD_AUDIENCE");
    return err as PortraitError;
  }
  throw new Error("expected BAD_AUDIENCE");
}

describe("audiences - rule language", () => {
  it("audiences - a bad definition gets BAD_AUDIENCE naming the audience and the field", () => {
    const unknownField = badAudience(() => parseDefinition({ id: "a1", rule: { all: [{ field: "purchases.7d", op: ">=", value: 1 }, { field: "purchases.8d", op: ">=", value: 1 }] } }));
    expect(unknownField.message).toContain("a1");
    expect(unknownField.message).toContain("rule.all[1].field");
    const wrongType = badAudience(() => parseDefinition({ id: "a2", rule: { field: "orders", op: ">=", value: "3" } }));
    expect(wrongType.message).toContain("rule.value");
    const unknownKey = badAudience(() => parseDefinition({ id: "a3", rule: { cartAbandoned: { afterMinutes: 60, colour: "red" } } }));
    expect(unknownKey.message).toContain("rule.cartAbandoned");
    expect(unknownKey.message).toContain("colour");
    const many = { id: "a4", rule: { any: Array.from({ length: MAX_RULE_NODES }, () => ({ field: "orders", op: ">", value: 0 })) } };
    expect(badAudience(() => parseDefinition(many)).message).toContain(`at most ${MAX_RULE_NODES}`);
    const x = parseDefinition({ id: "x", rule: { inAudience: "y" } });
    const y = parseDefinition({ id: "y", rule: { not: { inAudience: "x" } } });
    expect(badAudience(() => compileAudiences([x, y])).message).toMatch(/cycle of audience references: (x -> y -> x|y -> x -> y)/);
    const z = parseDefinition({ id: "z", rule: { inAudience: "nope" } });
    expect(badAudience(() => compileAudiences([z])).message).toContain("unknown audience \"nope\"");
    // A good set orders references first.
    const base = parseDefinition({ id: "base", rule: { field: "orders", op: ">=", value: 1 } });
    const top = parseDefinition({ id: "top", rule: { all: [{ inAudience: "base" }, { field: "net", op: ">", value: 100 }] } });
    expect(compileAudiences([top, base]).defs.map((d) => d.id)).toEqual(["base", "top"]);
  });

  it("audiences - the holdout draw is stable and has the configured share within sampling error", () => {
    let held = 0;
    const n = 20_000;
    for (let i = 0; i < n; i++) if (holdoutDraw(`user-${i}`, "aud") < 0.1) held++;
    // Binomial(20000, 0.1): sd = 42; 4 sd either side.
    expect(Math.abs(held - 2000)).toBeLessThan(170);
    expect(holdoutDraw("user-1", "aud")).toBe(holdoutDraw("user-1", "aud"));
    expect(holdoutDraw("user-1", "aud")).not.toBe(holdoutDraw("user-1", "other"));
  });
});

describe("audiences - on a running engine", () => {
  const fx = useEngineFixture();

  it("audiences - enter/exit by event and by time, counts, members, profile, holdout, forget; each transition once", async () => {
    const prefix = uniquePrefix("aud");
    const dataDir = fx.tmpDir("aud-engine");
    let engine = await fx.startEngine({ subjectPrefix: prefix, dataDir });
    const client = new PortraitClient(fx.nc, { partitions: engine.config.partitions, subjectPrefix: prefix });
    const defs: AudienceDefinition[] = [
      { id: "carters", rule: { field: "carts.1d", op: ">=", value: 1 } },
      // 3 s after an add-to-cart with no purchase: enters by time alone (3 s leaves room for the events to be applied first on a loaded machine).
      { id: "abandoners", holdoutShare: 0.5, rule: { cartAbandoned: { afterMinutes: 0.05 } } },
      { id: "buyers", holdoutShare: 0.5, rule: { field: "purchases.90d", op: ">=", value: 1 } },
      { id: "buyer-carters", rule: { all: [{ inAudience: "buyers" }, { inAudience: "carters" }] } },
    ];
    for (const d of defs) await client.audienceCreate(d);
    // Over request-reply: typed errors.
    const bad = await client.audienceCreate({ id: "bad", rule: { field: "nope" } } as unknown as AudienceDefinition).catch((e: unknown) => e);
    expect((bad as PortraitError).code).toBe("BAD_AUDIENCE");
    expect((bad as PortraitError).message).toContain("rule.field");
    const cyc = await client.audienceCreate({ id: "carters", rule: { inAudience: "buyer-carters" } }).catch((e: unknown) => e);
    expect((cyc as PortraitError).code).toBe("BAD_AUDIENCE");
    expect((cyc as PortraitError).message).toContain("cycle");
    expect(((await client.audienceShow("nope").catch((e: unknown) => e)) as PortraitError).code).toBe("UNKNOWN_AUDIENCE");
    expect((await client.audienceList()).audiences.map((a) => a.definition.id)).toEqual(["abandoners", "buyer-carters", "buyers", "carters"]);

    const now = Date.now();
    const users = Array.from({ length: 40 }, (_, i) => `${prefix}-u${i}`);
    const events: IEvent[] = [];
    let n = 0;
    for (const [i, userId] of users.entries()) {
      events.push({ eventId: `${prefix}-e${n++}`, userId, type: EventType.VIEW, timestampMs: now - 1000, itemId: "i1", categoryId: "c1" });
      events.push({ eventId: `${prefix}-e${n++}`, userId, type: EventType.ADD_TO_CART, timestampMs: now - 900, itemId: "i1", categoryId: "c1", price: 5 });
      if (i % 2 === 0) events.push({ eventId: `${prefix}-e${n++}`, userId, type: EventType.PURCHASE, timestampMs: now - 800, itemId: "i1", categoryId: "c1", price: 5, quantity: 2, orderId: `o${i}` });
    }
    await client.publishMany(events);
    // Even users bought after their cart: carters + buyers + buyer-carters. Odd users: carters, then abandoners once 3 s pass.
    // All four together: a shard may apply the events before it has the last definitions from the KV watch, and then
    // the backfill of those definitions enters the users (on a loaded machine, after the others are counted).
    const want = { abandoners: 20, buyers: 20, carters: 40, "buyer-carters": 20 };
    let counts: Record<string, number> = {};
    await waitFor(async () => {
      counts = Object.fromEntries(await Promise.all(Object.keys(want).map(async (id) => [id, await client.audienceCount(id)] as const)));
      return Object.entries(want).every(([id, n]) => counts[id] === n);
    }, { timeoutMs: 15_000, message: "audience counts" }).catch((err: Error) => {
      throw new Error(`${err.message}; counts ${JSON.stringify(counts)}`, { cause: err });
    });
    const members = [];
    for await (const m of client.audienceMembersAll("abandoners", 7)) members.push(m.userId);
    expect(members.sort()).toEqual(users.filter((_, i) => i % 2 === 1).sort());
    const p1 = await client.getProfile(users[1]!);
    expect(p1.audiences?.map((a) => a.audienceId)).toEqual(["abandoners", "carters"]);
    expect(p1.audiences![0]!.sinceMs).toBeGreaterThanOrEqual(now - 900 + 3000);

    // The abandoners entered by time: reason "time", within 1 s of due on the live clock.
    let ts: StreamTransition[] = (await waitFor(async (): Promise<StreamTransition[] | undefined> => {
      const t = await readTransitions(fx.nc, engine.subjects.audienceStream);
      return t.filter((x) => x.audienceId === "abandoners").length === 20 ? t : undefined;
    }))!;
    for (const t of ts.filter((x) => x.audienceId === "abandoners")) {
      expect(t.reason).toBe("time");
      expect(t.atMs - (now - 900 + 3000)).toBeLessThan(1000);
      expect(t.msgId).toBe(`abandoners:${t.userId}:1`);
    }
    // Holdout: the flag is the stable hash draw.
    for (const t of ts.filter((x) => x.audienceId === "buyers")) expect(t.holdout).toBe(holdoutDraw(t.userId, "buyers") < 0.5);
    // Report: every buyer bought 2 x 5 on the day it entered, contacted or held out; no uplift.
    const held = ts.filter((x) => x.audienceId === "buyers" && x.holdout).length;
    const report = await client.audienceReport("buyers", 7);
    expect(report.holdout.members).toBe(held);
    expect(report.contacted.members).toBe(20 - held);
    expect(report.contacted.purchaseRate).toBe(1);
    expect(report.contacted.revenuePerMember).toBeCloseTo(10, 9);
    if (held > 0 && held < 20) expect(report.revenueUplift?.estimate).toBeCloseTo(0, 9);

    // A purchase makes an abandoner exit by event.
    await client.publish({ eventId: `${prefix}-late`, userId: users[1]!, type: EventType.PURCHASE, timestampMs: Date.now(), itemId: "i1", price: 5, orderId: "late" });
    await waitFor(async () => (await client.audienceCount("abandoners")) === 19 && (await client.audienceCount("buyers")) === 21);
    // The report covers the member who left too (audiences with a holdout): 20 memberships, one of them bought.
    const left = await client.audienceReport("abandoners", 7);
    expect(left.contacted.members + left.holdout.members).toBe(20);
    expect(left.contacted.buyers + left.holdout.buyers).toBe(1);

    // Restart: definitions come back from KV, counts from LMDB; nothing is sent again.
    await engine.close();
    engine = await fx.startEngine({ subjectPrefix: prefix, dataDir });
    expect(await client.audienceCount("abandoners")).toBe(19);

    // Forget: exits from every audience with reason "forgotten".
    await client.forget(users[0]!);
    // users[1] became a buyer with its late purchase (21), and users[0] leaves.
    await waitFor(async () => (await client.audienceCount("buyers")) === 20);
    ts = (await waitFor(async (): Promise<StreamTransition[] | undefined> => {
      const t = await readTransitions(fx.nc, engine.subjects.audienceStream);
      return t.some((x) => x.reason === "forgotten") ? t : undefined;
    }))!;
    expect(ts.filter((x) => x.reason === "forgotten").map((x) => x.audienceId).sort()).toEqual(["buyer-carters", "buyers", "carters"]);

    // Deleting an audience others reference is refused; deleting a leaf exits its members ("deleted").
    expect(((await client.audienceDelete("buyers").catch((e: unknown) => e)) as PortraitError).code).toBe("BAD_AUDIENCE");
    await client.audienceDelete("abandoners");
    await waitFor(async () => (await client.audienceCount("abandoners").catch(() => -1)) === -1);
    await waitFor(async () => {
      const t = await readTransitions(fx.nc, engine.subjects.audienceStream);
      return t.filter((x) => x.reason === "deleted").length === 19;
    }, { intervalMs: 200 });

    // The stream is a clean history, and it ends where the counters are.
    ts = await readTransitions(fx.nc, engine.subjects.audienceStream);
    const { members: final, problems } = replayTransitions(ts);
    expect(problems).toEqual([]);
    for (const id of ["carters", "buyers", "buyer-carters"]) expect(final.get(id)?.size ?? 0).toBe(await client.audienceCount(id));
    expect(final.get("abandoners")?.size ?? 0).toBe(0);
  }, 60_000);
});
