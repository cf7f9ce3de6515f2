/**
 * NATS security: user/password, nkey and TLS (server certificate signed by a
 * test CA, mutual TLS) for the engine and the client, and the least-privilege
 * permission sets of README "Security" (publisher, query client, engine)
 * enforced by a real nats-server. Keys and certificates are generated here
 * with openssl into a temp dir and removed afterwards.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AckPolicy, connect, nkeys, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsPermissions, type NatsServerHandle, type NatsServerOptions } from "../src/bus/nats-server-launcher.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient, type PortraitClientOptions } from "../src/client/portrait-client.js";
import type { EngineOptions } from "../src/config/engine-options.js";
import { Engine } from "../src/engine.js";
import { ErrorCode, PortraitError } from "../src/errors.js";
import { countByUser, expectExactCounts, interleavedViews, removeDir, T0 } from "./helpers/engine.js";
import { tmpDir, waitFor } from "./helpers/nats.js";
import { EventType, pb } from "../src/wire/proto.js";

type Role = "publisher" | "query" | "engine" | "follower";

/**
 * The permission sets of README "Security" (for the default prefix
 * "portrait"), read from README itself: the engine, publisher and query users
 * of its `authorization` block, and the follower of the bullet that lists its
 * subjects. The test runs them as written, so README cannot drift from what
 * is tested.
 */
function readmePermissionSets(): Record<Role, NatsPermissions> {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("### Least-privilege permissions"), readme.indexOf("## Forget and pseudonymisation"));
  const block = /```\n(authorization \{[\s\S]*?)```/.exec(section)?.[1] ?? "";
  const quoted = (text: string) => [...text.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
  const ticked = (text: string) => [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  const sets: Partial<Record<Role, NatsPermissions>> = {};
  for (const [, user, body] of block.matchAll(/\{ user: "(\w+)", password: "\.\.\.", permissions: \{([\s\S]*?)\n {4}\} \}/g)) {
    const list = (key: string) => quoted(new RegExp(`${key}:\\s*\\[([\\s\\S]*?)\\]`).exec(body!)?.[1] ?? "");
    sets[user as Role] = { publish: list("publish"), subscribe: list("subscribe"), ...(/allow_responses: true/.test(body!) ? { allow_responses: true } : {}) };
  }
  const follower = section.slice(section.indexOf("A downstream system that follows forgets"), section.indexOf('(tested as the "follower" user)')).replace(/\s+/g, " ");
  const sub = follower.indexOf(": subscribe ");
  const pub = follower.indexOf(", publish ", sub);
  sets.follower = { publish: ticked(follower.slice(pub)), subscribe: ticked(follower.slice(sub, pub)) };
  expect(Object.keys(sets).sort(), "README's permission sets").toEqual(["engine", "follower", "publisher", "query"]);
  return sets as Record<Role, NatsPermissions>;
}

const PASS = { engine: "engine-pw-1", publisher: "publisher-pw-2", query: "query-pw-3", admin: "admin-pw-4", follower: "follower-pw-5" };

let work: string;
const servers: NatsServerHandle[] = [];
const engines: Engine[] = [];
const clients: PortraitClient[] = [];
const conns: NatsConnection[] = [];

function openssl(args: string[]): void {
  execFileSync("openssl", args, { cwd: work, stdio: ["ignore", "ignore", "pipe"] });
}

/** A CA, and a certificate signed by it: server (SAN IP:127.0.0.1) or client. */
function makeCa(name: string): void {
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-keyout", `${name}.key`, "-out", `${name}.pem`, "-subj", `/CN=portrait test ${name}`]);
}
function makeCert(name: string, ca: string, ext: string): void {
  writeFileSync(join(work, `${name}.ext`), ext);
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`]);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial",
    "-days", "1", "-out", `${name}.pem`, "-extfile", `${name}.ext`]);
}
const file = (name: string): string => join(work, name);

async function startServer(o: NatsServerOptions, log?: string[]): Promise<NatsServerHandle> {
  const s = await startNatsServer({ readyTimeoutMs: 20_000, ...o, ...(log ? { onLog: (l: string) => log.push(l) } : {}) });
  servers.push(s);
  return s;
}

async function startEngine(natsUrl: string, o: EngineOptions): Promise<Engine> {
  const dataDir = o.dataDir ?? tmpDir("portrait-sec-engine");
  try {
    const engine = await Engine.start({
      natsUrl, embeddedNats: "never", partitions: 2, workers: 1, httpPort: -1, logLevel: "silent",
      lstmModel: "off", churnModel: "off", deepfmModel: "off", ...o, dataDir,
    });
    engines.push(engine);
    return engine;
  } catch (err) {
    removeDir(dataDir);
    throw err;
  }
}

async function stopEngine(engine: Engine): Promise<void> {
  await engine.close();
  engines.splice(engines.indexOf(engine), 1);
}

async function client(o: PortraitClientOptions): Promise<PortraitClient> {
  const c = await PortraitClient.connect({ partitions: 2, requestTimeoutMs: 3000, ...o });
  clients.push(c);
  return c;
}

async function expectCode(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<PortraitError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, "expected a rejection").toBeInstanceOf(PortraitError);
  expect((err as PortraitError).code).toBe(code);
  expect((err as PortraitError).message).toMatch(message);
  return err as PortraitError;
}

/** Ingest a few users' events through `c` and read every profile back exactly. */
async function ingestAndQuery(c: PortraitClient, prefix: string): Promise<void> {
  const events = interleavedViews(prefix, 6, 5);
  await c.publishMany(events);
  await expectExactCounts(c, countByUser(events), 30_000);
}

beforeAll(() => {
  work = tmpDir("portrait-sec");
  makeCa("ca");
  makeCa("other-ca");
  makeCert("server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  makeCert("client", "ca", "extendedKeyUsage=clientAuth\n");
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(conns.map((c) => c.close()));
  for (const e of engines) {
    await e.close();
    removeDir(e.config.dataDir);
  }
  await Promise.all(servers.map((s) => s.stop()));
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("security - user/password and nkey", () => {
  let server: NatsServerHandle;
  const engineKey = nkeys.createUser();
  const clientKey = nkeys.createUser();
  const strangerKey = nkeys.createUser();

  beforeAll(async () => {
    for (const [name, kp] of [["engine", engineKey], ["client", clientKey], ["stranger", strangerKey]] as const) {
      writeFileSync(file(`${name}.nk`), `${new TextDecoder().decode(kp.getSeed())}\n`, { mode: 0o600 });
    }
    server = await startServer({
      auth: {
        users: [{ user: "engine", pass: PASS.engine }, { user: "publisher", pass: PASS.publisher }],
        nkeys: [{ nkey: engineKey.getPublicKey() }, { nkey: clientKey.getPublicKey() }],
      },
    });
  });

  it("user/password - the engine ingests and answers; a wrong password is AUTH_FAILED", async () => {
    const prefix = "up";
    await startEngine(server.url, { subjectPrefix: prefix, natsUser: "engine", natsPass: PASS.engine });
    const c = await client({ natsUrl: server.url, subjectPrefix: prefix, natsUser: "publisher", natsPass: PASS.publisher });
    await ingestAndQuery(c, prefix);
    const err = await expectCode(PortraitClient.connect({ natsUrl: server.url, natsUser: "publisher", natsPass: "wrong" }),
      ErrorCode.AUTH_FAILED, /refused the connection with user "publisher" with a password/);
    expect(err.message).not.toContain("wrong");
    await expectCode(PortraitClient.connect({ natsUrl: server.url }), ErrorCode.AUTH_FAILED, /no credentials/);
    await expectCode(startEngine(server.url, { subjectPrefix: "up2", natsUser: "engine", natsPass: "nope" }), ErrorCode.AUTH_FAILED, /Authorization Violation/i);
  });

  it("embedded - with credentials, a secured server that is down is not replaced by an open embedded one", async () => {
    const down = await startNatsServer();
    const url = down.url;
    await down.stop();
    await expect(Engine.start({ natsUrl: url, embeddedNats: "auto", natsUser: "engine", natsPass: PASS.engine, httpPort: -1, logLevel: "silent", dataDir: tmpDir("portrait-sec-down") }))
      .rejects.toMatchObject({ code: ErrorCode.NO_RESPONDERS, message: expect.stringMatching(/no NATS server answers at .*CONNECTION_REFUSED/) });
    // Nothing was started on that port.
    await expect(connect({ servers: url, reconnect: false, timeout: 1000 })).rejects.toMatchObject({ code: "CONNECTION_REFUSED" });
  });

  it("nkey - the engine and the client authenticate with seed files; an unknown nkey is AUTH_FAILED", async () => {
    const prefix = "nk";
    await startEngine(server.url, { subjectPrefix: prefix, natsNkeySeedFile: file("engine.nk") });
    const c = await client({ natsUrl: server.url, subjectPrefix: prefix, natsNkeySeedFile: file("client.nk") });
    await ingestAndQuery(c, prefix);
    const err = await expectCode(PortraitClient.connect({ natsUrl: server.url, natsNkeySeedFile: file("stranger.nk") }),
      ErrorCode.AUTH_FAILED, /refused the connection with the nkey seed in/);
    expect(err.message).not.toContain(new TextDecoder().decode(strangerKey.getSeed()));
    writeFileSync(file("bad.nk"), "not a seed\n");
    await expectCode(PortraitClient.connect({ natsUrl: server.url, natsNkeySeedFile: file("bad.nk") }), ErrorCode.CONFIG, /does not hold a user nkey seed/);
    await expectCode(PortraitClient.connect({ natsUrl: server.url, natsNkeySeedFile: file("missing.nk") }), ErrorCode.CONFIG, /cannot read the nkey seed file .*ENOENT/);
  });
});

describe("security - TLS", () => {
  let server: NatsServerHandle;

  beforeAll(async () => {
    server = await startServer({ tls: { certFile: file("server.pem"), keyFile: file("server.key"), caFile: file("ca.pem"), verify: true } });
  });

  it("mutual TLS - the engine and the client trust the test CA and present client certificates", async () => {
    const prefix = "tls";
    const tls = { natsTlsCaFile: file("ca.pem"), natsTlsCertFile: file("client.pem"), natsTlsKeyFile: file("client.key") };
    await startEngine(server.url, { subjectPrefix: prefix, ...tls });
    const c = await client({ natsUrl: server.url, subjectPrefix: prefix, ...tls });
    await ingestAndQuery(c, prefix);
  });

  it("TLS - a client that does not trust the CA fails with AUTH_FAILED; one without a client certificate gets TIMEOUT with a hint", async () => {
    const cert = { natsTlsCertFile: file("client.pem"), natsTlsKeyFile: file("client.key") };
    await expectCode(PortraitClient.connect({ natsUrl: server.url, ...cert }), ErrorCode.AUTH_FAILED, /TLS with NATS at .* failed: .*pass that CA/);
    await expectCode(PortraitClient.connect({ natsUrl: server.url, natsTlsCaFile: file("other-ca.pem"), ...cert }), ErrorCode.AUTH_FAILED, /TLS with NATS at .* failed/);
    // The server drops it after the handshake; the client only sees silence until its 5 s connect timeout.
    await expectCode(PortraitClient.connect({ natsUrl: server.url, natsTlsCaFile: file("ca.pem") }), ErrorCode.TIMEOUT, /over TLS .*pass --tls-cert and --tls-key/);
    await expectCode(PortraitClient.connect({ natsUrl: server.url, natsTlsCaFile: file("ca.pem"), natsTlsCertFile: file("client.pem") }),
      ErrorCode.CONFIG, /give both tlsCertFile and tlsKeyFile/);
  });
});

describe("security - least-privilege permissions (README sets)", () => {
  const prefix = "portrait";
  const s = subjects(prefix);
  const sets = readmePermissionSets();
  const log: string[] = [];
  let server: NatsServerHandle;
  let admin: NatsConnection;

  beforeAll(async () => {
    server = await startServer({
      auth: {
        users: [
          { user: "engine", pass: PASS.engine, permissions: sets.engine },
          { user: "publisher", pass: PASS.publisher, permissions: sets.publisher },
          { user: "query", pass: PASS.query, permissions: sets.query },
          { user: "follower", pass: PASS.follower, permissions: sets.follower },
          { user: "admin", pass: PASS.admin },
        ],
      },
    }, log);
    admin = await connect({ servers: server.url, user: "admin", pass: PASS.admin });
    conns.push(admin);
  });

  const violations = () => log.filter((l) => /violation/i.test(l));

  it("permissions - the engine runs with its set: ingest, acks, dead letters, catalog, queries, forget with its tombstone, restart", async () => {
    const engine = await startEngine(server.url, { natsUser: "engine", natsPass: PASS.engine });
    const publisher = await client({ natsUrl: server.url, natsUser: "publisher", natsPass: PASS.publisher });
    const query = await client({ natsUrl: server.url, natsUser: "query", natsPass: PASS.query });
    const events = interleavedViews("perm", 6, 5);
    await publisher.publishMany(events);
    await expectExactCounts(query, countByUser(events), 30_000);
    const rec = await query.recommend("perm-u0", { k: 3 });
    expect(rec.knownUser).toBe(true);
    // A poison event is dead-lettered by the engine (publish to <prefix>.dlq.>).
    const js = admin.jetstream();
    await js.publish(s.events(0), new Uint8Array([0xff, 0xff, 0xff]));
    const jsm = await admin.jetstreamManager();
    await waitFor(async () => (await jsm.streams.info(s.dlqStream)).state.messages === 1, { message: "poison event not dead-lettered" });
    // Acks reach JetStream ($JS.ACK...): nothing stays pending.
    await waitFor(async () => {
      const infos = await Promise.all([0, 1].map((p) => jsm.consumers.info(s.eventStream, s.consumer(p))));
      return infos.every((i) => i.num_ack_pending === 0 && i.num_pending === 0);
    }, { message: "events not acknowledged" });
    // Catalog upserts are stored by the engine (publish to <prefix>.catalog.item.*) and replayed at restart (ordered consumer).
    const upsert = new PortraitClient(admin, { partitions: 2 });
    await upsert.upsertCatalog({ itemId: "sku-1", categoryId: "c1", brand: "b", price: 10, currency: "GBP", title: "a thing" });
    await waitFor(async () => (await jsm.streams.info(s.catalogStream)).state.messages === 1, { message: "catalog upsert not stored" });
    // A forget (by an operator user) stores its tombstone with a JetStream publish to <prefix>.tombstones.
    const forgot = await upsert.forget("perm-u1");
    expect(forgot.existed).toBe(true);
    const tomb = await jsm.streams.getMessage(s.tombstoneStream, { last_by_subj: s.tombstones });
    expect(tomb.header.get("Nats-Msg-Id")).toBe(forgot.tombstoneEventId);
    // A downstream follower reads it with its own durable consumer, within its set.
    const follower = await connect({ servers: server.url, user: "follower", pass: PASS.follower });
    conns.push(follower);
    await (await follower.jetstreamManager()).consumers.add(s.tombstoneStream, { durable_name: "crm", ack_policy: AckPolicy.Explicit });
    const followed = await (await follower.jetstream().consumers.get(s.tombstoneStream, "crm")).next({ expires: 5000 });
    expect(followed && pb.Tombstone.decode(followed.data)).toMatchObject({ userId: "perm-u1", tombstoneEventId: forgot.tombstoneEventId });
    await followed!.ackAck();
    const dataDir = engine.config.dataDir;
    await stopEngine(engine);
    const again = await startEngine(server.url, { natsUser: "engine", natsPass: PASS.engine, dataDir });
    expect((await query.getProfile("perm-u0")).eventsApplied).toBe(5);
    expect(again.config.dataDir).toBe(dataDir);
    expect(violations()).toEqual([]);
  });

  it("permissions - the publisher can publish events but cannot subscribe to them nor call the API", async () => {
    const publisher = await client({ natsUrl: server.url, natsUser: "publisher", natsPass: PASS.publisher });
    const ack = await publisher.publish({ eventId: "pub-1", userId: "pub-u", type: EventType.VIEW, timestampMs: T0, itemId: "i1" });
    expect(ack.stream).toBe(s.eventStream);
    const sub = publisher.nc.subscribe(s.eventsWildcard);
    const subErr = await (async () => {
      for await (const m of sub) void m;
    })().then(() => undefined, (e: unknown) => e);
    expect(String(subErr)).toMatch(/Permissions Violation for Subscription to "portrait\.events\.\*"/);
    await expectCode(publisher.getProfile("pub-u"), ErrorCode.AUTH_FAILED, /Permissions Violation for Publish to "portrait\.api\.profile\.get"/);
    await expectCode(publisher.recommend("pub-u"), ErrorCode.AUTH_FAILED, /Permissions Violation for Publish to "portrait\.api\.recommend"/);
  });

  it("permissions - the query client can call the API but cannot publish events, upsert the catalog or forget users", async () => {
    const query = await client({ natsUrl: server.url, natsUser: "query", natsPass: PASS.query });
    await expectCode(query.getProfile("nobody"), ErrorCode.UNKNOWN_USER, /nobody/);
    await expectCode(query.publish({ eventId: "q-1", userId: "q-u", type: EventType.VIEW, timestampMs: T0, itemId: "i1" }),
      ErrorCode.AUTH_FAILED, /Permissions Violation for Publish to "portrait\.events\.\d"/);
    await expectCode(query.upsertCatalog({ itemId: "x", categoryId: "c" }), ErrorCode.AUTH_FAILED, /Permissions Violation for Publish to "portrait\.api\.catalog\.upsert"/);
    await expectCode(query.forget("q-u"), ErrorCode.AUTH_FAILED, /Permissions Violation for Publish to "portrait\.api\.user\.forget"/);
  });
});
