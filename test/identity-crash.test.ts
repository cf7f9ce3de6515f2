/**
 * Identity under SIGKILL (README "Identity"): real engine processes are killed
 * after a random number of committed batches, before the next
 * acknowledgement (--fault-kill-before-ack), while IDENTIFY events, their
 * hand-overs, forwarded events of the aliases and ordinary events flow through
 * small batches, 10 times in a row (a tenth of the input published before
 * each start); then a clean engine finishes. Every merge
 * must be applied exactly once: each merged profile holds exactly the events
 * of both ids and the later events of the secondary (a hand-over folded twice
 * or a forwarded event applied twice would show in the counts), and each has
 * exactly one alias.
 */
import { describe, expect, it } from "vitest";
import { ensureStreams } from "../src/bus/streams.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { compileEngineOptions } from "../src/config/engine-options.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, expectExactCounts, spawnEngine, uniquePrefix, waitForEngine, type ChildEngine } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";

const fx = useEngineFixture();
const children: ChildEngine[] = [];
fx.onCleanup(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await Promise.all(children.map((c) => c.exited));
});

const KILLS = 10;
const PAIRS = 24;

describe("identity - SIGKILL between hand-over and fold", { timeout: 300_000 }, () => {
  it("identity crash - 10 SIGKILLs at random points of the merges: each merge is applied exactly once", async () => {
    const prefix = uniquePrefix("identcrash");
    const dataDir = fx.tmpDir("portrait-identity-crash");
    const c = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    const args = (extra: string[]) => [
      "--nats", fx.nats.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
      "--partitions", "4", "--workers", "2", "--http-port", "-1", "--log-level", "warn", "--max-batch", "3",
      // The LSTM runs (a merge re-encodes it); no ranker or registry (not what is tested; they slow each start).
      "--deepfm", "off", "--no-model-registry", ...extra,
    ];
    const rnd = seededRandom(19);
    try {
      // Pair i: secondary s<i> (5 events), primary p<i> (5 events), IDENTIFY s -> p, then 3 more events of s (routed to p).
      const events: IEvent[] = [];
      let n = 0;
      const ev = (user: string, k: number, type = EventType.VIEW): IEvent => ({
        eventId: `${prefix}-e${n++}`, userId: user, type, timestampMs: T0 + k * 60_000, itemId: `i${k}`, price: type === EventType.PURCHASE ? 10 : 0, quantity: 1,
      });
      for (let k = 0; k < 5; k++) {
        for (let i = 0; i < PAIRS; i++) events.push(ev(`${prefix}-s${i}`, k), ev(`${prefix}-p${i}`, k, k === 4 ? EventType.PURCHASE : EventType.VIEW));
      }
      for (let i = 0; i < PAIRS; i++) {
        events.push({ eventId: `${prefix}-id${i}`, userId: `${prefix}-s${i}`, type: EventType.IDENTIFY, primaryUserId: `${prefix}-p${i}`, timestampMs: T0 + 10 * 60_000 });
      }
      for (let k = 0; k < 3; k++) for (let i = 0; i < PAIRS; i++) events.push(ev(`${prefix}-s${i}`, 20 + k, EventType.PURCHASE));
      // The streams, as the engine creates them at start: everything is stored before the first engine consumes.
      await ensureStreams(await c.nc.jetstreamManager(), subjects(prefix), compileEngineOptions({ subjectPrefix: prefix, partitions: 4, dataDir }));
      // A tenth of the input before each engine: each has work enough to die applying it (a batch commits, its ack never comes).
      const slice = Math.ceil(events.length / KILLS);
      let byHook = 0;
      // Until 10 engines died by the hook (an engine that found nothing left to apply is killed by the test and does not count).
      for (let k = 0; byHook < KILLS && k < KILLS + 5; k++) {
        await c.publishMany(events.slice(k * slice, (k + 1) * slice));
        const engine = spawnEngine(args(["--fault-kill-before-ack", String(1 + Math.floor(rnd() * 3))]));
        children.push(engine);
        // Dies by its own hook after a random number of batches; should nothing be left for it to apply, by ours.
        let byUs = false;
        const timer = setTimeout(() => {
          byUs = true;
          engine.proc.kill("SIGKILL");
        }, 45_000);
        const exit = await engine.exited;
        clearTimeout(timer);
        expect(exit.signal, engine.output()).toBe("SIGKILL");
        if (!byUs) byHook++;
      }
      // Each engine died applying its share (about 34 events, their hand-overs and forwards, in batches of at most 3).
      expect(byHook).toBe(KILLS);

      const last = spawnEngine(args([]));
      children.push(last);
      await waitForEngine(c, last);
      // Every id answers the merged profile: 5 + 5 events of the pair and the secondary's 3 later ones, once each.
      const expected = new Map<string, number>();
      for (let i = 0; i < PAIRS; i++) for (const u of [`${prefix}-s${i}`, `${prefix}-p${i}`]) expected.set(u, 13);
      await expectExactCounts(c, expected, 120_000);
      for (let i = 0; i < PAIRS; i++) {
        const p = await c.getProfile(`${prefix}-p${i}`);
        expect(p.aliases).toBe(1);
        expect(p.counts.purchase).toBe(4);
        expect(p.money.purchased).toBe(40);
        expect(await c.getProfile(`${prefix}-s${i}`)).toMatchObject({ primaryUserId: `${prefix}-p${i}`, eventsApplied: 13 });
      }
      last.proc.kill("SIGTERM");
      expect((await last.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });
});
