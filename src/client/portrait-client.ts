/**
 * The typed client of Portrait: publishes events to the right partition with
 * `Nats-Msg-Id`, bounded in-flight publish acknowledgements, and queries
 * profiles with typed errors. The CLI, the tests and bench/ use it; README
 * shows the same calls from the `nats` CLI for publishers in other languages.
 */
import type { AudienceDefinition } from "../actors/audience-rules.js";
import type { AudienceReport, BackfillView } from "../api/audience-admin.js";
import { type JetStreamClient, type NatsConnection, type NatsError, type PubAck } from "nats";
import type { ProfileView } from "../actors/user-profile.js";
import type { RecommendView } from "../recs/recommender.js";
import { connectNats, natsOptionsOf, type NatsOptions } from "../bus/connect.js";
import { subjects, type Subjects } from "../bus/subjects.js";
import { BadRequestError, ErrorCode, PortraitError, fromWire, isErrorCode } from "../errors.js";
import { ERROR_CODE_HEADER } from "../wire/headers.js";
import { partitionOf } from "../wire/partition.js";
import { EVENT_TYPE_NAMES, pb, type ICatalogUpsert, type IEvent } from "../wire/proto.js";

/** Connection (NatsOptions: URL, credentials, TLS), naming and limits of a client. */
export interface PortraitClientOptions extends NatsOptions {
  /** Must equal the engine's. Default "portrait". */
  subjectPrefix?: string;
  /** Must equal the engine's partition count. Default 16. */
  partitions?: number;
  /** Most publishes awaiting their JetStream acknowledgement in publishMany. Default 256. */
  maxInflightPublishes?: number;
  /** Timeout of a query, ms. Default 5000. */
  requestTimeoutMs?: number;
  /** Connection name. Default "portrait-client". */
  name?: string;
}

export interface PublishResult {
  /** Events JetStream stored. */
  stored: number;
  /** Events JetStream dropped as duplicates of an earlier publish with the same event id. */
  duplicates: number;
}

export interface ProfileQueryOptions {
  /** Evaluate decayed values at this time (epoch ms); default the engine's event-time clock. */
  asOfMs?: number;
  /** Ask for each served prediction's explanation (its top inputs). */
  explain?: boolean;
}

/** The outcome of a forget (ForgetReply). */
export interface ForgetResult {
  /** True when the engine had a profile for the user. */
  existed: boolean;
  /** Id of the Tombstone stored on `<prefix>.tombstones` (stream `<PREFIX>_TOMBSTONES`) for this forget; also its `Nats-Msg-Id`. */
  tombstoneEventId: string;
  /** The other ids of the same person erased with it (README "Identity"), each with its own tombstone. */
  mergedIdsErased: number;
}

export interface RecommendOptions {
  /** Items wanted, 1..100 (default 10). */
  k?: number;
  /** Page type, for logs and metrics. */
  page?: string;
  /** The category being browsed: its top items become candidates too. */
  categoryId?: string;
  /** Items never to return. */
  exclude?: string[];
  /** Evaluate at this event time (epoch ms); default the engine's clock. */
  asOfMs?: number;
  /** Candidates to rank (default: the engine's, 200). */
  candidates?: number;
}

/** Rebuilds a Portrait error from a NATS request failure. */
/** A request or publish the server's permissions deny: terminal, not worth retrying. */
function denied(err: unknown): boolean {
  const e = err as NatsError;
  return e?.code === "PERMISSIONS_VIOLATION" || /permissions violation/i.test((err as Error)?.message ?? "");
}

function requestError(err: unknown): PortraitError {
  const e = err as NatsError;
  if (denied(err)) return new PortraitError(ErrorCode.AUTH_FAILED, (err as Error).message, { cause: err });
  if (e?.code === "503") return new PortraitError(ErrorCode.NO_RESPONDERS, "no Portrait engine answers on this subject; is the engine running?");
  if (e?.code === "TIMEOUT") return new PortraitError(ErrorCode.TIMEOUT, "the query timed out", { cause: err });
  return new PortraitError(ErrorCode.INTERNAL, (err as Error)?.message ?? String(err), { cause: err });
}

function publishError(eventId: string, err: unknown): PortraitError {
  if (denied(err)) return new PortraitError(ErrorCode.AUTH_FAILED, `publish of event ${eventId} denied: ${(err as Error).message}`, { cause: err });
  return new PortraitError(ErrorCode.PUBLISH_FAILED, `publish of event ${eventId} failed: ${(err as Error).message}`, { cause: err });
}

/** A page of an audience's members. */
export interface AudienceMembersPage {
  id: string;
  count: number;
  members: { userId: string; sinceMs: number; holdout: boolean }[];
  next: string;
}

export class PortraitClient {
  readonly nc: NatsConnection;
  readonly subjects: Subjects;
  readonly partitions: number;
  readonly #js: JetStreamClient;
  readonly #maxInflight: number;
  readonly #timeoutMs: number;
  readonly #ownsConnection: boolean;

  constructor(nc: NatsConnection, o: PortraitClientOptions = {}, ownsConnection = false) {
    const partitions = o.partitions ?? 16;
    if (!Number.isInteger(partitions) || partitions < 1) throw new BadRequestError("options.partitions must be a positive integer");
    const maxInflight = o.maxInflightPublishes ?? 256;
    if (!Number.isInteger(maxInflight) || maxInflight < 1) throw new BadRequestError("options.maxInflightPublishes must be a positive integer");
    this.nc = nc;
    this.subjects = subjects(o.subjectPrefix ?? "portrait");
    this.partitions = partitions;
    this.#js = nc.jetstream();
    this.#maxInflight = maxInflight;
    this.#timeoutMs = o.requestTimeoutMs ?? 5000;
    this.#ownsConnection = ownsConnection;
  }

  static async connect(o: PortraitClientOptions = {}): Promise<PortraitClient> {
    const nc = await connectNats({ ...natsOptionsOf(o), name: o.name ?? "portrait-client", maxReconnectAttempts: 10 });
    return new PortraitClient(nc, o, true);
  }

  /** The subject an event of this user is published to. */
  subjectFor(userId: string): string {
    return this.subjects.events(partitionOf(userId, this.partitions));
  }

  /** Publishes one event and waits for JetStream to store it (or to drop it as a duplicate). */
  async publish(event: IEvent): Promise<PubAck> {
    const { subject, data, msgID } = this.#encode(event);
    try {
      return await this.#js.publish(subject, data, { msgID });
    } catch (err) {
      throw publishError(msgID, err);
    }
  }

  /**
   * Publishes events in order of the iterable with at most maxInflightPublishes
   * awaiting acknowledgement; resolves when every one is acknowledged, rejects
   * on the first failure. `onProgress` is called after each acknowledgement.
   */
  async publishMany(events: Iterable<IEvent> | AsyncIterable<IEvent>, onProgress?: (done: number) => void): Promise<PublishResult> {
    const result: PublishResult = { stored: 0, duplicates: 0 };
    let inflight = 0;
    let done = 0;
    let failure: unknown;
    let wake: (() => void) | undefined;
    const settled = () => {
      inflight--;
      const w = wake;
      wake = undefined;
      w?.();
    };
    for await (const e of events) {
      if (failure !== undefined) break;
      const { subject, data, msgID } = this.#encode(e);
      inflight++;
      this.#js.publish(subject, data, { msgID }).then(
        (ack) => {
          if (ack.duplicate) result.duplicates++;
          else result.stored++;
          onProgress?.(++done);
          settled();
        },
        (err: unknown) => {
          failure ??= publishError(msgID, err);
          settled();
        },
      );
      while (inflight >= this.#maxInflight) await new Promise<void>((r) => (wake = r));
    }
    while (inflight > 0) await new Promise<void>((r) => (wake = r));
    if (failure !== undefined) throw failure;
    return result;
  }

  #encode(event: IEvent): { subject: string; data: Uint8Array; msgID: string } {
    if (!event.eventId) throw new BadRequestError("event.eventId is required");
    if (!event.userId) throw new BadRequestError("event.userId is required");
    return { subject: this.subjectFor(event.userId), data: pb.Event.encode(event).finish(), msgID: event.eventId };
  }

  /** The user's profile; throws PortraitError UNKNOWN_USER, BAD_REQUEST, OVERLOADED, NO_RESPONDERS, TIMEOUT. */
  async getProfile(userId: string, o: ProfileQueryOptions = {}): Promise<ProfileView> {
    const data = await this.#request(this.subjects.profileGet, pb.ProfileRequest.encode({ userId, asOfMs: o.asOfMs ?? 0, explain: o.explain ?? false }).finish());
    const p = pb.ProfileReply.decode(data).profile;
    if (!p) throw new PortraitError(ErrorCode.INTERNAL, "empty profile reply");
    return toProfileView(pb.Profile.toObject(p as InstanceType<typeof pb.Profile>, { longs: Number, defaults: true, arrays: true, objects: true }));
  }

  /**
   * Top-K recommendations for a user (an unknown user gets popular items).
   * Throws PortraitError BAD_REQUEST, OVERLOADED, NO_RESPONDERS, TIMEOUT.
   */
  async recommend(userId: string, o: RecommendOptions = {}): Promise<RecommendView> {
    const req = pb.RecommendRequest.encode({
      userId, k: o.k ?? 10, page: o.page ?? "", categoryId: o.categoryId ?? "", excludeItemIds: o.exclude ?? [],
      asOfMs: o.asOfMs ?? 0, candidates: o.candidates ?? 0,
    }).finish();
    const data = await this.#request(this.subjects.recommend, req);
    const r = pb.RecommendReply.toObject(pb.RecommendReply.decode(data), { longs: Number, defaults: true, arrays: true, objects: true });
    return r as unknown as RecommendView;
  }

  /**
   * Removes every trace the engine keeps of a user (profile, LSTM state,
   * co-visitation) and stores a Tombstone in the tombstone stream before it
   * resolves; idempotent. Events of the user applied afterwards start a new
   * profile. Throws PortraitError BAD_REQUEST, OVERLOADED, STORAGE_FAILED,
   * PUBLISH_FAILED (forgotten, but the tombstone was not stored: call again),
   * NO_RESPONDERS, TIMEOUT.
   */
  async forget(userId: string): Promise<ForgetResult> {
    const data = await this.#request(this.subjects.forget, pb.ForgetRequest.encode({ userId }).finish());
    const r = pb.ForgetReply.decode(data);
    return { existed: r.existed, tombstoneEventId: r.tombstoneEventId, mergedIdsErased: r.mergedIdsErased };
  }

  /** Adds or changes a catalog item (e.g. marks it unavailable); resolves once the engine applied and stored it. */
  async upsertCatalog(item: ICatalogUpsert): Promise<void> {
    await this.#request(this.subjects.catalogUpsert, pb.CatalogUpsert.encode(item).finish());
  }

  /**
   * Sends `body` as JSON to a request-reply `subject` (any of the engine's,
   * e.g. `subjects.profileGet`) and resolves with the JSON reply parsed (null
   * for an empty reply). Errors as for the typed calls; for tools and the CLI.
   */
  async requestJson(subject: string, body: unknown): Promise<unknown> {
    let reply;
    try {
      reply = await this.nc.request(subject, new TextEncoder().encode(JSON.stringify(body)), { timeout: this.#timeoutMs });
    } catch (err) {
      throw requestError(err);
    }
    const text = new TextDecoder().decode(reply.data);
    const code = reply.headers?.get(ERROR_CODE_HEADER);
    if (code) {
      let message = code;
      try {
        message = (JSON.parse(text) as { message?: string }).message ?? code;
      } catch {
        // The body is not JSON: the code says it all.
      }
      throw new PortraitError(isErrorCode(code) ? code : ErrorCode.INTERNAL, message);
    }
    return text === "" ? null : (JSON.parse(text) as unknown);
  }

  async #request(subject: string, body: Uint8Array): Promise<Uint8Array> {
    let reply;
    try {
      reply = await this.nc.request(subject, body, { timeout: this.#timeoutMs });
    } catch (err) {
      throw requestError(err);
    }
    const code = reply.headers?.get(ERROR_CODE_HEADER);
    if (code) {
      const e = pb.ErrorReply.decode(reply.data);
      throw fromWire({ code: isErrorCode(code) ? code : ErrorCode.INTERNAL, message: e.message || code });
    }
    return reply.data;
  }

  /**
   * Audience administration (README "Audiences"), JSON over request-reply.
   * Errors: BAD_AUDIENCE (an invalid definition: the message names the audience
   * and the field), UNKNOWN_AUDIENCE, BAD_REQUEST, and those of every request.
   */
  async audienceCreate(definition: AudienceDefinition): Promise<{ audience: AudienceDefinition; replaced: boolean }> {
    return (await this.requestJson(this.subjects.audienceApi("create"), { definition })) as { audience: AudienceDefinition; replaced: boolean };
  }

  async audienceList(): Promise<{ audiences: { definition: AudienceDefinition; count: number }[]; backfill: BackfillView }> {
    return (await this.requestJson(this.subjects.audienceApi("list"), {})) as { audiences: { definition: AudienceDefinition; count: number }[]; backfill: BackfillView };
  }

  async audienceShow(id: string): Promise<{ definition: AudienceDefinition; count: number; backfill: BackfillView }> {
    return (await this.requestJson(this.subjects.audienceApi("show"), { id })) as { definition: AudienceDefinition; count: number; backfill: BackfillView };
  }

  async audienceDelete(id: string): Promise<void> {
    await this.requestJson(this.subjects.audienceApi("delete"), { id });
  }

  /** The exact member count, from the shards' maintained counters (committed state). */
  async audienceCount(id: string): Promise<number> {
    return ((await this.requestJson(this.subjects.audienceApi("count"), { id })) as { count: number }).count;
  }

  /** One page of members in user-id order; pass `next` as `after` for the following page ("" = none). */
  async audienceMembers(id: string, after = "", limit = 1000): Promise<AudienceMembersPage> {
    return (await this.requestJson(this.subjects.audienceApi("members"), { id, after, limit })) as AudienceMembersPage;
  }

  /** Uplift: contacted members vs holdout, purchase rate and revenue per member in the `days` days from entering, with 95% intervals. */
  async audienceReport(id: string, days = 30): Promise<AudienceReport> {
    return (await this.requestJson(this.subjects.audienceApi("report"), { id, days })) as AudienceReport;
  }

  /** Every member, page by page. */
  async *audienceMembersAll(id: string, pageSize = 1000): AsyncGenerator<AudienceMembersPage["members"][number]> {
    let after = "";
    for (;;) {
      const page = await this.audienceMembers(id, after, pageSize);
      yield* page.members;
      if (page.next === "") return;
      after = page.next;
    }
  }

  /** Flushes pending publishes and closes the connection if this client opened it. */
  async close(): Promise<void> {
    if (this.#ownsConnection && !this.nc.isClosed()) await this.nc.drain();
  }
}

function toProfileView(o: Record<string, unknown>): ProfileView {
  const v = o as unknown as ProfileView;
  // Proto maps omit nothing with defaults:true, but keep every type present for callers.
  for (let i = 1; i < EVENT_TYPE_NAMES.length; i++) v.counts[EVENT_TYPE_NAMES[i]!] ??= 0;
  // An absent message field comes back as null; the view leaves it out.
  if (v.predictions === null) delete v.predictions;
  if (v.reviews === null) delete v.reviews;
  if (v.risk === null) delete v.risk;
  if (v.social === null) delete v.social;
  // A prediction without a value is null in the view (has_value = false on the wire), with its reason.
  if (v.predictions !== undefined) {
    for (const p of [v.predictions.purchasePropensity, v.predictions.churnRisk, v.predictions.nextCategory]) {
      const w = p as typeof p & { hasValue?: boolean };
      if (!w.hasValue) p.probability = null;
      delete w.hasValue;
      if (p.evidence === null || p.probability === null) delete p.evidence;
      if (p.explanation === null || p.probability === null) delete p.explanation;
    }
  }
  // A category without a known name comes back with label ""; brands and price bands never have one: the view leaves it out.
  for (const list of [v.categories, v.brands, v.priceBands, v.predictions?.nextCategories ?? [], v.reviews?.categories ?? [], v.reviews?.brands ?? [], v.reviews?.aspects ?? [], v.social?.friendsInterests ?? []]) {
    for (const a of list) if (a.label === "") delete a.label;
  }
  return v;
}
