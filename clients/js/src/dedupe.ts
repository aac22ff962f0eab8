/**
 * The ids of the most recent events, to drop an event delivered twice (a resumed
 * stream replaying what the previous one already delivered). Remembers which
 * connection delivered each id first.
 */
export class RecentIds {
  readonly #capacity: number;
  readonly #ids = new Map<string, number>();

  constructor(capacity: number) {
    this.#capacity = Math.max(1, capacity);
  }

  /** The connection that delivered `id` first, if it is still remembered. */
  firstSeenBy(id: string): number | undefined {
    return this.#ids.get(id);
  }

  /** Remembers `id` as delivered by connection `by`, forgetting the oldest beyond capacity. */
  add(id: string, by: number): void {
    this.#ids.set(id, by);
    if (this.#ids.size > this.#capacity) {
      const oldest = this.#ids.keys().next();
      if (!oldest.done) this.#ids.delete(oldest.value);
    }
  }

  get size(): number {
    return this.#ids.size;
  }
}
