/**
 * Audience administration: definitions in a NATS KV bucket (one key per
 * audience id, the definition as JSON), validated before they are stored, and
 * the queries that read the shards' maintained counts and member index.
 *
 * Engines watch the bucket (`watchDefinitions`) and hand every change to their
 * shards, so a definition written by any engine (or by hand) reaches all of
 * them; an invalid value written by hand is logged and ignored.
 */
import type { JetStreamClient, KV } from "nats";
import { orderDefinitions, parseDefinition, referencesOf, type AudienceDefinition } from "../actors/audience-rules.js";
import { AudienceError } from "../actors/audience-rules.js";
import { BadRequestError, ConfigError, ErrorCode, PortraitError, fromWire } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { ReportGroup } from "../shard/audience-runner.js";
import type { AudienceQueryResult, AudienceReportResult } from "../shard/shard-protocol.js";

/** Where counts and members are read (the shard pool). */
export interface AudienceSource {
  audienceQuery(audienceId: string, after: string, limit: number): Promise<AudienceQueryResult>;
  audienceReport(audienceId: string, days: number): Promise<AudienceReportResult>;
}

/** An uplift report: contacted members vs holdout, in the `days` days from entering. */
export interface AudienceReport {
  id: string;
  days: number;
  contacted: ReportGroup;
  holdout: ReportGroup;
  /** contacted - holdout purchase rate, with a 95% normal-approximation interval (null without both groups). */
  purchaseRateUplift: { estimate: number; low: number; high: number } | null;
  /** contacted - holdout revenue per member, with a 95% interval (Welch standard error). */
  revenueUplift: { estimate: number; low: number; high: number } | null;
  /** What the report covers. */
  note: string;
}

/** A backfill's progress over the engine (the slowest shard). */
export interface BackfillView {
  running: boolean;
  scanned: number;
  total: number;
}

/** Most members in one page of `members`. */
export const MAX_MEMBERS_PAGE = 10_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class UnknownAudienceError extends PortraitError {
  constructor(id: string) {
    super(ErrorCode.UNKNOWN_AUDIENCE, `no audience ${JSON.stringify(id)}`);
  }
}

export async function openDefinitions(js: JetStreamClient, bucket: string, replicas = 1): Promise<KV> {
  return js.views.kv(bucket, { history: 1, replicas });
}

function decodeDef(value: Uint8Array): AudienceDefinition {
  return parseDefinition(JSON.parse(decoder.decode(value)));
}

/** Reads every stored definition (invalid ones are skipped and logged). */
export async function readDefinitions(kv: KV, log?: Logger): Promise<Map<string, AudienceDefinition>> {
  const out = new Map<string, AudienceDefinition>();
  // Keys first: awaiting inside the keys iterator loses keys (it is a live consumer).
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  for (const key of keys) {
    const e = await kv.get(key);
    if (e === null || e.operation !== "PUT") continue;
    try {
      out.set(key, decodeDef(e.value));
    } catch (err) {
      log?.error({ err, audience: key }, "stored audience definition is invalid; ignored");
    }
  }
  return out;
}

/**
 * Watches the bucket: `onChange` gets the whole valid set after the initial
 * values and after every change. Resolves once the initial set was handed over.
 */
export async function watchDefinitions(kv: KV, log: Logger, onChange: (defs: AudienceDefinition[]) => Promise<void>): Promise<{ stop(): void }> {
  const defs = new Map<string, AudienceDefinition>();
  let initialised = false;
  let resolveInit!: () => void;
  const init = new Promise<void>((r) => (resolveInit = r));
  let pending: Promise<void> = Promise.resolve();
  const push = () => {
    // A set whose references do not resolve (a hand-written bucket) keeps the audiences that do.
    const all = [...defs.values()];
    let ok = all;
    try {
      orderDefinitions(all);
    } catch (err) {
      log.error({ err }, "audience definitions reference each other badly; those with bad references are left out");
      ok = all.filter((d) => [...referencesOf(d.rule)].every((r) => defs.has(r)));
    }
    pending = pending.then(() => onChange(ok)).catch((err: unknown) => log.error({ err }, "audience definitions could not be applied"));
    return pending;
  };
  const w = await kv.watch({ initializedFn: () => {
    initialised = true;
    void push().then(resolveInit);
  } });
  void (async () => {
    for await (const e of w) {
      if (e.operation === "PUT") {
        try {
          defs.set(e.key, decodeDef(e.value));
        } catch (err) {
          log.error({ err, audience: e.key }, "stored audience definition is invalid; ignored");
          defs.delete(e.key);
        }
      } else {
        defs.delete(e.key);
      }
      if (initialised) void push();
    }
  })().catch((err: unknown) => log.error({ err }, "audience watch ended"));
  // An empty bucket: initializedFn is still called once; a bucket whose watch never initialises would hang start, so bound it.
  // The bound's timer is cleared: left pending, it would keep a process that stops soon after start alive for the rest of it.
  let bound: NodeJS.Timeout | undefined;
  await Promise.race([init, new Promise((r) => (bound = setTimeout(r, 5000)))]);
  clearTimeout(bound);
  return { stop: () => w.stop() };
}

function str(o: Record<string, unknown>, name: string): string {
  const v = o[name];
  if (typeof v !== "string" || v === "") throw new BadRequestError(`${name} must be a non-empty string`);
  return v;
}

/** The audience operations behind the request-reply endpoints (JSON in, JSON out). */
export class AudienceAdmin {
  readonly #kv: KV;
  readonly #source: AudienceSource;
  readonly #backfill: () => BackfillView;
  /** Cluster mode: why every operation is refused (CONFIG). */
  readonly #refused: string | undefined;

  constructor(kv: KV, source: AudienceSource, backfill: () => BackfillView, refused?: string) {
    this.#kv = kv;
    this.#source = source;
    this.#backfill = backfill;
    this.#refused = refused;
  }

  #open(): void {
    if (this.#refused !== undefined) throw new ConfigError(this.#refused);
  }

  async #count(id: string, after = "", limit = 0) {
    const r = await this.#source.audienceQuery(id, after, limit);
    if (!r.ok) throw fromWire(r.error);
    return r;
  }

  async #get(id: string): Promise<AudienceDefinition> {
    const e = await this.#kv.get(id);
    if (e === null || e.operation !== "PUT") throw new UnknownAudienceError(id);
    return decodeDef(e.value);
  }

  /** Validates a definition against the stored set (references, cycles, limits) and stores it (create or replace). */
  async create(body: Record<string, unknown>): Promise<{ audience: AudienceDefinition; replaced: boolean }> {
    this.#open();
    const def = parseDefinition(body.definition ?? body);
    const all = await readDefinitions(this.#kv);
    const replaced = all.has(def.id);
    all.set(def.id, def);
    orderDefinitions([...all.values()]);
    await this.#kv.put(def.id, encoder.encode(JSON.stringify(def)));
    return { audience: def, replaced };
  }

  async list(): Promise<{ audiences: { definition: AudienceDefinition; count: number }[]; backfill: BackfillView }> {
    this.#open();
    const all = await readDefinitions(this.#kv);
    const audiences = [];
    for (const d of [...all.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) audiences.push({ definition: d, count: (await this.#count(d.id)).count });
    return { audiences, backfill: this.#backfill() };
  }

  async show(body: Record<string, unknown>): Promise<{ definition: AudienceDefinition; count: number; backfill: BackfillView }> {
    this.#open();
    const id = str(body, "id");
    const definition = await this.#get(id);
    return { definition, count: (await this.#count(id)).count, backfill: this.#backfill() };
  }

  async delete(body: Record<string, unknown>): Promise<{ deleted: string }> {
    this.#open();
    const id = str(body, "id");
    await this.#get(id);
    const all = await readDefinitions(this.#kv);
    for (const d of all.values()) {
      if (d.id !== id && referencesOf(d.rule).has(id)) throw new AudienceError(d.id, "rule.inAudience", `references ${JSON.stringify(id)}: delete or change it first`);
    }
    await this.#kv.delete(id);
    return { deleted: id };
  }

  async count(body: Record<string, unknown>): Promise<{ id: string; count: number }> {
    this.#open();
    const id = str(body, "id");
    await this.#get(id);
    return { id, count: (await this.#count(id)).count };
  }

  /** Contacted vs holdout members: purchase rate and revenue per member in the `days` days from entering, with 95% intervals of the difference. */
  async report(body: Record<string, unknown>): Promise<AudienceReport> {
    this.#open();
    const id = str(body, "id");
    await this.#get(id);
    const days = body.days === undefined ? 30 : body.days;
    if (typeof days !== "number" || !Number.isInteger(days) || days < 1 || days > 90) throw new BadRequestError("days must be an integer in [1, 90]");
    const r = await this.#source.audienceReport(id, days);
    if (!r.ok) throw fromWire(r.error);
    const { contacted: c, holdout: h } = r;
    const both = c.members > 0 && h.members > 0;
    const rateSe = Math.sqrt(c.purchaseRate * (1 - c.purchaseRate) / Math.max(1, c.members) + h.purchaseRate * (1 - h.purchaseRate) / Math.max(1, h.members));
    const revSe = Math.sqrt(c.revenueVariance / Math.max(1, c.members) + h.revenueVariance / Math.max(1, h.members));
    const ci = (est: number, se: number) => ({ estimate: est, low: est - 1.96 * se, high: est + 1.96 * se });
    return {
      id, days, contacted: c, holdout: h,
      purchaseRateUplift: both ? ci(c.purchaseRate - h.purchaseRate, rateSe) : null,
      revenueUplift: both ? ci(c.revenuePerMember - h.revenuePerMember, revSe) : null,
      note: `current members and, for an audience with a holdout, members who have left (each membership once), whole UTC days from the day each entered; 95% intervals by normal approximation`,
    };
  }

  /** A page of members in user-id order; `next` is the `after` of the next page ("" = the last page). */
  async members(body: Record<string, unknown>): Promise<{ id: string; count: number; members: { userId: string; sinceMs: number; holdout: boolean }[]; next: string }> {
    this.#open();
    const id = str(body, "id");
    await this.#get(id);
    const after = body.after === undefined ? "" : body.after;
    if (typeof after !== "string") throw new BadRequestError("after must be a string (a user id)");
    const limit = body.limit === undefined ? 1000 : body.limit;
    if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_MEMBERS_PAGE) {
      throw new BadRequestError(`limit must be an integer in [1, ${MAX_MEMBERS_PAGE}]`);
    }
    const r = await this.#count(id, after, limit);
    return { id, count: r.count, members: r.members, next: r.members.length === limit ? r.members[limit - 1]!.userId : "" };
  }
}
