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
import { pb, plainBytes } from "../wire/proto.js";

/** Header carrying the stable string error code of a failed request. */
export const ERROR_CODE_HEADER = "Portrait-Error-Code";

export interface ProfileSource {
  getProfile(partition: number, userId: string, asOfMs: number, encoding: ReplyEncoding): Promise<ProfileResult>;
}

export interface ApiOptions {
  partitions: number;
  /** Most queries in flight at once; above it queries get OVERLOADED. */
  maxInflightQueries: number;
  version: string;
}

const encoder = new TextEncoder();
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
  if (typeof asOfMs !== "number" || !Number.isInteger(asOfMs) || asOfMs < 0) {
    throw new BadRequestError("asOfMs must be a non-negative integer (Unix epoch ms)");
  }
  return { userId, asOfMs };
}

export class QueryApi {
  readonly #service: Service;
  #inflight = 0;

  private constructor(service: Service) {
    this.#service = service;
  }

  static async start(nc: NatsConnection, s: Subjects, source: ProfileSource, metrics: EngineMetrics, log: Logger, o: ApiOptions): Promise<QueryApi> {
    const service = await nc.services.add({
      name: s.serviceName,
      version: o.version,
      description: "Portrait user-profile queries",
      queue: "portrait",
    });
    const api = new QueryApi(service);
    const alog = log.child({ component: "api" });
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

  async stop(): Promise<void> {
    await this.#service.stop();
  }
}

function respondError(msg: ServiceMsg, e: WireError, encoding: ReplyEncoding): void {
  const h = headers();
  h.set(ERROR_CODE_HEADER, e.code);
  msg.respondError(errorStatus[e.code] ?? errorStatus[ErrorCode.INTERNAL], e.message, encodeError(e, encoding), { headers: h });
}
