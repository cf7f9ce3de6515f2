/**
 * The item catalog: what the engine knows about each item, kept current from
 * item events (`observe`) and catalog upserts (`upsert`, the
 * proto/portrait/v1/catalog.proto contract), with availability switched at
 * run time (`setAvailable`). Pure and single-threaded.
 *
 * Semantics:
 * - Events fill and refresh fields: a non-empty field of an event (category,
 *   path, brand, price > 0, currency, title) replaces the stored one when the
 *   event is not older than the item's `lastSeenMs`, and fills an empty one
 *   whatever its time. An empty field never clears a known one. Events never
 *   change `available`.
 * - Upserts set every field they give (non-empty string, price > 0,
 *   `available` defined) and leave the others alone; they apply in arrival
 *   order. An empty string means "not given", so an upsert cannot clear a field.
 * - A new item is available unless an upsert or `setAvailable` says otherwise,
 *   or it was unavailable when it was evicted (see below).
 * - Bounded: at most `maxItems` items; beyond that the least recently touched
 *   item is dropped (TouchOrder: an item touched in the last maxItems / 2
 *   touches is never dropped). The ids of dropped unavailable items are
 *   remembered (at most `maxUnavailableEvicted`, oldest forgotten first), so
 *   an event cannot bring them back as available. The recs byte bound
 *   (maxStateBytes, src/recs/recs-bytes.ts) may drop items before the count does.
 * Candidate generation recommends only items the catalog holds and marks
 * available, so `setAvailable(id, false)` takes effect on the next request.
 */
import { BadRequestError } from "../errors.js";
import { RECS_DEFAULTS, type CompiledCatalogOptions } from "./recs-options.js";
import { type Evictable, MAP_ENTRY_BYTES, objectBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { TouchOrder } from "./touch-order.js";
import type { ItemEvent } from "./types.js";

export interface CatalogItem {
  /** The shop's item id. */
  readonly itemId: string;
  /** Leaf category id; "" when unknown. */
  categoryId: string;
  /** Category path ("electronics.smartphone"); "" when unknown. */
  categoryPath: string;
  /** Brand as given (not lower-cased); "" when unknown. */
  brand: string;
  /** Unit price in major units of `currency`; 0 when unknown. */
  price: number;
  /** ISO 4217 code of `price`; "" when unknown. */
  currency: string;
  /** Title or description text; "" when unknown. */
  title: string;
  /** False when the item must not be recommended. */
  available: boolean;
  /** Earliest event time (or upsert updatedMs) seen, Unix ms; 0 when none. */
  firstSeenMs: number;
  /** Latest event time (or upsert updatedMs) seen, Unix ms; 0 when none. */
  lastSeenMs: number;
}

/** A catalog upsert as plain data (the decoded CatalogUpsert message, see `fromCatalogUpsertMessage`). */
export interface CatalogUpsertInput {
  /** Required, 1..256 characters. */
  itemId: string;
  categoryId?: string;
  categoryPath?: string;
  brand?: string;
  /** Finite, >= 0 and <= 1e9; 0 means not given. */
  price?: number;
  currency?: string;
  title?: string;
  /** Undefined leaves availability unchanged (a new item is then available). */
  available?: boolean;
  /** When the shop changed the item, Unix ms; counts as "seen" for first/lastSeenMs. 0 = not given. */
  updatedMs?: number;
}

/** Numbers of the `Availability` enum in proto/portrait/v1/catalog.proto. */
export const Availability = Object.freeze({ UNSPECIFIED: 0, AVAILABLE: 1, UNAVAILABLE: 2 } as const);

/** The decoded protobuf message's shape (protobufjs `ICatalogUpsert`: fields may be null or absent). */
export interface CatalogUpsertMessage {
  itemId?: string | null;
  categoryId?: string | null;
  categoryPath?: string | null;
  brand?: string | null;
  price?: number | null;
  currency?: string | null;
  title?: string | null;
  available?: number | null;
  updatedMs?: number | { toNumber(): number } | null;
}

/** Maps a decoded CatalogUpsert message to an upsert (validation happens in `Catalog.upsert`). */
export function fromCatalogUpsertMessage(m: CatalogUpsertMessage): CatalogUpsertInput {
  const a = m.available ?? Availability.UNSPECIFIED;
  if (a !== Availability.UNSPECIFIED && a !== Availability.AVAILABLE && a !== Availability.UNAVAILABLE) {
    throw new BadRequestError(`catalog upsert: unknown availability ${a}`);
  }
  const updated = m.updatedMs ?? 0;
  return {
    itemId: m.itemId ?? "",
    categoryId: m.categoryId ?? "",
    categoryPath: m.categoryPath ?? "",
    brand: m.brand ?? "",
    price: m.price ?? 0,
    currency: m.currency ?? "",
    title: m.title ?? "",
    available: a === Availability.UNSPECIFIED ? undefined : a === Availability.AVAILABLE,
    updatedMs: typeof updated === "number" ? updated : updated.toNumber(),
  };
}

const MAX_ID_LENGTH = 256;
const MAX_PRICE = 1e9;

/** Longest accepted upsert fields, in characters: a title is text for people, not a document. */
const MAX_FIELD: Readonly<Record<string, number>> = Object.freeze({ categoryId: 256, brand: 256, categoryPath: 1024, currency: 3, title: 4096 });

function str(name: string, v: unknown): string {
  if (v === undefined) return "";
  if (typeof v !== "string") throw new BadRequestError(`catalog upsert: ${name} must be a string`);
  const max = MAX_FIELD[name];
  if (max !== undefined && v.length > max) throw new BadRequestError(`catalog upsert: ${name} must be at most ${max} characters`);
  if (name === "currency" && v !== "" && !/^[A-Z]{3}$/.test(v)) throw new BadRequestError("catalog upsert: currency must be an ISO 4217 code such as GBP");
  return v;
}

/** Estimated heap of a catalog entry (src/recs/recs-bytes.ts). */
function entryBytes(e: CatalogItem): number {
  return MAP_ENTRY_BYTES + objectBytes(11) + stringBytes(e.itemId) + stringBytes(e.categoryId) + stringBytes(e.categoryPath)
    + stringBytes(e.brand) + stringBytes(e.currency) + stringBytes(e.title);
}

export class Catalog {
  private readonly items: TouchOrder<CatalogItem>;
  private readonly unavailableEvicted = new Set<string>();
  private readonly maxUnavailableEvicted: number;

  /** `acct`: the memory estimate and clock shared with the other recs tables; `ids`: the item ids' interner they share. */
  constructor(options: CompiledCatalogOptions = RECS_DEFAULTS.catalog, private readonly acct = new RecsBytes(), ids = new Interner()) {
    this.maxUnavailableEvicted = options.maxUnavailableEvicted;
    this.items = new TouchOrder<CatalogItem>(options.maxItems, (id, e) => {
      acct.add(TABLE.catalog, -entryBytes(e));
      if (e.available) return;
      this.unavailableEvicted.add(id);
      if (this.unavailableEvicted.size > this.maxUnavailableEvicted) {
        const oldest = this.unavailableEvicted.values().next();
        if (!oldest.done) this.unavailableEvicted.delete(oldest.value);
      }
    }, acct, ids);
  }

  get size(): number {
    return this.items.size;
  }

  /** The table the recs byte bound evicts from. */
  get evictable(): Evictable {
    return this.items;
  }

  get(itemId: string): Readonly<CatalogItem> | undefined {
    return this.items.get(this.items.ids.find(itemId));
  }

  /** True when the catalog holds the item and it is available: the test candidate generation applies. */
  isAvailable(itemId: string): boolean {
    return this.get(itemId)?.available === true;
  }

  /** Every item, least recently touched first (approximately). */
  *[Symbol.iterator](): IterableIterator<Readonly<CatalogItem>> {
    yield* this.items.values();
  }

  /** The item's entry, added when new; `slot`: its slot in the item interner (looked up when not given). */
  private entry(itemId: string, slot = this.items.ids.slot(itemId)): CatalogItem {
    let e = this.items.get(slot);
    if (e) {
      this.items.touch(slot);
      return e;
    }
    const wasUnavailable = this.unavailableEvicted.delete(itemId);
    e = {
      itemId, categoryId: "", categoryPath: "", brand: "", price: 0, currency: "", title: "",
      available: !wasUnavailable, firstSeenMs: 0, lastSeenMs: 0,
    };
    this.items.insert(slot, e);
    this.acct.add(TABLE.catalog, entryBytes(e));
    return e;
  }

  private seen(e: CatalogItem, t: number): void {
    if (t <= 0) return;
    if (e.firstSeenMs === 0 || t < e.firstSeenMs) e.firstSeenMs = t;
    if (t > e.lastSeenMs) e.lastSeenMs = t;
  }

  /**
   * Applies an item event (see the semantics above) and returns the item; events without an item id are ignored.
   * `slot`: the item's slot in the item interner, when the caller has it (observeItemEvent).
   */
  observe(ev: ItemEvent, slot?: number): Readonly<CatalogItem> | undefined {
    if (!ev.itemId) return undefined;
    const e = this.entry(ev.itemId, slot);
    const b0 = entryBytes(e);
    const newer = ev.timestampMs >= e.lastSeenMs;
    // A string field is replaced only when its text changes: the stored string stays the one kept (an event's
    // strings are new copies, which would otherwise be promoted to the old generation and die there at the item's
    // next event), and the tables that key by it (trending's categories, the recs worker's counts) look it up
    // with the string they already hold.
    if (ev.categoryId && ev.categoryId !== e.categoryId && (newer || e.categoryId === "")) e.categoryId = ev.categoryId;
    if (ev.categoryPath && ev.categoryPath !== e.categoryPath && (newer || e.categoryPath === "")) e.categoryPath = ev.categoryPath;
    if (ev.brand && ev.brand !== e.brand && (newer || e.brand === "")) e.brand = ev.brand;
    if (ev.price && ev.price > 0 && (newer || e.price === 0)) e.price = ev.price;
    if (ev.currency && ev.currency !== e.currency && (newer || e.currency === "")) e.currency = ev.currency;
    if (ev.title && ev.title !== e.title && (newer || e.title === "")) e.title = ev.title;
    this.acct.add(TABLE.catalog, entryBytes(e) - b0);
    this.seen(e, ev.timestampMs);
    return e;
  }

  /** Applies an upsert and returns the item. Throws BadRequestError when it is malformed (nothing is changed then). */
  upsert(u: CatalogUpsertInput): Readonly<CatalogItem> {
    const itemId = str("itemId", u.itemId);
    // U+FFFD is what invalid UTF-8 decodes to: different bad ids would collide.
    if (itemId === "" || itemId.length > MAX_ID_LENGTH || itemId.includes("\uFFFD")) {
      throw new BadRequestError(`catalog upsert: itemId must be 1..${MAX_ID_LENGTH} characters of valid UTF-8`);
    }
    const price = u.price ?? 0;
    if (typeof price !== "number" || !Number.isFinite(price) || price < 0 || price > MAX_PRICE) {
      throw new BadRequestError(`catalog upsert: price must be a finite number in [0, ${MAX_PRICE}], got ${JSON.stringify(u.price)}`);
    }
    const updatedMs = u.updatedMs ?? 0;
    if (typeof updatedMs !== "number" || !Number.isFinite(updatedMs) || updatedMs < 0) {
      throw new BadRequestError(`catalog upsert: updatedMs must be a finite number >= 0, got ${JSON.stringify(u.updatedMs)}`);
    }
    if (u.available !== undefined && typeof u.available !== "boolean") {
      throw new BadRequestError("catalog upsert: available must be a boolean or undefined");
    }
    const fields = {
      categoryId: str("categoryId", u.categoryId), categoryPath: str("categoryPath", u.categoryPath),
      brand: str("brand", u.brand), currency: str("currency", u.currency), title: str("title", u.title),
    };
    const e = this.entry(itemId);
    const b0 = entryBytes(e);
    if (fields.categoryId) e.categoryId = fields.categoryId;
    if (fields.categoryPath) e.categoryPath = fields.categoryPath;
    if (fields.brand) e.brand = fields.brand;
    if (price > 0) e.price = price;
    if (fields.currency) e.currency = fields.currency;
    if (fields.title) e.title = fields.title;
    if (u.available !== undefined) e.available = u.available;
    this.acct.add(TABLE.catalog, entryBytes(e) - b0);
    this.seen(e, updatedMs);
    return e;
  }

  /** Marks an item (un)available, adding it when unknown so that the mark holds when its events arrive. */
  setAvailable(itemId: string, available: boolean): Readonly<CatalogItem> {
    if (itemId === "") throw new BadRequestError("setAvailable: itemId must not be empty");
    const e = this.entry(itemId);
    e.available = available;
    return e;
  }
}
