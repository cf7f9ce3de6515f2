/**
 * Request-reply query endpoints, registered with the NATS services framework
 * (discovery with `$SRV.PING|INFO|STATS`, per-endpoint stats for free).
 *
 * Errors travel as NATS service errors (`Nats-Service-Error-Code`,
 * `Nats-Service-Error`) plus `Portrait-Error-Code` with the stable string
 * code, and an ErrorReply body in the request's encoding.
 */
import { headers, type NatsConnection, type Service, type ServiceMsg } from "nats";
import { BadRequestError, ErrorCode, OverloadedError, PortraitError, errorStatus, toWire, type WireError } from "../errors.js";
import { partitionOf } from "../bus/partition.js";
import type { Subjects } from "../bus/subjects.js";
import type { Logger } from "../obs/logger.js";
import type { EngineMetrics } from "../obs/metrics.js";
import type { ProfileResult, ReplyEncoding } from "../shard/shard-protocol.js";
import type { RecommendQuery, Recommender } from "../recs/recommender.js";
import { pb, plainBytes } from "../wire/proto.js";

/** Header carrying the stable string error code of a failed request. */
export const ERROR_CODE_HEADER = "Portrait-Error-Code";

export interface ProfileSource {
  getProfile(partition: number, userId: string, asOfMs: number, encoding: ReplyEncoding): Promise<ProfileResult>;
}

/** Catalog upserts: validate and apply (the recs worker), then keep (the catalog stream). */
export interface CatalogSink {
  upsert(bytes: Uint8Array): Promise<{ ok: true } | { ok: false; error: WireError }>;
  /** Stores an applied upsert durably (replayed at start). */
  store(bytes: Uint8Array): Promise<void>;
}

/** Forgets a user everywhere the engine keeps them, then publishes the tombstone (the composition root wires it). */
export interface ForgetSink {
  forget(userId: string): Promise<{ existed: boolean; tombstoneEventId: string }>;
}

export interface ApiOptions {
  partitions: number;
  /** Most queries in flight at once; above it queries get OVERLOADED. */
  maxInflightQueries: number;
  /** Most recommendations in flight at once (they cost ~4 ms of CPU each); above it they get OVERLOADED at once. */
  maxInflightRecommends: number;
  version: string;
}

const encoder = new TextEncoder();
/** The earliest as-of time a query may name: the floor event timestamps have too (decayed scores grow without bound before a user's events). */
const MIN_AS_OF_MS = Date.UTC(2000, 0, 1);
const decoder = new TextDecoder();

function encodingOf(data: Uint8Array): ReplyEncoding {
  return data.length > 0 && data[0] === 0x7b /* { */ ? "json" : "protobuf";
}

export function encodeError(e: WireError, encoding: ReplyEncoding): Uint8Array {
  return encoding === "json" ? encoder.encode(JSON.stringify(e)) : pb.ErrorReply.encode(e).finish();
}

interface ProfileQuery {
  userId: string;
  asOfMs: number;
}

export function parseProfileRequest(data: Uint8Array, encoding: ReplyEncoding): ProfileQuery {
  let userId: unknown;
  let asOfMs: unknown;
  try {
    if (encoding === "json") {
      const o = JSON.parse(decoder.decode(data)) as Record<string, unknown>;
      userId = o.userId ?? o.user_id;
      asOfMs = o.asOfMs ?? o.as_of_ms ?? 0;
    } else {
      const r = pb.ProfileRequest.decode(plainBytes(data));
      userId = r.userId;
      asOfMs = r.asOfMs;
    }
  } catch (err) {
    throw new BadRequestError(`request is not a ProfileRequest (protobuf or JSON): ${(err as Error).message}`);
  }
  if (typeof userId !== "string" || userId === "" || userId.length > 256) {
    throw new BadRequestError("userId must be a non-empty string of at most 256 characters");
  }
  if (typeof asOfMs !== "number" || !Number.isInteger(asOfMs) || asOfMs < 0 || (asOfMs > 0 && asOfMs < MIN_AS_OF_MS)) {
    throw new BadRequestError("asOfMs must be 0 (the engine's clock) or a Unix epoch ms from 2000-01-01 on");
  }
  return { userId, asOfMs };
}

export function parseForgetRequest(data: Uint8Array, encoding: ReplyEncoding): string {
  let userId: unknown;
  try {
    if (encoding === "json") {
      const o = JSON.parse(decoder.decode(data)) as Record<string, unknown>;
      userId = o.userId ?? o.user_id;
    } else {
      userId = pb.ForgetRequest.decode(plainBytes(data)).userId;
    }
  } catch (err) {
    throw new BadRequestError(`request is not a ForgetRequest (protobuf or JSON): ${(err as Error).message}`);
  }
  if (typeof userId !== "string" || userId === "" || userId.length > 256) {
    throw new BadRequestError("userId must be a non-empty string of at most 256 characters");
  }
  return userId;
}

const MAX_EXCLUDE = 1000;

function asOf(v: number): number {
  if (v > 0 && v < MIN_AS_OF_MS) throw new BadRequestError("asOfMs must be 0 (the engine's clock) or a Unix epoch ms from 2000-01-01 on");
  return v;
}

export function parseRecommendRequest(data: Uint8Array, encoding: ReplyEncoding): RecommendQuery {
  let o: Record<string, unknown>;
  try {
    o = encoding === "json"
      ? (JSON.parse(decoder.decode(data)) as Record<string, unknown>)
      : (pb.RecommendRequest.toObject(pb.RecommendRequest.decode(plainBytes(data)), { longs: Number, defaults: true, arrays: true }) as Record<string, unknown>);
  } catch (err) {
    throw new BadRequestError(`request is not a RecommendRequest (protobuf or JSON): ${(err as Error).message}`);
  }
  if (o === null || typeof o !== "object") throw new BadRequestError("request is not a RecommendRequest object");
  const get = (a: string, b: string, d: unknown) => o[a] ?? o[b] ?? d;
  const userId = get("userId", "user_id", undefined);
  if (typeof userId !== "string" || userId === "" || userId.length > 256) throw new BadRequestError("userId must be a non-empty string of at most 256 characters");
  const int = (name: string, v: unknown, max: number): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) throw new BadRequestError(`${name} must be an integer in [0, ${max}]`);
    return v;
  };
  const text = (name: string, v: unknown, max: number): string => {
    if (typeof v !== "string" || v.length > max) throw new BadRequestError(`${name} must be a string of at most ${max} characters`);
    return v;
  };
  const exclude = get("excludeItemIds", "exclude_item_ids", []);
  if (!Array.isArray(exclude) || exclude.length > MAX_EXCLUDE || !exclude.every((x) => typeof x === "string" && x.length <= 256)) {
    throw new BadRequestError(`excludeItemIds must be at most ${MAX_EXCLUDE} item ids`);
  }
  const k = int("k", get("k", "k", 0), 100);
  return {
    userId,
    k: k === 0 ? 10 : k,
    page: text("page", get("page", "page", ""), 64),
    categoryId: text("categoryId", get("categoryId", "category_id", ""), 256),
    exclude: exclude as string[],
    asOfMs: asOf(int("asOfMs", get("asOfMs", "as_of_ms", 0), Number.MAX_SAFE_INTEGER)),
    candidates: int("candidates", get("candidates", "candidates", 0), 2000),
  };
}

export class QueryApi {
  readonly #service: Service;
  #inflight = 0;
  #inflightRecommends = 0;

  private constructor(service: Service) {
    this.#service = service;
  }

  static async start(
    nc: NatsConnection, s: Subjects, source: ProfileSource, metrics: EngineMetrics, log: Logger, o: ApiOptions,
    extra: { recommender?: Recommender; catalog?: CatalogSink; forget?: ForgetSink } = {},
  ): Promise<QueryApi> {
    const service = await nc.services.add({
      name: s.serviceName,
      version: o.version,
      description: "Portrait user-profile queries",
      queue: "portrait",
    });
    const api = new QueryApi(service);
    const alog = log.child({ component: "api" });
    if (extra.recommender !== undefined) {
      const rec = extra.recommender;
      service.addEndpoint("recommend", {
        subject: s.recommend,
        handler: (err, msg) => {
          if (err) {
            alog.error({ err }, "recommend endpoint failed");
            return;
          }
          void api.#recommend(msg, rec, metrics, alog, o).catch((e) => alog.error({ err: e }, "recommend reply failed"));
        },
      });
    }
    if (extra.catalog !== undefined) {
      const sink = extra.catalog;
      service.addEndpoint("catalog-upsert", {
        subject: s.catalogUpsert,
        handler: (err, msg) => {
          if (err) {
            alog.error({ err }, "catalog endpoint failed");
            return;
          }
          void api.#catalogUpsert(msg, sink, metrics, alog).catch((e) => alog.error({ err: e }, "catalog reply failed"));
        },
      });
    }
    if (extra.forget !== undefined) {
      const sink = extra.forget;
      service.addEndpoint("user-forget", {
        subject: s.forget,
        handler: (err, msg) => {
          if (err) {
            alog.error({ err }, "forget endpoint failed");
            return;
          }
          void api.#forget(msg, sink, metrics, alog, o).catch((e) => alog.error({ err: e }, "forget reply failed"));
        },
      });
    }
    service.addEndpoint("profile-get", {
      subject: s.profileGet,
      handler: (err, msg) => {
        if (err) {
          alog.error({ err }, "profile endpoint failed");
          return;
        }
        void api.#profileGet(msg, source, metrics, alog, o).catch((e) => alog.error({ err: e }, "profile reply failed"));
      },
    });
    return api;
  }

  async #profileGet(msg: ServiceMsg, source: ProfileSource, metrics: EngineMetrics, log: Logger, o: ApiOptions): Promise<void> {
    const t0 = performance.now();
    const encoding = encodingOf(msg.data);
    let code: string = "OK";
    try {
      if (this.#inflight >= o.maxInflightQueries) throw new OverloadedError(`more than ${o.maxInflightQueries} queries in flight`);
      this.#inflight++;
      try {
        const q = parseProfileRequest(msg.data, encoding);
        const r = await source.getProfile(partitionOf(q.userId, o.partitions), q.userId, q.asOfMs, encoding);
        if (r.ok) {
          msg.respond(r.body);
        } else {
          code = r.error.code;
          respondError(msg, r.error, encoding);
        }
      } finally {
        this.#inflight--;
      }
    } catch (err) {
      const w = toWire(err);
      code = w.code;
      if (!(err instanceof PortraitError)) log.error({ err }, "profile query failed");
      respondError(msg, w, encoding);
    } finally {
      metrics.requests.inc({ endpoint: "profile.get", code });
      metrics.requestSeconds.observe({ endpoint: "profile.get" }, (performance.now() - t0) / 1000);
    }
  }

  async #recommend(msg: ServiceMsg, rec: Recommender, metrics: EngineMetrics, log: Logger, o: ApiOptions): Promise<void> {
    const t0 = performance.now();
    const encoding = encodingOf(msg.data);
    let code: string = "OK";
    try {
      if (this.#inflight >= o.maxInflightQueries) throw new OverloadedError(`more than ${o.maxInflightQueries} queries in flight`);
      if (this.#inflightRecommends >= o.maxInflightRecommends) throw new OverloadedError(`more than ${o.maxInflightRecommends} recommendations in flight`);
      this.#inflight++;
      this.#inflightRecommends++;
      try {
        const q = parseRecommendRequest(msg.data, encoding);
        const r = await rec.recommend(q);
        msg.respond(encoding === "json" ? encoder.encode(JSON.stringify(r)) : pb.RecommendReply.encode(r).finish());
      } finally {
        this.#inflight--;
        this.#inflightRecommends--;
      }
    } catch (err) {
      const w = toWire(err);
      code = w.code;
      if (!(err instanceof PortraitError)) log.error({ err }, "recommend failed");
      respondError(msg, w, encoding);
    } finally {
      metrics.requests.inc({ endpoint: "recommend", code });
      metrics.requestSeconds.observe({ endpoint: "recommend" }, (performance.now() - t0) / 1000);
    }
  }

  async #forget(msg: ServiceMsg, sink: ForgetSink, metrics: EngineMetrics, log: Logger, o: ApiOptions): Promise<void> {
    const t0 = performance.now();
    const encoding = encodingOf(msg.data);
    let code: string = "OK";
    try {
      if (this.#inflight >= o.maxInflightQueries) throw new OverloadedError(`more than ${o.maxInflightQueries} queries in flight`);
      this.#inflight++;
      try {
        const r = await sink.forget(parseForgetRequest(msg.data, encoding));
        msg.respond(encoding === "json" ? encoder.encode(JSON.stringify(r)) : pb.ForgetReply.encode(r).finish());
      } finally {
        this.#inflight--;
      }
    } catch (err) {
      const w = toWire(err);
      code = w.code;
      if (!(err instanceof PortraitError)) log.error({ err }, "forget failed");
      respondError(msg, w, encoding);
    } finally {
      metrics.requests.inc({ endpoint: "user.forget", code });
      metrics.requestSeconds.observe({ endpoint: "user.forget" }, (performance.now() - t0) / 1000);
    }
  }

  async #catalogUpsert(msg: ServiceMsg, sink: CatalogSink, metrics: EngineMetrics, log: Logger): Promise<void> {
    const t0 = performance.now();
    let code: string = "OK";
    try {
      const r = await sink.upsert(msg.data);
      if (!r.ok) throw new PortraitError(r.error.code, r.error.message);
      await sink.store(msg.data);
      msg.respond(new Uint8Array(0));
    } catch (err) {
      const w = toWire(err);
      code = w.code;
      if (!(err instanceof PortraitError)) log.error({ err }, "catalog upsert failed");
      respondError(msg, w, "protobuf");
    } finally {
      metrics.requests.inc({ endpoint: "catalog.upsert", code });
      metrics.requestSeconds.observe({ endpoint: "catalog.upsert" }, (performance.now() - t0) / 1000);
    }
  }

  async stop(): Promise<void> {
    await this.#service.stop();
  }
}

function respondError(msg: ServiceMsg, e: WireError, encoding: ReplyEncoding): void {
  const h = headers();
  h.set(ERROR_CODE_HEADER, e.code);
  msg.respondError(errorStatus[e.code] ?? errorStatus[ErrorCode.INTERNAL], e.message, encodeError(e, encoding), { headers: h });
}
