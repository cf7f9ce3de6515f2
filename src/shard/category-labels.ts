/**
 * Category names for people: the category path an event carried for its
 * category id (REES46's `category_code`, a catalog's path), so that profiles
 * show "electronics.smartphone" beside 2053013555631882655. Kept per shard in
 * a bounded map in front of the store's copy; a name that changes is
 * overwritten.
 */
import type { ProfileStore } from "../store/profile-store.js";

/** Names held in memory per shard; the store keeps every one. */
const MAX_CACHED = 50_000;

export class CategoryLabels {
  readonly #store: ProfileStore;
  readonly #cache = new Map<string, string>();

  constructor(store: ProfileStore) {
    this.#store = store;
  }

  /** Notes the name an event gave its category. */
  note(categoryId: string, label: string): void {
    if (categoryId === "" || label === "" || this.label(categoryId) === label) return;
    this.#remember(categoryId, label);
    this.#store.putCategoryLabel(categoryId, label);
  }

  /** The category's name, or "" when none was seen. */
  label(categoryId: string): string {
    const cached = this.#cache.get(categoryId);
    if (cached !== undefined) return cached;
    const stored = this.#store.getCategoryLabel(categoryId) ?? "";
    this.#remember(categoryId, stored);
    return stored;
  }

  #remember(categoryId: string, label: string): void {
    if (this.#cache.size >= MAX_CACHED && !this.#cache.has(categoryId)) {
      // Oldest first: a Map iterates in insertion order.
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(categoryId, label);
  }
}
