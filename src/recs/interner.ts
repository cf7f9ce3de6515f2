/**
 * Ids (item, user or category strings) interned to small integers, the slots
 * the recs tables are keyed by (src/recs/touch-order.ts): the intake looks an
 * event's item id and user id up here once, and every table fed after reads
 * its entry by that slot (an array index) instead of hashing the string in a
 * Map of its own. Tables that key by the same kind of id share one Interner
 * (createRecsIndex).
 *
 * Bounded with the tables: each TouchOrder retains a slot while it holds an
 * entry for it and releases it when the entry leaves (eviction by count or by
 * the recs byte bound, delete); a slot nobody holds is freed at once and
 * reused for the next new id. So the interner holds exactly the ids some
 * table holds, and its size follows the tables' caps and maxStateBytes. It
 * has no line of its own in the byte estimate: each table entry's estimate
 * still counts a Map slot and its key string (src/recs/recs-bytes.ts), which
 * now stand for the interner's one Map slot and string per id and the
 * tables' slot arrays (a value, two links and a tick per slot).
 *
 * `slot` creates an unheld slot for a new id: a caller inserts the id into a
 * table at once (the tables' get-or-insert paths), which retains it.
 */
export class Interner {
  readonly #slots = new Map<string, number>();
  /** The id of each slot ("" when free). */
  readonly #names: string[] = [];
  /** How many tables hold each slot. */
  #refs = new Int32Array(1024);
  /** Freed slots, reused last freed first. */
  readonly #free: number[] = [];

  /** Ids interned (held, or just created by `slot`). */
  get size(): number {
    return this.#slots.size;
  }

  /** Slots ever allocated: every slot is below it (the length tables size their slot arrays to). */
  get capacity(): number {
    return this.#names.length;
  }

  /** The id's slot, or -1 when no table holds it. */
  find(id: string): number {
    return this.#slots.get(id) ?? -1;
  }

  /** The id's slot, created when new (unheld until a table retains it: insert it at once). */
  slot(id: string): number {
    let s = this.#slots.get(id);
    if (s !== undefined) return s;
    s = this.#free.pop();
    if (s === undefined) {
      s = this.#names.length;
      this.#names.push(id);
      if (s >= this.#refs.length) {
        const refs = new Int32Array(this.#refs.length * 2);
        refs.set(this.#refs);
        this.#refs = refs;
      }
    } else {
      this.#names[s] = id;
    }
    this.#slots.set(id, s);
    return s;
  }

  /** The id of a held slot. */
  name(slot: number): string {
    return this.#names[slot]!;
  }

  retain(slot: number): void {
    this.#refs[slot]!++;
  }

  /** Drops a table's hold; the last frees the slot. */
  release(slot: number): void {
    if (--this.#refs[slot]! > 0) return;
    this.#slots.delete(this.#names[slot]!);
    this.#names[slot] = "";
    this.#free.push(slot);
  }
}
