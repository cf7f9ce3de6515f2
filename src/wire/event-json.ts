/**
 * Events written as JSON, for people and for tools without protobuf
 * (`portrait publish`). The mapping is protobuf's JSON mapping of
 * `portrait.v1.Event`: field names in lowerCamelCase or as in the .proto
 * (snake_case), `type` as the enum name (`"PURCHASE"`, `"purchase"`) or its
 * number, numbers as JSON numbers (timestamp_ms also as a decimal string).
 * A parsed event is checked by the same validation the engine applies
 * (event-validation.ts), so what is refused here would be dead-lettered there.
 */
import { BadRequestError } from "../errors.js";
import { decodeEvent, type EventValidationOptions } from "./event-validation.js";
import { partitionOf } from "./partition.js";
import { EVENT_TYPE_NAMES, EventType, pb, type Event } from "./proto.js";

/** The field names of `Event`, from a default instance (the generated static code has no reflection). */
const FIELDS = new Set(Object.keys(pb.Event.toObject(pb.Event.create(), { defaults: true, arrays: true, objects: true })));

function camel(key: string): string {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Types a shop publishes that are not profile counts (EVENT_TYPE_NAMES): identity and social ties. */
const OTHER_TYPES: Readonly<Record<string, EventType>> = Object.freeze({
  identify: EventType.IDENTIFY, follow: EventType.FOLLOW, unfollow: EventType.UNFOLLOW, share: EventType.SHARE,
});

function typeNumber(v: unknown): unknown {
  if (typeof v !== "string") return v;
  const lower = v.toLowerCase();
  const i = EVENT_TYPE_NAMES.indexOf(lower as (typeof EVENT_TYPE_NAMES)[number]);
  if (i > 0) return i;
  const other = OTHER_TYPES[lower];
  if (other !== undefined) return other;
  throw new BadRequestError(`type ${JSON.stringify(v)} is not an event type (${[...EVENT_TYPE_NAMES.slice(1), ...Object.keys(OTHER_TYPES)].join(", ")})`);
}

/**
 * The event `obj` describes, validated as the engine would for a deployment
 * of `o.partitions` partitions at wall-clock time `nowMs`. Throws
 * BadRequestError naming the field or the dead-letter reason.
 */
export function eventFromJson(obj: unknown, nowMs: number, o: EventValidationOptions): Event {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new BadRequestError("an event must be a JSON object");
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const name = camel(k);
    if (!FIELDS.has(name)) throw new BadRequestError(`unknown event field ${JSON.stringify(k)} (see proto/portrait/v1/event.proto)`);
    fields[name] = name === "type" ? typeNumber(v) : name === "timestampMs" && typeof v === "string" && /^\d+$/.test(v) ? Number(v) : v;
  }
  const msg = pb.Event.verify(fields);
  if (msg !== null) throw new BadRequestError(`not a portrait.v1.Event: ${msg}`);
  const event = pb.Event.fromObject(fields);
  const userId = event.userId;
  const r = decodeEvent(pb.Event.encode(event).finish(), partitionOf(userId, o.partitions), nowMs, o);
  if (!r.ok) throw new BadRequestError(`${r.reason}: ${r.detail}`);
  return r.event;
}
