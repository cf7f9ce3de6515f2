import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { connect, StorageType, type NatsConnection } from "nats";
import { ErrorCode, PortraitError } from "../src/errors.js";
import {
  findNatsServerBinary,
  probeNats,
  startNatsServer,
  type NatsServerHandle,
} from "../src/bus/nats-server-launcher.js";
import { startTestNats, tmpDir, waitFor } from "./helpers/nats.js";

const servers: NatsServerHandle[] = [];
const conns: NatsConnection[] = [];
const dirs: string[] = [];

async function started(h: Promise<NatsServerHandle>): Promise<NatsServerHandle> {
  const s = await h;
  servers.push(s);
  return s;
}
async function connected(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnect: false });
  conns.push(nc);
  return nc;
}

afterAll(async () => {
  await Promise.all(conns.map((nc) => (nc.isClosed() ? undefined : nc.close().catch(() => undefined))));
  await Promise.all(servers.map((s) => s.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("bus - nats-server launcher", () => {
  it("bus - nats-server launcher: starts on a free port with JetStream working", async () => {
    const s = await started(startTestNats());
    expect(s.port).toBeGreaterThan(0);
    expect(s.port).not.toBe(4222);
    expect(s.url).toBe(`nats://127.0.0.1:${s.port}`);
    expect(await probeNats(s.url)).toBe(true);

    const nc = await connected(s.url);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "LAUNCH", subjects: ["launch.>"], storage: StorageType.File });
    const ack = await nc.jetstream().publish("launch.a", "hello");
    expect(ack.stream).toBe("LAUNCH");
    expect(ack.seq).toBe(1);
    expect(ack.duplicate).toBe(false);
  });

  it("bus - nats-server launcher: restart keeps a stream's messages and the same port", async () => {
    const storeDir = tmpDir("portrait-launcher-store");
    dirs.push(storeDir);
    const s = await started(startNatsServer({ storeDir }));
    const { port, url } = s;
    const firstPid = s.pid;

    const nc = await connected(url);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "KEEP", subjects: ["keep.>"], storage: StorageType.File });
    const js = nc.jetstream();
    for (let i = 0; i < 3; i++) await js.publish(`keep.${i}`, `m${i}`);
    await nc.close();

    await s.restart();
    expect(s.port).toBe(port);
    expect(s.url).toBe(url);
    expect(s.pid).not.toBe(firstPid);

    const nc2 = await connected(url);
    const info = await (await nc2.jetstreamManager()).streams.info("KEEP");
    expect(info.state.messages).toBe(3);
    await nc2.close();

    // After a crash (SIGKILL) restart recovers the same data too.
    s.signal("SIGKILL");
    expect(await s.exited).toEqual({ code: null, signal: "SIGKILL" });
    expect(await probeNats(url)).toBe(false);
    await s.restart();
    const nc3 = await connected(url);
    const info3 = await (await nc3.jetstreamManager()).streams.info("KEEP");
    expect(info3.state.messages).toBe(3);
    await nc3.close();

    await s.stop();
    // A caller-given store dir is kept.
    expect(existsSync(join(storeDir, "jetstream"))).toBe(true);
  });

  it("bus - nats-server launcher: stop is idempotent and the port stops answering", async () => {
    const s = await started(startTestNats());
    const store = s.storeDir;
    expect(existsSync(store)).toBe(true);
    await Promise.all([s.stop(), s.stop()]);
    await s.stop();
    const exit = await s.exited;
    expect(exit.code !== null || exit.signal !== null).toBe(true);
    expect(await probeNats(s.url)).toBe(false);
    expect(existsSync(store)).toBe(false);
    await expect(s.restart()).rejects.toBeInstanceOf(PortraitError);
  });

  it("bus - nats-server launcher: stop ends a SIGSTOPped server promptly", async () => {
    const s = await started(startTestNats());
    s.signal("SIGSTOP");
    const t0 = Date.now();
    await s.stop();
    expect(Date.now() - t0).toBeLessThan(4_000);
    expect(await probeNats(s.url)).toBe(false);
  });

  it("bus - nats-server launcher: probeNats is false for a port with nothing", async () => {
    // A port that just answered and was stopped is very unlikely to be reused at once.
    const s = await started(startTestNats());
    const url = s.url;
    await s.stop();
    expect(await probeNats(url, 300)).toBe(false);
    expect(await probeNats("nats://127.0.0.1:1", 300)).toBe(false);
  });

  it("bus - nats-server launcher: a server that cannot start rejects with its log lines", async () => {
    const s = await started(startTestNats());
    const err = await startNatsServer({ port: s.port, readyTimeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortraitError);
    expect((err as PortraitError).code).toBe(ErrorCode.INTERNAL);
    expect((err as PortraitError).message).toMatch(/address already in use/);

    const bad = await startNatsServer({ extraConfig: "bogus {" }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(PortraitError);
    expect((bad as PortraitError).message).toMatch(/exited before becoming ready[\s\S]*Parse error/);
  });

  it("bus - nats-server launcher: extraConfig is applied (authorization)", async () => {
    const s = await started(startTestNats('authorization { token: "s3cret" }'));
    expect(await probeNats(s.url)).toBe(true); // INFO comes before auth
    await expect(connect({ servers: s.url, reconnect: false })).rejects.toThrow(/authorization/i);
    const nc = await connect({ servers: s.url, token: "s3cret", reconnect: false });
    conns.push(nc);
    await nc.flush();
    expect(nc.isClosed()).toBe(false);
  });

  it("bus - nats-server launcher: missing binary throws NATS_SERVER_NOT_FOUND mentioning apt-get", () => {
    let caught: unknown;
    try {
      findNatsServerBinary("/nonexistent/nats-server");
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(PortraitError);
    expect((caught as PortraitError).code).toBe(ErrorCode.NATS_SERVER_NOT_FOUND);
    expect((caught as PortraitError).message).toMatch(/apt-get install nats-server/);
    expect((caught as PortraitError).message).toContain("/nonexistent/nats-server");
    expect(findNatsServerBinary()).toMatch(/^\/.*nats-server$/);
  });

  it("bus - nats-server launcher: waitFor polls a condition and reports the last value on timeout", async () => {
    let n = 0;
    expect(await waitFor(() => ++n >= 3 && n)).toBe(3);
    await expect(waitFor(() => 0, { timeoutMs: 60, message: "never" })).rejects.toThrow(/never .*last value: 0/);
  });
});
