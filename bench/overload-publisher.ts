/**
 * One publisher process of bench/overload.ts (forked with an IPC channel; not
 * run by hand). It encodes its share of the synthetic events into one buffer
 * before any timing starts, then publishes slices of it on command: as fast as
 * it can (preload, capacity burst) or open-loop at a rate (the overload
 * window), with core NATS publishes (no Nats-Msg-Id, no PubAck wait: the
 * publisher must not be the bottleneck) and a flush per tick, so what it
 * buffers is bounded by one tick's messages. Every loop is bounded by a count
 * and a deadline.
 *
 * Messages: parent -> child `init` (again to replace the events), `run` (any
 * number, each continuing where the last stopped), then `exit`;
 * child -> parent `ready`, `progress` (about every 250 ms while running), `done`.
 */
import { connect, type NatsConnection } from "nats";
import { partitionOf } from "../src/wire/partition.js";
import { subjects } from "../src/bus/subjects.js";
import { pb } from "../src/wire/proto.js";
import { syntheticEvents } from "./synthetic.js";

export type ToPublisher =
  | { type: "init"; url: string; prefix: string; partitions: number; users: number; seed: number; count: number }
  /** Publish the next `n` events; `rate` events/s from `startAt` (epoch ms), or 0 = as fast as possible; stop at `deadline` (epoch ms) whatever is left. */
  | { type: "run"; n: number; rate: number; startAt: number; deadline: number }
  | { type: "exit" };

export type FromPublisher =
  | { type: "ready"; count: number; bytes: number; encodeMs: number }
  | { type: "progress"; sent: number }
  | { type: "done"; sent: number; ms: number };

const TICK_MS = 5;
/** Most messages published between two flushes. */
const MAX_PER_TICK = 4000;

let nc: NatsConnection | undefined;
let buf = Buffer.alloc(0);
let offsets = new Uint32Array(0);
let parts = new Uint16Array(0);
let subjectOf: string[] = [];
let cursor = 0;
let total = 0;

const send = (m: FromPublisher) => process.send!(m);

async function init(m: Extract<ToPublisher, { type: "init" }>): Promise<void> {
  const t0 = Date.now();
  const chunks: Buffer[] = [];
  offsets = new Uint32Array(m.count + 1);
  parts = new Uint16Array(m.count);
  let at = 0;
  let i = 0;
  for (const e of syntheticEvents(m.count, { users: m.users, seed: m.seed })) {
    const b = pb.Event.encode(e).finish();
    chunks.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    parts[i] = partitionOf(e.userId!, m.partitions);
    offsets[i++] = at;
    at += b.byteLength;
  }
  offsets[i] = at;
  total = i;
  buf = Buffer.concat(chunks, at);
  cursor = 0;
  const s = subjects(m.prefix);
  subjectOf = Array.from({ length: m.partitions }, (_, p) => s.events(p));
  nc ??= await connect({ servers: m.url, name: `overload-publisher-${m.seed}` });
  send({ type: "ready", count: i, bytes: at, encodeMs: Date.now() - t0 });
}

async function run(m: Extract<ToPublisher, { type: "run" }>): Promise<void> {
  const conn = nc!;
  const end = Math.min(total, cursor + m.n);
  const first = cursor;
  const t0 = Date.now();
  let lastProgress = t0;
  while (cursor < end && Date.now() < m.deadline) {
    const now = Date.now();
    if (now < m.startAt) {
      await new Promise((r) => setTimeout(r, Math.min(TICK_MS, m.startAt - now)));
      continue;
    }
    const due = m.rate > 0 ? Math.floor(((now - m.startAt) / 1000) * m.rate) - (cursor - first) : MAX_PER_TICK;
    const n = Math.min(Math.max(0, due), MAX_PER_TICK, end - cursor);
    for (let k = 0; k < n; k++, cursor++) conn.publish(subjectOf[parts[cursor]!]!, buf.subarray(offsets[cursor]!, offsets[cursor + 1]!));
    await conn.flush();
    if (now - lastProgress >= 250) {
      send({ type: "progress", sent: cursor - first });
      lastProgress = now;
    }
    if (m.rate > 0 && n < MAX_PER_TICK) await new Promise((r) => setTimeout(r, TICK_MS));
  }
  await conn.flush();
  send({ type: "done", sent: cursor - first, ms: Date.now() - t0 });
}

process.on("message", (m: ToPublisher) => {
  const work = m.type === "init" ? init(m)
    : m.type === "run" ? run(m)
    : (async () => {
      await nc?.close();
      process.exit(0);
    })();
  work.catch((err: unknown) => {
    process.stderr.write(`[overload-publisher] ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
});
