/**
 * publishOutbound (src/bus/streams.ts) against a real nats-server: every
 * message stored once by its id (a second publish of the same ids adds
 * nothing), and a subject no stream captures is a rejection, not a success.
 */
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishOutbound } from "../src/bus/streams.js";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { startTestNats } from "./helpers/nats.js";

describe("publishOutbound", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startTestNats();
    nc = await connect({ servers: server.url, noAsyncTraces: true });
    await (await nc.jetstreamManager()).streams.add({ name: "OUTBOUND_T", subjects: ["obt.>"], duplicate_window: 60_000_000_000 });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("stores each message once by its id, and rejects a subject without a stream", async () => {
    const js = nc.jetstream();
    const msgs = Array.from({ length: 600 }, (_, i) => ({ subject: `obt.a${i % 7}`, msgId: `m${i}`, data: new TextEncoder().encode(`x${i}`) }));
    await publishOutbound(js, msgs);
    await publishOutbound(js, msgs.slice(0, 300));
    const info = await (await nc.jetstreamManager()).streams.info("OUTBOUND_T");
    expect(info.state.messages).toBe(600);
    const got = await (await nc.jetstreamManager()).streams.getMessage("OUTBOUND_T", { seq: 600 });
    expect(got.header.get("Nats-Msg-Id")).toBe("m599");
    await expect(publishOutbound(js, [{ subject: "nostream.x", msgId: "n1", data: new Uint8Array(1) }])).rejects.toThrow(/refused|503/);
  }, 60_000);
});
