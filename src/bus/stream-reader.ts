/**
 * Reads the event stream from its first message to the last one stored when
 * the read starts, with a JetStream ordered consumer (ephemeral, flow
 * controlled, no acknowledgements, restarted by the client on a gap): what
 * training from the shop's own stream reads. The engine's durable consumers
 * are not touched. Bounded: it never waits for events published after it
 * started.
 */
import { type JetStreamClient, type JetStreamManager } from "nats";
import type { Subjects } from "./subjects.js";

export interface StreamMessage {
  /** Stream sequence. */
  seq: number;
  /** The partition, from the subject's last token. */
  partition: number;
  /** The stored bytes (a protobuf `Event` when the publisher was well behaved). */
  data: Uint8Array;
}

export interface ReadStreamOptions {
  /** Called every `progressEvery` messages and at the end with (read, last sequence). */
  onProgress?: (read: number, lastSeq: number) => void;
  progressEvery?: number;
}

/** Hands every message of the event stream up to its last sequence at call time to `each`, in stream order; resolves with the count. */
export async function readEventStream(
  js: JetStreamClient, jsm: JetStreamManager, s: Subjects, each: (m: StreamMessage) => void, o: ReadStreamOptions = {},
): Promise<{ read: number; firstSeq: number; lastSeq: number }> {
  const state = (await jsm.streams.info(s.eventStream)).state;
  const lastSeq = state.last_seq;
  if (state.messages === 0) return { read: 0, firstSeq: 0, lastSeq };
  // An ordered consumer from the first message (giving it a deliver_policy option here made it deliver nothing in nats.js 2.29).
  const consumer = await js.consumers.get(s.eventStream);
  const every = o.progressEvery ?? 5000;
  let read = 0;
  let firstSeq = 0;
  const msgs = await consumer.consume({ max_messages: 1024 });
  try {
    for await (const m of msgs) {
      if (firstSeq === 0) firstSeq = m.seq;
      const dot = m.subject.lastIndexOf(".");
      each({ seq: m.seq, partition: Number(m.subject.slice(dot + 1)), data: m.data });
      read++;
      if (read % every === 0) o.onProgress?.(read, lastSeq);
      if (m.seq >= lastSeq) break;
    }
  } finally {
    await msgs.close();
  }
  o.onProgress?.(read, lastSeq);
  return { read, firstSeq, lastSeq };
}

/**
 * Hands every message of `stream` up to its last sequence at call time to
 * `each` (subject, bytes, sequence), in stream order, with an ordered
 * consumer; resolves with the count. What the training log readers use
 * (src/eval/offpolicy.ts).
 */
export async function readWholeStream(
  js: JetStreamClient, jsm: JetStreamManager, stream: string, each: (subject: string, data: Uint8Array, seq: number) => void,
): Promise<number> {
  const state = (await jsm.streams.info(stream)).state;
  if (state.messages === 0) return 0;
  const consumer = await js.consumers.get(stream);
  const msgs = await consumer.consume({ max_messages: 1024 });
  let read = 0;
  try {
    for await (const m of msgs) {
      each(m.subject, m.data, m.seq);
      read++;
      if (m.seq >= state.last_seq) break;
    }
  } finally {
    await msgs.close();
  }
  return read;
}
