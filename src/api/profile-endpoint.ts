/**
 * Request-reply query endpoints, registered with the NATS services framework
 * (discovery with `$SRV.PING|INFO|STATS`, per-endpoint stats for free).
 *
 * Errors travel as NATS service errors (`Nats-Service-Error-Code`,
 * `Nats-Service-Error`) plus `Portrait-Error-Code` with the stable string
 * code, and an ErrorReply body in the request's encoding.
 */
import { headers, type Msg, type NatsConnection, type Service, type ServiceMsg } from "nats";
import { BadRequestError, ErrorCode, OverloadedError, PortraitError, UnavailableError, errorStatus, fromWire, toWire, type WireError } from "../errors.js";
import { partitionOf } from "../wire/partition.js";
import { AUDIENCE_OPS, type Subjects } from "../bus/subjects.js";
import type { AudienceAdmin } from "./audience-admin.js";
import type { Logger } from "../obs/logger.js";
import type { EngineMetrics } from "../obs/metrics.js";
import type { ProfileResult, QueryDeadline, ReplyEncoding } from "../contracts.js";
import type { RecommendQuery, Recommender } from "../recs/recommender.js";
import { ERROR_CODE_HEADER, RETRY_AFTER_HEADER } from "../wire/headers.js";
import { pb, plainBytes } from "../wire/proto.js";
import { asyncEndpointStats, type EndpointStats } from "./service-stats.js";

export interface ProfileSource {
  getProfile(partition: number, userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline, explain?: boolean): Promise<ProfileResult>;
}

/** Catalog upserts: validate and apply (the recs worker), then keep (the catalog stream). */
export interface CatalogSink {
  upsert(bytes: Uint8Array): Promise<{ ok: true } | { ok: false; error: WireError }>;
  /** Stores an applied upsert durably (replayed at start). */
  store(bytes: Uint8Array): Promise<void>;
}

/** Forgets a user everywhere the engine keeps them, then stores the tombstone in its stream (PUBLISH_FAILED when it cannot); the composition root wires it. */
export interface ForgetSink {
  forget(userId: string): Promise<{ existed: boolean; tombstoneEventId: string; mergedIdsErased?: number }>;
}

export interface ApiOptions {
  partitions: number;
  /** Most queries in flight at once; above it queries get OVERLOADED. */
  maxInflightQueries: number;
  /** Most recommendations in flight at once (they cost ~4 ms of CPU each); above it they get OVERLOADED at once. */
  maxInflightRecommends: number;
  /**
   * Most time a profile or recommend query may spend in the engine, from its
   * arrival to its answer, ms: past it the query gets OVERLOADED (and a shard
   * that reaches it later skips it).
   */
  maxQueryWaitMs: number;
  version: string;
  /** Cluster mode (README "Scale-out"): which node answers for a partition. Absent: this engine answers every query. */
  route?: QueryRoute | undefined;
}

/**
 * Cluster mode: where a profile or recommend query of a partition is
 * answered. The public subjects are served by every node (one queue group)
 * and forwarded to the owner's own subjects; a node answers from its own
 * state only while it serves the partition under a valid lease.
 */
export interface QueryRoute {
  /** This node's own request subjects (`<prefix>.node.<id>.profile.get|recommend`). */
  readonly nodeSubjects: { profile: string; recommend: string };
  /** "local": answer here; a subject base: forward there (`<base>.profile.get|recommend`); else UNAVAILABLE with its hint. */
  decide(partition: number): { local: true } | { forward: { profile: string; recommend: string }; timeoutMs: number } | { unavailable: string; retryAfterMs: number };
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
  /** Explain each served prediction. */
  explain: boolean;
}

export function parseProfileRequest(data: Uint8Array, encoding: ReplyEncoding): ProfileQuery {
  let userId: unknown;
  let asOfMs: unknown;
  let explain: unknown = false;
  try {
    if (encoding === "json") {
      const o = JSON.parse(decoder.decode(data)) as Record<string, unknown>;
      userId = o.userId ?? o.user_id;
      asOfMs = o.asOfMs ?? o.as_of_ms ?? 0;
      explain = o.explain ?? false;
    } else {
      const r = pb.ProfileRequest.decode(plainBytes(data));
      userId = r.userId;
      asOfMs = r.asOfMs;
      explain = r.explain;
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
  if (typeof explain !== "boolean") throw new BadRequestError("explain must be true or false");
  return { userId, asOfMs, explain };
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

/** Which in-flight bounds a request counts against: none, the query bound, or the query and the recommendation bounds. */
type Bound = "none" | "query" | "recommend";

type Work = (msg: ServiceMsg, encoding: ReplyEncoding, deadline: QueryDeadline | undefined) => Promise<Uint8Array | Forwarded | Refused>;

/** A typed error answer returned rather than thrown (a shard's UNKNOWN_USER, say: no Error and its stack to build per lookup). */
interface Refused {
  refused: WireError;
}

/** A reply forwarded from the owner node, passed on as it came (body and headers, an error reply included). */
interface Forwarded {
  forwarded: Msg;
}

/** The work's result, or OVERLOADED once the deadline passes first (the work goes on, and is skipped where it checks the deadline). */
function beforeDeadline<T>(work: Promise<T>, d: QueryDeadline): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const shed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new OverloadedError(
      `no answer within ${Date.now() - d.receivedMs} ms of the query's arrival (maxQueryWaitMs ${d.deadlineMs - d.receivedMs}): ` +
      "the shard holding this user is busy; try again later")), Math.max(0, d.deadlineMs - Date.now()));
  });
  return Promise.race([work, shed]).finally(() => clearTimeout(timer));
}

export class QueryApi {
  readonly #service: Service;
  #inflight = 0;
  #inflightRecommends = 0;
  /** Cluster mode: the public recommend endpoint's forwarding (set once the route is known). */
  #forwardRecommend: Work | undefined;

  private constructor(service: Service) {
    this.#service = service;
  }

  static async start(
    nc: NatsConnection, s: Subjects, source: ProfileSource, metrics: EngineMetrics, log: Logger, o: ApiOptions,
    extra: { recommender?: Recommender; catalog?: CatalogSink; forget?: ForgetSink; audiences?: AudienceAdmin } = {},
  ): Promise<QueryApi> {
    const service = await nc.services.add({
      name: s.serviceName,
      version: o.version,
      description: "Portrait user-profile queries",
      queue: "portrait",
    });
    const api = new QueryApi(service);
    const alog = log.child({ component: "api" });
    /** Registers one endpoint; its replies go through #serve (bounds, typed errors, metrics). */
    /** `shed`: the query gets OVERLOADED when not answered within maxQueryWaitMs (read-only queries; a forget is never cut short). */
    const endpoint = (name: string, subject: string, metric: string, bound: Bound, shed: boolean, work: Work) => {
      service.addEndpoint(name, {
        subject,
        handler: (err, msg) => {
          if (err) {
            alog.error({ err, endpoint: name }, "endpoint failed");
            return;
          }
          void api.#serve(msg, metric, bound, shed, o, metrics, alog, work, stats).catch((e) => alog.error({ err: e, endpoint: name }, "reply failed"));
        },
      });
      const stats = asyncEndpointStats(service, name);
    };
    const reply = <T>(encoding: ReplyEncoding, r: T, type: { encode(m: T): { finish(): Uint8Array } }) =>
      encoding === "json" ? encoder.encode(JSON.stringify(r)) : type.encode(r).finish();
    if (extra.recommender !== undefined) {
      const rec = extra.recommender;
      endpoint("recommend", s.recommend, "recommend", "recommend", true, async (msg, enc, deadline) =>
        api.#forwardRecommend !== undefined ? api.#forwardRecommend(msg, enc, deadline)
          : reply(enc, await rec.recommend(parseRecommendRequest(msg.data, enc), deadline), pb.RecommendReply));
    }
    if (extra.catalog !== undefined) {
      const sink = extra.catalog;
      // Protobuf only: an upsert is applied, then stored, then acknowledged with an empty reply.
      endpoint("catalog-upsert", s.catalogUpsert, "catalog.upsert", "none", false, async (msg) => {
        const r = await sink.upsert(msg.data);
        if (!r.ok) throw fromWire(r.error);
        await sink.store(msg.data);
        return new Uint8Array(0);
      });
    }
    if (extra.forget !== undefined) {
      const sink = extra.forget;
      endpoint("user-forget", s.forget, "user.forget", "query", false, async (msg, enc) =>
        reply(enc, await sink.forget(parseForgetRequest(msg.data, enc)), pb.ForgetReply));
    }
    if (extra.audiences !== undefined) {
      const admin = extra.audiences;
      // JSON in and out: definitions are JSON documents.
      for (const op of AUDIENCE_OPS) {
        endpoint(`audience-${op}`, s.audienceApi(op), `audience.${op}`, "query", false, async (msg) => {
          let body: unknown;
          try {
            body = msg.data.length === 0 ? {} : JSON.parse(decoder.decode(msg.data));
          } catch (err) {
            throw new BadRequestError(`an audience request is a JSON object: ${(err as Error).message}`);
          }
          if (body === null || typeof body !== "object" || Array.isArray(body)) throw new BadRequestError("an audience request is a JSON object");
          const b = body as Record<string, unknown>;
          const r = op === "create" ? await admin.create(b) : op === "list" ? await admin.list() : op === "show" ? await admin.show(b)
            : op === "delete" ? await admin.delete(b) : op === "count" ? await admin.count(b) : op === "report" ? await admin.report(b) : await admin.members(b);
          return encoder.encode(JSON.stringify(r));
        });
      }
    }
    const profile: Work = async (msg, enc, deadline) => {
      const q = parseProfileRequest(msg.data, enc);
      const r = await source.getProfile(partitionOf(q.userId, o.partitions), q.userId, q.asOfMs, enc, deadline, q.explain);
      return r.ok ? r.body : { refused: r.error };
    };
    const route = o.route;
    if (route === undefined) {
      endpoint("profile-get", s.profileGet, "profile.get", "query", true, profile);
      return api;
    }
    // Cluster mode: the public subjects forward to the owner; the node subjects answer only for partitions served here.
    const userOf = (kind: "profile" | "recommend", msg: ServiceMsg, enc: ReplyEncoding) =>
      kind === "profile" ? parseProfileRequest(msg.data, enc).userId : parseRecommendRequest(msg.data, enc).userId;
    const own = (kind: "profile" | "recommend", work: Work | undefined): Work => async (msg, enc, deadline) => {
      const d = route.decide(partitionOf(userOf(kind, msg, enc), o.partitions));
      if (!("local" in d) || work === undefined) {
        throw new UnavailableError("this node does not serve the user's partition now (it is moving); try again", "unavailable" in d ? d.retryAfterMs : 500);
      }
      return work(msg, enc, deadline);
    };
    const recommendWork: Work | undefined = extra.recommender === undefined ? undefined : async (msg, enc, deadline) =>
      reply(enc, await extra.recommender!.recommend(parseRecommendRequest(msg.data, enc), deadline), pb.RecommendReply);
    const forward = (kind: "profile" | "recommend", work: Work | undefined) => async (msg: ServiceMsg, enc: ReplyEncoding, deadline: QueryDeadline | undefined): Promise<Uint8Array | Forwarded | Refused> => {
      const d = route.decide(partitionOf(userOf(kind, msg, enc), o.partitions));
      if ("local" in d) return own(kind, work)(msg, enc, deadline);
      if ("unavailable" in d) throw new UnavailableError(d.unavailable, d.retryAfterMs);
      try {
        const r = await nc.request(d.forward[kind], msg.data, { timeout: d.timeoutMs, ...(msg.headers !== undefined ? { headers: msg.headers } : {}) });
        return { forwarded: r };
      } catch (err) {
        throw new UnavailableError(`the partition's owner did not answer (${(err as Error).message}); it may be moving`, d.timeoutMs);
      }
    };
    endpoint("profile-get", s.profileGet, "profile.get", "query", true, forward("profile", profile));
    endpoint("node-profile-get", route.nodeSubjects.profile, "node.profile.get", "query", true, own("profile", profile));
    if (recommendWork !== undefined) endpoint("node-recommend", route.nodeSubjects.recommend, "node.recommend", "recommend", true, own("recommend", recommendWork));
    api.#forwardRecommend = forward("recommend", recommendWork);
    return api;
  }

  /**
   * Runs one request: the in-flight bounds and the wait bound (OVERLOADED
   * beyond them), the reply or a typed error reply in the request's encoding,
   * and the metrics. A query cut short by the wait bound keeps its in-flight
   * place until its work has really ended.
   */
  async #serve(
    msg: ServiceMsg, metric: string, bound: Bound, shed: boolean, o: ApiOptions, metrics: EngineMetrics, log: Logger, work: Work, stats: EndpointStats,
  ): Promise<void> {
    const t0 = performance.now();
    const receivedMs = Date.now();
    const deadline = shed ? { receivedMs, deadlineMs: receivedMs + o.maxQueryWaitMs } : undefined;
    // Catalog upserts are protobuf only, so their errors are too.
    const encoding = bound === "none" ? "protobuf" : encodingOf(msg.data);
    let code: string = "OK";
    let errorText: string | undefined;
    try {
      if (bound !== "none" && this.#inflight >= o.maxInflightQueries) throw new OverloadedError(`more than ${o.maxInflightQueries} queries in flight`);
      if (bound === "recommend" && this.#inflightRecommends >= o.maxInflightRecommends) {
        throw new OverloadedError(`more than ${o.maxInflightRecommends} recommendations in flight`);
      }
      if (bound !== "none") this.#inflight++;
      if (bound === "recommend") this.#inflightRecommends++;
      const running = (async () => work(msg, encoding, deadline))();
      const release = () => {
        if (bound !== "none") this.#inflight--;
        if (bound === "recommend") this.#inflightRecommends--;
      };
      running.then(release, release);
      const out = await (deadline !== undefined ? beforeDeadline(running, deadline) : running);
      if (out instanceof Uint8Array) {
        msg.respond(out);
      } else if ("refused" in out) {
        code = out.refused.code;
        errorText = `${code}: ${out.refused.message}`;
        respondError(msg, out.refused, encoding);
      } else {
        code = out.forwarded.headers?.get(ERROR_CODE_HEADER) || "OK";
        msg.respond(out.forwarded.data, out.forwarded.headers !== undefined ? { headers: out.forwarded.headers } : {});
      }
    } catch (err) {
      const w = toWire(err);
      code = w.code;
      errorText = `${w.code}: ${w.message}`;
      if (!(err instanceof PortraitError)) log.error({ err, endpoint: metric }, "request failed");
      respondError(msg, w, encoding, err instanceof UnavailableError ? err.retryAfterMs : undefined);
    } finally {
      const ms = performance.now() - t0;
      metrics.requests.inc({ endpoint: metric, code });
      metrics.requestSeconds.observe({ endpoint: metric }, ms / 1000);
      stats.done(ms, errorText);
    }
  }

  async stop(): Promise<void> {
    await this.#service.stop();
  }
}

function respondError(msg: ServiceMsg, e: WireError, encoding: ReplyEncoding, retryAfterMs?: number): void {
  const h = headers();
  h.set(ERROR_CODE_HEADER, e.code);
  if (retryAfterMs !== undefined) h.set(RETRY_AFTER_HEADER, String(Math.max(1, Math.round(retryAfterMs))));
  msg.respondError(errorStatus[e.code] ?? errorStatus[ErrorCode.INTERNAL], e.message, encodeError(e, encoding), { headers: h });
}
