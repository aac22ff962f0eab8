import type { HeraldError } from './errors.js';
import { callSafely } from './lifecycle.js';
import type { HeraldEvent, ResetNotice } from './types.js';

export interface SubscribeOptions {
  /**
   * The hub could not replay what was missed on this channel (it restarted, or its
   * history no longer reaches back far enough): fetch the channel's state again.
   */
  onReset?: (notice: ResetNotice) => void;
  /** The hub refused this channel (`forbidden`, `invalid_channel`, `too_many_channels`). */
  onError?: (error: HeraldError) => void;
}

interface Subscription {
  readonly type: string | null;
  readonly handler: (event: HeraldEvent) => void;
  readonly options: SubscribeOptions;
}

/** The application's subscriptions by channel, and the channels the hub refused. */
export class Subscriptions {
  readonly #byChannel = new Map<string, Set<Subscription>>();
  /** Refused channels, until every subscription to them is gone. */
  readonly #refused = new Map<string, HeraldError>();

  /** Adds a subscription; returns the function that removes it (and tells whether it did). */
  add(
    channel: string,
    type: string | null,
    handler: (event: HeraldEvent) => void,
    options: SubscribeOptions,
  ): () => boolean {
    const sub: Subscription = { type, handler, options };
    let set = this.#byChannel.get(channel);
    if (!set) {
      set = new Set();
      this.#byChannel.set(channel, set);
    }
    set.add(sub);
    const refused = this.#refused.get(channel);
    const { onError } = options;
    if (refused && onError) queueMicrotask(() => callSafely(onError, refused));

    return () => {
      const current = this.#byChannel.get(channel);
      if (!current?.delete(sub)) return false;
      if (current.size === 0) {
        this.#byChannel.delete(channel);
        this.#refused.delete(channel);
      }
      return true;
    };
  }

  /** The channels a connection must name, sorted: not the hub's own `$` channels, not refused ones. */
  wireChannels(): string[] {
    return [...this.#byChannel.keys()].filter((c) => !c.startsWith('$') && !this.#refused.has(c)).sort();
  }

  /** Whether any subscription needs a connection. */
  get wanted(): boolean {
    for (const channel of this.#byChannel.keys()) if (!this.#refused.has(channel)) return true;
    return false;
  }

  /** Calls the handlers of the event's channel (and type). */
  dispatch(event: HeraldEvent): void {
    const set = this.#byChannel.get(event.channel);
    if (!set) return;
    for (const sub of [...set]) {
      if (sub.type === null || sub.type === event.type) callSafely(sub.handler, event);
    }
  }

  /** Calls the refetch hook of each subscription to a channel the reset names, once each. */
  reset(notice: ResetNotice): void {
    const seen = new Set<Subscription>();
    for (const channel of notice.channels) {
      for (const sub of [...(this.#byChannel.get(channel) ?? [])]) {
        if (seen.has(sub) || !sub.options.onReset) continue;
        seen.add(sub);
        callSafely(sub.options.onReset, notice);
      }
    }
  }

  /** Marks channels as refused and tells their subscriptions. */
  refuse(channel: string, error: HeraldError): void {
    this.#refused.set(channel, error);
    for (const sub of [...(this.#byChannel.get(channel) ?? [])]) {
      if (sub.options.onError) callSafely(sub.options.onError, error);
    }
  }

  /** Forgets refusals, so that the channels are tried again. */
  clearRefused(): void {
    this.#refused.clear();
  }
}
