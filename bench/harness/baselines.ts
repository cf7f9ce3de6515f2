/**
 * The machine's own limits, measured in the same run as Portrait's figures so
 * that every figure comes with a ratio: JetStream publish and consume with no
 * engine, and NATS request-reply to a responder that does nothing.
 */
import { AckPolicy, DeliverPolicy } from "nats";
import { openLoop, type PassResult } from "./open-loop.js";
import type { Rig } from "./rig.js";
import { cpuPerEvent } from "./proc-stats.js";

/**
 * Publishes the publishers' prepared events as fast as they can and waits
 * until the stream has stored them: JetStream's publish rate (stored msg/s).
 */
export async function rawPublish(rig: Rig, count: number, timeoutMs: number): Promise<{ events: number; perSec: number }> {
  const before = await rig.streamMessages();
  const t0 = performance.now();
  await rig.startPublishing(0, count, timeoutMs / 1000);
  const sent = await rig.haltPublishing(true);
  const stored = (await rig.waitStored(before + sent.sent, timeoutMs)) - before;
  return { events: stored, perSec: stored / ((performance.now() - t0) / 1000) };
}

/**
 * A bare pull consumer per partition over the whole stream, acknowledging
 * each batch (AckAll) and doing no work: the same pull + ack pattern as the
 * engine. Returns messages consumed per second.
 */
export async function rawConsume(rig: Rig, expected: number, o: { maxMessages?: number; timeoutMs: number; name?: string }): Promise<{ perSec: number; seconds: number; cpuUsPerMsg: { consumer: number; natsServer: number } }> {
  const js = rig.nc.jetstream();
  const name = o.name ?? "raw";
  let received = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const t0 = performance.now();
  const cpu0 = rig.cpuSample();
  const running = [];
  for (let p = 0; p < rig.partitions; p++) {
    const durable = `${name}-${p}`;
    await rig.jsm.consumers.add(rig.s.eventStream, {
      durable_name: durable, filter_subject: rig.s.events(p), ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.All, max_ack_pending: 8192,
    });
    const c = await js.consumers.get(rig.s.eventStream, durable);
    let last: { ack(): void } | undefined;
    let scheduled = false;
    running.push(await c.consume({
      max_messages: o.maxMessages ?? 2048,
      callback: (m) => {
        last = m;
        if (++received === expected) done();
        if (!scheduled) {
          scheduled = true;
          setImmediate(() => {
            scheduled = false;
            last?.ack();
          });
        }
      },
    }));
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([all, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`raw consume: ${received} of ${expected} in ${o.timeoutMs} ms`)), o.timeoutMs)))]);
  } finally {
    clearTimeout(timer);
    for (const r of running) r.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuPerEvent(cpu0, rig.cpuSample(), process.pid, expected).procs;
  for (let p = 0; p < rig.partitions; p++) await rig.jsm.consumers.delete(rig.s.eventStream, `${name}-${p}`).catch(() => undefined);
  // The consumer is this process (the bench driver, otherwise idle meanwhile).
  return { perSec: expected / seconds, seconds, cpuUsPerMsg: { consumer: cpu.driver ?? NaN, natsServer: cpu["nats-server"] ?? NaN } };
}

export const ECHO_SUBJECT = (rig: Rig) => `${rig.s.prefix}.bench.echo`;

/**
 * Raw NATS request-reply: the same request bytes to a responder in its own
 * process that answers `replyBytes` at once. Open loop at `rate` for `seconds`.
 */
export async function rawRequestReply(rig: Rig, request: Uint8Array, replyBytes: number, rate: number, seconds: number, timeoutMs = 2000): Promise<PassResult> {
  await rig.startEcho(ECHO_SUBJECT(rig), replyBytes);
  return openLoop(rate, seconds, 1000, timeoutMs, () => rig.nc.request(ECHO_SUBJECT(rig), request, { timeout: timeoutMs }));
}

/** The most request-replies per second one connection gets from the trivial responder, `concurrency` outstanding, for `seconds`. */
export async function rawRequestReplyMax(rig: Rig, request: Uint8Array, replyBytes: number, seconds: number, concurrency = 64): Promise<number> {
  await rig.startEcho(ECHO_SUBJECT(rig), replyBytes);
  let n = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await rig.nc.request(ECHO_SUBJECT(rig), request, { timeout: 5000 });
      n++;
    }
  }));
  return n / seconds;
}
