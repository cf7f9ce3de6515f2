/**
 * `portrait publish` and `portrait request`: the engine's subjects from a
 * shell, without the nats CLI or protobuf tools. Events are JSON
 * (wire/event-json.ts), checked as the engine checks them before anything is
 * published, so a bad line is refused with its line number and nothing of the
 * file is sent.
 */
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type { PortraitClient, PublishResult } from "../client/portrait-client.js";
import type { Subjects } from "../bus/subjects.js";
import { BadRequestError } from "../errors.js";
import type { EventValidationOptions } from "../wire/event-validation.js";
import { eventFromJson } from "../wire/event-json.js";
import type { Event } from "../wire/proto.js";

/** Parses one JSON event, or throws BadRequestError prefixed with `where`. */
function parseEvent(text: string, where: string, o: EventValidationOptions): Event {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new BadRequestError(`${where}: not JSON (${(err as Error).message})`);
  }
  try {
    return eventFromJson(obj, Date.now(), o);
  } catch (err) {
    throw new BadRequestError(`${where}: ${(err as Error).message}`);
  }
}

/** The events of an NDJSON file ("-" = standard input), all checked before any is returned; blank lines are ignored. */
async function readNdjsonEvents(file: string, o: EventValidationOptions): Promise<Event[]> {
  const input = file === "-" ? process.stdin : createReadStream(file);
  const lines = createInterface({ input, crlfDelay: Infinity });
  const events: Event[] = [];
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === "") continue;
    events.push(parseEvent(line, `${file === "-" ? "stdin" : file} line ${n}`, o));
  }
  return events;
}

/** Publishes one JSON event given on the command line, or every event of an NDJSON file. */
export async function publishJson(client: PortraitClient, input: { json?: string; file?: string }, o: EventValidationOptions): Promise<PublishResult & { events: number }> {
  if ((input.json === undefined) === (input.file === undefined)) throw new BadRequestError("give one event as JSON, or --file with NDJSON (one event per line; - for stdin)");
  const events = input.json !== undefined ? [parseEvent(input.json, "event", o)] : await readNdjsonEvents(input.file!, o);
  const r = await client.publishMany(events);
  return { ...r, events: events.length };
}

/** Short names of the request-reply subjects, for `portrait request <name>`. */
function requestSubjects(s: Subjects): Readonly<Record<string, string>> {
  return { profile: s.profileGet, recommend: s.recommend, forget: s.forget, "catalog.upsert": s.catalogUpsert };
}

/** The subject a `portrait request` names: a short name, or one of the engine's request subjects in full. */
export function resolveRequestSubject(s: Subjects, name: string): string {
  const short = requestSubjects(s);
  if (Object.hasOwn(short, name)) return short[name]!;
  if (Object.values(short).includes(name)) return name;
  throw new BadRequestError(`unknown request ${JSON.stringify(name)}: one of ${Object.keys(short).join(", ")} (or its full subject)`);
}
