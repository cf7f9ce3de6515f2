/**
 * Subjects and stream names: the NATS side of the contract. All names derive
 * from one prefix (default "portrait") so that several deployments can share
 * a NATS account.
 *
 * | subject                          | what                                                     |
 * |----------------------------------|----------------------------------------------------------|
 * | <prefix>.events.<partition>      | events (protobuf `Event`), JetStream stream <PREFIX>_EVENTS |
 * | <prefix>.dlq.<REASON>            | dead letters: original bytes + reason headers, stream <PREFIX>_DLQ |
 * | <prefix>.api.profile.get         | request-reply: ProfileRequest -> ProfileReply             |
 * | <prefix>.api.recommend           | request-reply: RecommendRequest -> RecommendReply         |
 * | <prefix>.api.catalog.upsert      | request-reply: CatalogUpsert -> empty reply (or an error) |
 * | <prefix>.api.user.forget         | request-reply: ForgetRequest -> ForgetReply               |
 * | <prefix>.tombstones              | a `Tombstone` per forget, stored before the forget is answered, stream <PREFIX>_TOMBSTONES |
 * | <prefix>.catalog.item.<hex id>   | accepted upserts, last one per item, stream <PREFIX>_CATALOG |
 * | <prefix>.audience.events.<id>    | `AudienceTransition` per enter/exit, stream <PREFIX>_AUDIENCES, Nats-Msg-Id audience:user:transition |
 * | <prefix>.api.audience.<op>       | request-reply, JSON: create, list, show, delete, count, members, report |
 * | KV bucket <PREFIX>_AUDIENCE_DEFS | audience definitions (JSON), key = audience id; engines watch it |
 * | KV bucket <PREFIX>_ENGINE        | the engines' own secrets: key `internal-mac-key`, the key that signs hand-overs and forwarded events (created once, by the first engine) |
 * | <prefix>.feedback.served         | the training log (JSON, src/recs/feedback-log.ts): a served reply with its exploration pool, at its first logged impression, stream <PREFIX>_FEEDBACK |
 * | <prefix>.feedback.impression     | the training log: a logged rec_impression (request, item, slot, propensity) |
 * | <prefix>.feedback.click          | the training log: a logged rec_click |
 * | KV bucket <PREFIX>_LEASES        | cluster mode (README "Scale-out"): `node.<id>` heartbeats, `p.<n>` partition leases {node, epoch} (src/bus/leases.ts) |
 * | <prefix>.cl.<p>.u.<hex key>      | cluster mode: a user's last state, stream <PREFIX>_CL_<p>, one per subject (src/bus/changelog.ts) |
 * | <prefix>.cl.<p>.mark             | cluster mode: the last takeover mark of partition p's changelog |
 * | <prefix>.node.<id>.profile.get   | cluster mode: request-reply to one node; answered only for partitions it serves, else UNAVAILABLE |
 * | <prefix>.node.<id>.recommend     | cluster mode: the same for recommendations |
 *
 * The model registry (src/models/registry.ts) lives in two JetStream buckets:
 * the Object Store <PREFIX>_MODELS (every file of every pushed version, as
 * `<name>/<version>/<file>`) and the KV bucket <PREFIX>_MODELS_PROMOTED (key
 * `<name>`: the promoted version and the ones before it, for rollback).
 */

export interface Subjects {
  readonly prefix: string;
  readonly eventStream: string;
  readonly dlqStream: string;
  /** Wildcard of all event subjects (the event stream's subject). */
  readonly eventsWildcard: string;
  readonly dlqWildcard: string;
  readonly profileGet: string;
  readonly recommend: string;
  readonly catalogUpsert: string;
  /** Request-reply: forget a user (ForgetRequest -> ForgetReply). */
  readonly forget: string;
  /** Where a `Tombstone` is published after each forget, for downstream systems (the subject of the tombstone stream). */
  readonly tombstones: string;
  /** JetStream stream holding the tombstones (durable: downstream systems may be offline when a user is forgotten). */
  readonly tombstoneStream: string;
  readonly catalogStream: string;
  readonly catalogWildcard: string;
  /** The catalog stream subject of an item: its id as UTF-8 hex, so any id is a valid subject token. */
  catalogItem(itemId: string): string;
  /** JetStream stream of audience enter/exit events. */
  readonly audienceStream: string;
  /** Wildcard of the audience event subjects (the audience stream's subject). */
  readonly audienceWildcard: string;
  /** Subject of an audience's enter/exit events. */
  audienceEvents(audienceId: string): string;
  /** KV bucket of the audience definitions. */
  readonly audienceBucket: string;
  /** KV bucket of the deployment's own secrets: the internal key that signs hand-overs and forwarded events (src/bus/internal-key.ts). */
  readonly engineBucket: string;
  /** Request-reply subject of an audience operation (create, list, show, delete, count, members, report). */
  audienceApi(op: AudienceOp): string;
  /** JetStream stream of the training log of logged recommendation feedback. */
  readonly feedbackStream: string;
  /** Wildcard of the training log's subjects (the feedback stream's subject). */
  readonly feedbackWildcard: string;
  /** Subject of a training-log record: "served", "impression" or "click". */
  feedback(kind: FeedbackKind): string;
  /** JetStream Object Store bucket of the model registry's artifacts. */
  readonly modelObjects: string;
  /** JetStream KV bucket of the promoted version of each model name. */
  readonly modelPromoted: string;
  /** The service name registered with the NATS services framework. */
  readonly serviceName: string;
  events(partition: number): string;
  dlq(reason: string): string;
  /** Durable consumer name of a partition. */
  consumer(partition: number): string;
}

export const FEEDBACK_KINDS = ["served", "impression", "click"] as const;
export type FeedbackKind = (typeof FEEDBACK_KINDS)[number];

export const AUDIENCE_OPS = ["create", "list", "show", "delete", "count", "members", "report"] as const;
export type AudienceOp = (typeof AUDIENCE_OPS)[number];

const PREFIX_RE = /^[a-z][a-z0-9_-]{0,31}$/;

export function isValidPrefix(prefix: string): boolean {
  return PREFIX_RE.test(prefix);
}

export function subjects(prefix = "portrait"): Subjects {
  if (!isValidPrefix(prefix)) throw new Error(`subject prefix must match ${PREFIX_RE}, got ${JSON.stringify(prefix)}`);
  const upper = prefix.toUpperCase().replace(/-/g, "_");
  return Object.freeze({
    prefix,
    eventStream: `${upper}_EVENTS`,
    dlqStream: `${upper}_DLQ`,
    eventsWildcard: `${prefix}.events.*`,
    dlqWildcard: `${prefix}.dlq.>`,
    profileGet: `${prefix}.api.profile.get`,
    recommend: `${prefix}.api.recommend`,
    catalogUpsert: `${prefix}.api.catalog.upsert`,
    forget: `${prefix}.api.user.forget`,
    tombstones: `${prefix}.tombstones`,
    tombstoneStream: `${upper}_TOMBSTONES`,
    catalogStream: `${upper}_CATALOG`,
    catalogWildcard: `${prefix}.catalog.item.*`,
    catalogItem: (itemId: string) => `${prefix}.catalog.item.${Buffer.from(itemId, "utf8").toString("hex")}`,
    audienceStream: `${upper}_AUDIENCES`,
    audienceWildcard: `${prefix}.audience.events.*`,
    audienceEvents: (id: string) => `${prefix}.audience.events.${id}`,
    audienceBucket: `${upper}_AUDIENCE_DEFS`,
    engineBucket: `${upper}_ENGINE`,
    audienceApi: (op: AudienceOp) => `${prefix}.api.audience.${op}`,
    feedbackStream: `${upper}_FEEDBACK`,
    feedbackWildcard: `${prefix}.feedback.*`,
    feedback: (kind: FeedbackKind) => `${prefix}.feedback.${kind}`,
    modelObjects: `${upper}_MODELS`,
    modelPromoted: `${upper}_MODELS_PROMOTED`,
    serviceName: prefix,
    events: (p: number) => `${prefix}.events.${p}`,
    dlq: (reason: string) => `${prefix}.dlq.${reason}`,
    consumer: (p: number) => `${prefix}-p${p}`,
  });
}
