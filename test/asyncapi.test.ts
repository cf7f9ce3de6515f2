/**
 * docs/asyncapi.yaml against its sources: the subjects (src/bus/subjects.ts),
 * the messages of proto/portrait/v1, the endpoints a running engine
 * registers, the error codes, the dead-letter reasons and the header names.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { DLQ_HEADERS, ERROR_CODE_HEADER } from "../src/wire/headers.js";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { AUDIENCE_OPS, subjects, type Subjects } from "../src/bus/subjects.js";
import type { Engine } from "../src/engine.js";
import { ErrorCode } from "../src/errors.js";
import { DeadLetterReason } from "../src/wire/event-validation.js";
import { pb } from "../src/wire/proto.js";
import { removeDir, startTestEngine } from "./helpers/engine.js";
import { startTestNats } from "./helpers/nats.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

interface Doc {
  channels: Record<string, { address: string; parameters?: Record<string, { enum?: string[] }>; messages: Record<string, { $ref: string }> }>;
  operations: Record<string, { action: string; channel: { $ref: string }; reply?: unknown }>;
  components: { messages: Record<string, { "x-proto-message"?: string; headers?: { properties: Record<string, { enum?: string[] }> } }> };
}
const doc = parse(readFileSync(join(ROOT, "docs/asyncapi.yaml"), "utf8")) as Doc;
const addresses = new Map(Object.entries(doc.channels).map(([name, c]) => [c.address, name]));

/** Every name of `Subjects`, sorted into the subjects a document must have and the names that are not subjects. */
function expectedAddresses(s: Subjects): string[] {
  // Stream and bucket names (the model registry's Object Store and KV buckets are read through JetStream's own APIs).
  const notSubjects = new Set(["prefix", "eventStream", "dlqStream", "tombstoneStream", "catalogStream", "serviceName", "consumer", "modelObjects", "modelPromoted", "audienceStream", "audienceBucket", "engineBucket", "feedbackStream"]);
  const out: string[] = [];
  for (const key of Object.keys(s) as (keyof Subjects)[]) {
    if (notSubjects.has(key)) continue;
    const v = s[key];
    if (key === "events" || key === "eventsWildcard") out.push(s.eventsWildcard.replace("*", "{partition}"));
    else if (key === "dlq" || key === "dlqWildcard") out.push(s.dlqWildcard.replace(">", "{reason}"));
    else if (key === "catalogItem" || key === "catalogWildcard") out.push(s.catalogWildcard.replace("*", "{itemHex}"));
    else if (key === "audienceEvents" || key === "audienceWildcard") out.push(s.audienceWildcard.replace("*", "{audienceId}"));
    else if (key === "feedback" || key === "feedbackWildcard") out.push(s.feedbackWildcard.replace("*", "{kind}"));
    else if (key === "audienceApi") out.push(...AUDIENCE_OPS.map((op) => s.audienceApi(op)));
    else if (typeof v === "string") out.push(v);
    else throw new Error(`Subjects.${key} is new: say in this test whether it is a subject, and document it in docs/asyncapi.yaml`);
  }
  return [...new Set(out)].sort();
}

/** The messages of the proto files that travel alone (no other message has a field of their type). */
function rootProtoMessages(): string[] {
  const names: string[] = [];
  const used = new Set<string>();
  for (const f of ["event.proto", "query.proto", "catalog.proto", "audience.proto"]) {
    const text = readFileSync(join(ROOT, "proto/portrait/v1", f), "utf8");
    for (const m of text.matchAll(/^message (\w+)/gm)) names.push(m[1]!);
    for (const m of text.matchAll(/^\s+(?:repeated\s+)?([A-Z]\w*)\s+\w+\s*=\s*\d+;/gm)) used.add(m[1]!);
  }
  return names.filter((n) => !used.has(n)).sort();
}

let nats: NatsServerHandle;
let engine: Engine;

beforeAll(async () => {
  nats = await startTestNats();
  engine = await startTestEngine(nats.url, { subjectPrefix: "portrait" });
});

afterAll(async () => {
  await engine?.close();
  await nats?.stop();
  if (engine) removeDir(engine.config.dataDir);
});

describe("AsyncAPI document", () => {
  it("asyncapi - has a channel for every subject, and nothing else", () => {
    expect([...addresses.keys()].sort()).toEqual(expectedAddresses(subjects("portrait")));
  });

  it("asyncapi - every endpoint a running engine registers is a request-reply operation", async () => {
    const { connect } = await import("nats");
    const nc = await connect({ servers: nats.url });
    try {
      const info = await nc.services.client().info("portrait");
      const registered: string[] = [];
      for await (const i of info) for (const e of i.endpoints) registered.push(e.subject);
      expect(registered.length).toBeGreaterThan(0);
      for (const subject of registered) {
        const channel = addresses.get(subject);
        expect(channel, `endpoint ${subject} has no channel`).toBeDefined();
        const op = Object.values(doc.operations).find((o) => o.channel.$ref === `#/channels/${channel}`);
        expect(op?.reply, `endpoint ${subject} has no request-reply operation`).toBeDefined();
      }
    } finally {
      await nc.close();
    }
  });

  it("asyncapi - names every message that travels alone, and only messages the proto defines", () => {
    const named = new Set(Object.values(doc.components.messages).map((m) => m["x-proto-message"]).filter((x) => x !== undefined));
    for (const n of named) expect(Object.hasOwn(pb, n!.replace("portrait.v1.", "")), `${n} is not in proto/`).toBe(true);
    expect(rootProtoMessages().map((n) => `portrait.v1.${n}`).filter((n) => !named.has(n))).toEqual([]);
  });

  it("asyncapi - error codes, dead-letter reasons and header names are the code's", () => {
    const err = doc.components.messages.ErrorReply!.headers!.properties;
    expect(err[ERROR_CODE_HEADER]?.enum?.slice().sort()).toEqual(Object.keys(ErrorCode).sort());
    expect(doc.channels.deadLetters!.parameters!.reason!.enum!.slice().sort()).toEqual(Object.keys(DeadLetterReason).sort());
    expect(Object.keys(doc.components.messages.DeadLetter!.headers!.properties).sort()).toEqual(Object.values(DLQ_HEADERS).sort());
  });
});
