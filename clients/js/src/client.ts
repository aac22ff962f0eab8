import { DEFAULT_BACKOFF, backoffDelay, retryAfterDelay, type BackoffOptions } from './backoff.js';
import { RecentIds } from './dedupe.js';
import { HeraldError } from './errors.js';
import { hubRequest } from './http.js';
import { NotificationsApi, TasksApi } from './inbox.js';
import { callSafely, isHidden, watchOnline, watchVisibility } from './lifecycle.js';
import { autoTransport, pollTransport } from './poll/transport.js';
import { sseTransport } from './sse/transport.js';
import { Subscriptions, type SubscribeOptions } from './subscriptions.js';
import { TokenSource } from './token.js';
import { presenceMembers, wsTransport } from './ws/transport.js';
import type { HubMessage, Transport, TransportClose, TransportConnection } from './transport.js';
import type {
  ConnectedInfo,
  ConnectionState,
  EventMap,
  EventOf,
  EventType,
  HeraldEvent,
  PresenceChange,
  PresenceMember,
  ResetNotice,
  TokenProvider,
  Unsubscribe,
} from './types.js';

/**
 * How the client reaches the hub:
 * - `sse` (the default): Server-Sent Events, `GET /events`.
 * - `ws`: a WebSocket, `GET /ws`; needed to publish client events over the
 *   connection, and it changes channels without reconnecting.
 * - `poll`: long-polling, `GET /poll`, for networks that block streaming.
 * - `auto`: SSE, switching to long-polling when streaming turns out to be blocked
 *   (see {@link autoTransport}).
 * - or a {@link Transport} of your own (or one of those, made with options).
 */
export type TransportChoice = 'sse' | 'ws' | 'poll' | 'auto' | Transport;

export interface ClientOptions {
  /** The hub's base URL (`https://hub.example.com`, or a path such as `/realtime` on the page's origin). */
  url: string;
  /**
   * A token, or a function that supplies one (and fresh ones before it expires,
   * after it expired and when the hub rejects it). Omit for anonymous access or
   * cookie authentication.
   */
  token?: string | TokenProvider;
  /** `include` to send cookies to a hub on another origin (cookie authentication). Default `same-origin`. */
  credentials?: RequestCredentials;
  /** How to reach the hub. Default `'sse'`. */
  transport?: TransportChoice;
  /** Reconnection delays. */
  reconnect?: Partial<BackoffOptions>;
  /**
   * Disconnect while the page is hidden and catch up when it is shown again.
   * `true` pauses after 30 s hidden; `{ afterMs }` sets the delay. Default `false`.
   */
  pauseWhenHidden?: boolean | { afterMs: number };
  /** Ask for a new token this long before the current one expires (capped at a third of its life). Default 30 000 ms. */
  tokenRefreshMarginMs?: number;
  /** How many recent event ids are remembered to drop duplicates. Default 2048. */
  dedupeWindow?: number;
  /** Start from this event id, e.g. one saved before the page was reloaded. */
  lastEventId?: string;
  /** The `fetch` used for HTTP requests: {@link HeraldClient.publish}, {@link HeraldClient.history}, the inbox and tasks. */
  fetch?: typeof fetch;
}

export interface PublishResult {
  id: string;
  /** The id was supplied and already published: the hub did not publish it again. */
  duplicate: boolean;
}

/** One connection to the hub, from opening to its end. */
interface Link {
  readonly serial: number;
  channels: readonly string[];
  key: string;
  readonly token: string | null;
  /** Opened with a last event id: the hub replays from there. */
  readonly resumed: boolean;
  transport: TransportConnection | null;
  live: boolean;
  liveSince: number;
  ended: boolean;
  graceTimer: ReturnType<typeof setTimeout> | undefined;
}

/** An old connection still delivering while its replacement catches up, when there is no id to resume from. */
const HANDOVER_GRACE_MS = 2000;
/** A connection that lived this long resets the backoff when it is lost. */
const STABLE_MS = 5000;
const DEFAULT_PAUSE_AFTER_MS = 30_000;

/**
 * A client of one Herald hub: one connection carrying every channel subscribed,
 * re-established on loss without losing events.
 *
 * ```ts
 * const client = new HeraldClient({ url: 'https://hub.example.com', token: fetchToken });
 * const stop = client.subscribe('orders', (event) => console.log(event.type, event.data));
 * ```
 */
export class HeraldClient<M extends EventMap = EventMap> {
  readonly url: string;
  /** The signed-in user's notification inbox (`/api/notifications`). */
  readonly notifications: NotificationsApi;
  /** The signed-in user's tasks (`/api/tasks`). */
  readonly tasks: TasksApi;
  readonly #transport: Transport;
  readonly #credentials: RequestCredentials;
  readonly #backoff: BackoffOptions;
  readonly #pauseAfterMs: number | null;
  readonly #fetch: typeof fetch | undefined;
  readonly #tokens: TokenSource;
  readonly #recent: RecentIds;

  readonly #subs = new Subscriptions();
  /** Channels that were part of a connection the hub accepted. */
  readonly #confirmed = new Set<string>();
  readonly #stateListeners = new Set<(state: ConnectionState) => void>();
  readonly #errorListeners = new Set<(error: HeraldError) => void>();
  readonly #resetListeners = new Set<(notice: ResetNotice) => void>();

  #primary: Link | null = null;
  #pending: Link | null = null;
  readonly #retiring = new Set<Link>();
  #serial = 0;

  #state: ConnectionState = 'closed';
  #info: ConnectedInfo | null = null;
  #lastEventId: string | null;
  #attempt = 0;
  #authFailures = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #pauseTimer: ReturnType<typeof setTimeout> | undefined;
  #syncQueued = false;
  #tokenBusy = false;
  #paused = false;
  #closed = false;
  #detach: (() => void) | null = null;

  constructor(options: ClientOptions) {
    if (typeof options.url !== 'string' || options.url === '') throw new TypeError('HeraldClient: `url` is required');
    this.url = options.url.replace(/\/+$/, '');
    this.#transport = resolveTransport(options.transport);
    this.#credentials = options.credentials ?? 'same-origin';
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.reconnect };
    const pause = options.pauseWhenHidden ?? false;
    this.#pauseAfterMs = pause === false ? null : pause === true ? DEFAULT_PAUSE_AFTER_MS : Math.max(0, pause.afterMs);
    this.#fetch = options.fetch;
    this.#tokens = new TokenSource(options.token, options.tokenRefreshMarginMs ?? 30_000, () => {
      this.#scheduleRefresh();
      this.#queueSync();
    });
    this.#recent = new RecentIds(options.dedupeWindow ?? 2048);
    this.#lastEventId = options.lastEventId ?? null;
    const request = (path: string, init: RequestInit): Promise<unknown> => this.#request(path, init);
    this.notifications = new NotificationsApi(request);
    this.tasks = new TasksApi(request);
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** What the hub said when the current connection opened; `null` before the first. */
  get connection(): ConnectedInfo | null {
    return this.#info;
  }

  /** The id of the newest event received: where the next connection resumes. */
  get lastEventId(): string | null {
    return this.#lastEventId;
  }

  /**
   * Calls `handler` for each event on `channel` (of type `type` only, when given).
   * The connection opens with the first subscription; subscriptions made in the
   * same tick are applied together. Returns the function that unsubscribes.
   *
   * The user's own channel (`user:<sub>`) and `$broadcast` are always carried;
   * subscribe to them by name to receive their events.
   */
  subscribe(channel: string, handler: (event: EventOf<M>) => void, options?: SubscribeOptions): Unsubscribe;
  subscribe<K extends EventType<M>>(
    channel: string,
    type: K,
    handler: (event: EventOf<M, K>) => void,
    options?: SubscribeOptions,
  ): Unsubscribe;
  subscribe(
    channel: string,
    typeOrHandler: string | ((event: never) => void),
    handlerOrOptions?: ((event: never) => void) | SubscribeOptions,
    maybeOptions?: SubscribeOptions,
  ): Unsubscribe {
    if (this.#closed) throw new Error('HeraldClient: subscribe() after close()');
    if (typeof channel !== 'string' || channel === '') throw new TypeError('HeraldClient: a channel name is required');
    const typed = typeof typeOrHandler === 'string';
    const handler = typed ? handlerOrOptions : typeOrHandler;
    if (typeof handler !== 'function') throw new TypeError('HeraldClient: a handler function is required');
    const options = (typed ? maybeOptions : (handlerOrOptions as SubscribeOptions | undefined)) ?? {};
    const remove = this.#subs.add(channel, typed ? typeOrHandler : null, handler as (event: HeraldEvent) => void, options);
    this.#queueSync();
    return () => {
      if (remove()) this.#queueSync();
    };
  }

  /** Calls `listener` on every change of {@link state}. Returns the function that removes it. */
  onStateChange(listener: (state: ConnectionState) => void): Unsubscribe {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Calls `listener` with errors the application should know of: channels the hub
   * refused, failures of the token provider, repeated rejections, and the error
   * that closed the client for good.
   */
  onError(listener: (error: HeraldError) => void): Unsubscribe {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  /** Calls `listener` on every `reset`, whatever the channels (see {@link SubscribeOptions.onReset}). */
  onReset(listener: (notice: ResetNotice) => void): Unsubscribe {
    this.#resetListeners.add(listener);
    return () => this.#resetListeners.delete(listener);
  }

  /**
   * Tries again now: forgets refused channels and failed attempts, skips a pending
   * backoff delay, and reconnects if needed (for instance after the client closed
   * on an error). An open connection is kept.
   */
  reconnect(): void {
    if (this.#closed) throw new Error('HeraldClient: reconnect() after close()');
    this.#subs.clearRefused();
    this.#attempt = 0;
    this.#authFailures = 0;
    this.#clearRetry();
    this.#sync();
  }

  /** Disconnects for good. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopAll();
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#pauseTimer);
    this.#detach?.();
    this.#detach = null;
    this.#setState('closed');
    this.#stateListeners.clear();
    this.#errorListeners.clear();
    this.#resetListeners.clear();
  }

  /**
   * Publishes an event. Over a WebSocket it is a client event sent on the
   * connection (the namespace must allow client publishing and the token grant the
   * channel; the hub's hooks may refuse it), answered once the hub accepted it; it
   * rejects with `not_connected` while the socket is not open. Otherwise, and with
   * an `id` of your own, it is `POST /publish`, which needs a publish grant for the
   * channel. Rejects with a {@link HeraldError}.
   */
  async publish<K extends EventType<M>>(
    channel: string,
    type: K,
    data: M[K],
    options: { id?: string } = {},
  ): Promise<PublishResult> {
    if (options.id === undefined) {
      const link = this.#primary;
      const connection = link?.live ? link.transport : null;
      if (connection?.publish) {
        const { id } = await connection.publish(channel, type, data);
        return { id, duplicate: false };
      }
      if (this.#transport.name === 'ws') throw new HeraldError('not_connected', 'the WebSocket is not connected; publish once it is open');
    }
    const body = JSON.stringify({ channel, type, data, ...(options.id === undefined ? {} : { id: options.id }) });
    const answer = await this.#request('/publish', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    const id = field(answer, 'id');
    if (typeof id !== 'string') throw new HeraldError('bad_response', 'the hub answered the publish without an id');
    return { id, duplicate: field(answer, 'duplicate') === true };
  }

  /** Up to `limit` (default 100) of the newest events the hub keeps for `channel`, oldest first. */
  async history(channel: string, options: { limit?: number } = {}): Promise<EventOf<M>[]> {
    const query = options.limit === undefined ? '' : `?limit=${encodeURIComponent(String(options.limit))}`;
    const answer = await this.#request(`/channels/${encodeURIComponent(channel)}/history${query}`, { method: 'GET' });
    const events = field(answer, 'events');
    if (!Array.isArray(events)) throw new HeraldError('bad_response', 'the hub answered the history without events');
    return events as EventOf<M>[];
  }

  /**
   * Who is present on `channel` now (namespaces with presence): asked on the
   * WebSocket when there is one, else `GET /channels/{name}/presence`.
   */
  async presence(channel: string): Promise<PresenceMember[]> {
    const link = this.#primary;
    const connection = link?.live ? link.transport : null;
    if (connection?.presence) return connection.presence(channel);
    const answer = await this.#request(`/channels/${encodeURIComponent(channel)}/presence`, { method: 'GET' });
    return presenceMembers(field(answer, 'users'));
  }

  /**
   * Calls `listener` when a user joins `channel` (their first connection) or leaves
   * it (their last), from the hub's `presence.join` and `presence.leave` events, on
   * every transport. Subscribes to the channel meanwhile. These events are live
   * only: after a reconnection, fetch the members again ({@link presence}).
   */
  onPresence(channel: string, listener: (change: PresenceChange) => void): Unsubscribe {
    const handler = (event: HeraldEvent): void => {
      if (event.type !== 'presence.join' && event.type !== 'presence.leave') return;
      const data = event.data;
      const user = typeof data === 'object' && data !== null ? (data as Record<string, unknown>).user : undefined;
      if (typeof user !== 'string') return;
      const info = (data as Record<string, unknown>).info;
      const kind = event.type === 'presence.join' ? 'join' : 'leave';
      listener(info === undefined || info === null ? { kind, user } : { kind, user, info });
    };
    return this.subscribe(channel, handler as (event: EventOf<M>) => void);
  }

  #request(path: string, init: RequestInit): Promise<unknown> {
    return hubRequest({ url: `${this.url}${path}`, init, tokens: this.#tokens, credentials: this.#credentials, fetch: this.#fetch });
  }

  // --- connection management ---------------------------------------------

  #queueSync(): void {
    if (this.#syncQueued) return;
    this.#syncQueued = true;
    queueMicrotask(() => {
      this.#syncQueued = false;
      this.#sync();
    });
  }

  /** Brings the connections in line with the subscriptions and the token. */
  #sync(): void {
    if (this.#closed) return;
    if (!this.#subs.wanted) {
      this.#stopAll();
      this.#setState('closed');
      return;
    }
    this.#attach();
    if (this.#paused) {
      this.#setState('reconnecting');
      return;
    }
    if (this.#retryTimer !== undefined || this.#tokenBusy) return;
    if (this.#tokens.needed) {
      this.#fetchToken();
      return;
    }
    const channels = this.#subs.wireChannels();
    const key = channels.join('\n');
    const token = this.#tokens.current;
    const pending = this.#pending;
    if (pending) {
      if (pending.key === key && pending.token === token) return;
      this.#end(pending);
    }
    const primary = this.#primary;
    if (primary && primary.key === key && primary.token === token) return;
    if (primary?.live && primary.token === token && primary.transport?.setChannels?.(channels, this.#lastEventId)) {
      // Changed in place (WebSocket): no new connection, added channels resume.
      const implicit = this.#info?.channels.filter((c) => !primary.channels.includes(c)) ?? [];
      if (this.#info) this.#info = { ...this.#info, channels: [...channels, ...implicit.filter((c) => !channels.includes(c))] };
      primary.channels = channels;
      primary.key = key;
      return;
    }
    this.#open(channels, key, token);
  }

  #open(channels: readonly string[], key: string, token: string | null): void {
    const link: Link = {
      serial: ++this.#serial,
      channels,
      key,
      token,
      resumed: this.#lastEventId !== null,
      transport: null,
      live: false,
      liveSince: 0,
      ended: false,
      graceTimer: undefined,
    };
    this.#pending = link;
    if (!this.#primary) this.#setState(this.#state === 'closed' || this.#state === 'connecting' ? 'connecting' : 'reconnecting');
    if (this.#refreshTimer === undefined) this.#scheduleRefresh();
    link.transport = this.#transport.open(
      { url: this.url, channels, token, lastEventId: this.#lastEventId, credentials: this.#credentials },
      {
        message: (message) => this.#onMessage(link, message),
        closed: (reason) => this.#onClosed(link, reason),
      },
    );
    if (link.ended) link.transport.close();
  }

  #onMessage(link: Link, message: HubMessage): void {
    if (link.ended) return;
    switch (message.kind) {
      case 'connected':
        this.#onConnected(link, message.info);
        return;
      case 'event':
        this.#deliver(link, message.event);
        return;
      case 'reset':
        this.#onReset(message.notice);
        return;
      case 'shutdown':
        this.#lose(link, message.retryMs);
        return;
      case 'token_expired':
        if (link.token === this.#tokens.current) this.#tokens.invalidate('expired');
        this.#lose(link, 0);
        return;
      case 'refused':
        this.#refuse([message.channel], message.error);
        this.#queueSync();
        return;
    }
  }

  #onConnected(link: Link, info: ConnectedInfo): void {
    if (link !== this.#pending) return;
    link.live = true;
    link.liveSince = Date.now();
    for (const channel of link.channels) this.#confirmed.add(channel);
    this.#authFailures = 0;
    const previous = this.#primary;
    this.#pending = null;
    this.#primary = link;
    if (previous) {
      // Resumed: the new connection replays everything after the id it was
      // opened with, so the old one can go now. Otherwise the old one keeps
      // delivering until the two overlap (see #deliver) or a grace period ends.
      if (link.resumed) this.#end(previous);
      else this.#retire(previous);
    }
    this.#info = info;
    // A client that has seen no event yet resumes from where this connection started.
    if (this.#lastEventId === null && info.lastEventId !== null) this.#lastEventId = info.lastEventId;
    this.#setState('open');
    this.#sync();
  }

  #retire(link: Link): void {
    if (this.#primary === link) this.#primary = null;
    this.#retiring.add(link);
    link.graceTimer = setTimeout(() => this.#end(link), HANDOVER_GRACE_MS);
  }

  #deliver(link: Link, event: HeraldEvent): void {
    const first = this.#recent.firstSeenBy(event.id);
    if (first !== undefined) {
      // Two connections delivered the same event: the older one has caught up
      // with the newer one and is no longer needed.
      if (first !== link.serial) {
        const older = Math.min(first, link.serial);
        for (const old of this.#retiring) if (old.serial === older) this.#end(old);
      }
      return;
    }
    this.#recent.add(event.id, link.serial);
    this.#lastEventId = event.id;
    const channels = event.channels;
    if (channels && channels.length > 1) {
      // Published to several of the connection's channels: it arrived once, and
      // goes to the subscribers of each.
      for (const channel of channels) this.#subs.dispatch(channel === event.channel ? event : { ...event, channel });
    } else {
      this.#subs.dispatch(event);
    }
  }

  #onReset(notice: ResetNotice): void {
    this.#lastEventId = notice.id;
    this.#subs.reset(notice);
    for (const listener of [...this.#resetListeners]) callSafely(listener, notice);
  }

  #onClosed(link: Link, reason: TransportClose): void {
    if (link.ended) return;
    if (reason.kind !== 'rejected') {
      this.#lose(link, null);
      return;
    }
    const { status, code, message, retryAfterMs } = reason;
    const error = new HeraldError(code, message, { status });
    if (status === 401) {
      if (!this.#tokens.refreshable) {
        this.#fail(error);
        return;
      }
      if (link.token === this.#tokens.current) this.#tokens.invalidate(code === 'token_expired' ? 'expired' : 'rejected');
      this.#authFailures += 1;
      if (this.#authFailures > 1) this.#emitError(error);
      this.#lose(link, this.#authFailures === 1 ? 0 : null);
      return;
    }
    if (status === 400 || status === 403) {
      // The hub names the refused channel; a hub that does not gets the channels
      // this set added to those already accepted blamed, or all of them if none
      // was new.
      const named = reason.channel !== undefined && link.channels.includes(reason.channel) ? [reason.channel] : null;
      const added = link.channels.filter((c) => !this.#confirmed.has(c));
      const refused = named ?? (added.length > 0 ? added : link.channels);
      if (refused.length === 0) {
        this.#fail(error);
        return;
      }
      this.#end(link);
      this.#refuse(refused, error);
      this.#sync();
      return;
    }
    if (status === 408 || status === 425 || status === 429 || status >= 500) {
      this.#emitError(error);
      const backoff = this.#nextBackoff();
      this.#lose(link, retryAfterMs === null ? backoff : retryAfterDelay(retryAfterMs, backoff));
      return;
    }
    this.#fail(error);
  }

  /** `link` is gone; if it mattered, try again after `delayMs` (`null`: the next backoff delay). */
  #lose(link: Link, delayMs: number | null): void {
    const wasPrimary = link === this.#primary;
    const wasPending = link === this.#pending;
    if (wasPrimary && link.live && Date.now() - link.liveSince >= STABLE_MS) this.#attempt = 0;
    this.#end(link);
    if (!wasPrimary && !wasPending) return;
    if (wasPrimary) this.#setState('reconnecting');
    if (this.#pending) return; // a replacement is already on its way
    this.#retryAfter(delayMs ?? this.#nextBackoff());
  }

  #refuse(channels: readonly string[], error: HeraldError): void {
    for (const channel of channels) {
      this.#subs.refuse(channel, new HeraldError(error.code, error.message, { status: error.status, channels: [channel] }));
    }
    this.#emitError(new HeraldError(error.code, error.message, { status: error.status, channels }));
  }

  /** An error retrying cannot fix: stop until something changes. */
  #fail(error: HeraldError): void {
    this.#stopAll();
    this.#setState('closed');
    this.#emitError(error);
  }

  #end(link: Link): void {
    if (link.ended) return;
    link.ended = true;
    clearTimeout(link.graceTimer);
    link.transport?.close();
    this.#retiring.delete(link);
    if (this.#primary === link) this.#primary = null;
    if (this.#pending === link) this.#pending = null;
  }

  #stopAll(): void {
    this.#clearRetry();
    for (const link of [this.#primary, this.#pending, ...this.#retiring]) if (link) this.#end(link);
  }

  #nextBackoff(): number {
    return backoffDelay(this.#attempt++, this.#backoff);
  }

  #retryAfter(delayMs: number): void {
    this.#clearRetry();
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#sync();
    }, delayMs);
  }

  #clearRetry(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  // --- tokens ------------------------------------------------------------

  #fetchToken(): void {
    this.#tokenBusy = true;
    if (!this.#primary) this.#setState(this.#state === 'closed' ? 'connecting' : this.#state);
    this.#tokens.refresh().then(
      () => {
        this.#tokenBusy = false;
        if (this.#tokens.needed) {
          this.#tokenFailed(new Error('the token provider returned an expired token'));
        } else {
          this.#sync();
        }
      },
      (error: unknown) => {
        this.#tokenBusy = false;
        this.#tokenFailed(error);
      },
    );
  }

  #tokenFailed(cause: unknown): void {
    if (this.#closed) return;
    const reason = cause instanceof Error ? cause.message : String(cause);
    this.#emitError(new HeraldError('token_provider', `could not get a token: ${reason}`, { cause }));
    if (!this.#primary && this.#state !== 'connecting') this.#setState('reconnecting');
    this.#retryAfter(this.#nextBackoff());
  }

  /**
   * Wakes up when the token is due for renewal: the next sync fetches a new one
   * and moves the stream over to it (a new connection, resuming, before the old
   * one closes).
   */
  #scheduleRefresh(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = undefined;
    const at = this.#tokens.refreshAt;
    if (at === null || this.#closed) return;
    this.#refreshTimer = setTimeout(
      () => {
        this.#refreshTimer = undefined;
        // Timers may fire a little early: wait again rather than miss the renewal.
        if (!this.#tokens.needed) this.#scheduleRefresh();
        else this.#sync();
      },
      Math.max(0, Math.ceil(at - Date.now())),
    );
  }

  // --- page lifecycle -----------------------------------------------------

  #attach(): void {
    if (this.#detach) return;
    const stopVisibility = watchVisibility((hidden) => this.#onVisibility(hidden));
    const stopOnline = watchOnline(() => {
      if (this.#retryTimer !== undefined && !this.#paused) {
        this.#clearRetry();
        this.#sync();
      }
    });
    this.#detach = () => {
      stopVisibility();
      stopOnline();
    };
    if (isHidden()) this.#onVisibility(true);
  }

  #onVisibility(hidden: boolean): void {
    if (this.#pauseAfterMs === null || this.#closed) return;
    clearTimeout(this.#pauseTimer);
    this.#pauseTimer = undefined;
    if (hidden) {
      this.#pauseTimer = setTimeout(() => this.#pause(), this.#pauseAfterMs);
    } else if (this.#paused) {
      this.#paused = false;
      this.#attempt = 0;
      this.#sync();
    }
  }

  #pause(): void {
    this.#pauseTimer = undefined;
    if (this.#paused || this.#closed) return;
    this.#paused = true;
    this.#stopAll();
    if (this.#subs.wanted) this.#setState('reconnecting');
  }

  // --- notifications --------------------------------------------------------

  #setState(state: ConnectionState): void {
    if (this.#state === state) return;
    this.#state = state;
    for (const listener of [...this.#stateListeners]) callSafely(listener, state);
  }

  #emitError(error: HeraldError): void {
    for (const listener of [...this.#errorListeners]) callSafely(listener, error);
  }
}

function resolveTransport(choice: TransportChoice | undefined): Transport {
  switch (choice) {
    case undefined:
    case 'sse':
      return sseTransport();
    case 'ws':
      return wsTransport();
    case 'poll':
      return pollTransport();
    case 'auto':
      return autoTransport();
    default:
      if (typeof choice === 'object' && choice !== null && typeof choice.open === 'function') return choice;
      throw new TypeError(`HeraldClient: unknown transport ${JSON.stringify(choice)}`);
  }
}

function field(value: unknown, name: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[name] : undefined;
}
