/**
 * The event types an application declares: event type name → type of its data.
 *
 * ```ts
 * type AppEvents = { message: string; 'order.created': { id: number } };
 * const client = new HeraldClient<AppEvents>({ url });
 * ```
 */
export type EventMap = Record<string, unknown>;

/** The name of an event type of `M`. */
export type EventType<M extends EventMap> = keyof M & string;

/** One event published on a channel, as the hub delivers it. */
export interface HeraldEvent<Type extends string = string, Data = unknown> {
  /** The channel it arrived on. */
  readonly channel: string;
  /** Its type; `message` when the publisher named none. */
  readonly type: Type;
  /** The published JSON value; text published as such arrives as a string. */
  readonly data: Data;
  /** When the hub accepted it (RFC 3339, UTC, milliseconds). */
  readonly time: string;
  /** Its id: an opaque string that is also the position to resume from. */
  readonly id: string;
  /**
   * Every channel of this connection the event was published to, when it was more
   * than one (the event arrives once, and is handed to the subscribers of each).
   */
  readonly channels?: readonly string[];
}

/** An event of one of the types `K` of `M`, discriminated by `type`. */
export type EventOf<M extends EventMap, K extends EventType<M> = EventType<M>> = {
  [T in K]: HeraldEvent<T, M[T]>;
}[K];

/**
 * - `connecting`: opening the first connection.
 * - `open`: connected; events flow.
 * - `reconnecting`: the connection was lost (or paused on a hidden tab) and will be
 *   re-established, resuming after the last event seen.
 * - `closed`: not connected and not trying: no subscriptions, {@link HeraldClient.close}
 *   was called, or the hub refused the connection for good (see `onError`).
 */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** What the hub says about a stream once it is live. */
export interface ConnectedInfo {
  readonly connectionId: string;
  /** The token's subject, or `null` for an anonymous connection. */
  readonly user: string | null;
  /** Every channel the stream carries, with the implicit `user:<sub>` and `$broadcast`. */
  readonly channels: readonly string[];
  /** How often the hub sends a heartbeat on an idle stream (0: none, as for long-polling). */
  readonly heartbeatMs: number;
  /**
   * The position the connection started after: a client that has seen no event yet
   * resumes from it, so nothing published after the connection opened is missed.
   * `null` from a hub that does not report it.
   */
  readonly lastEventId: string | null;
  /** The transport carrying it: `sse`, `ws` or `poll`. */
  readonly transport: string;
}

/** Someone present on a channel (namespaces with presence). */
export interface PresenceMember {
  /** The token's subject. */
  readonly user: string;
  /** What the token says about the user (`herald.info`), if anything. */
  readonly info?: unknown;
  /** How many connections of that user are on the channel. */
  readonly connections: number;
}

/** A user joined a channel (their first connection) or left it (their last one). */
export interface PresenceChange {
  readonly kind: 'join' | 'leave';
  readonly user: string;
  readonly info?: unknown;
}

/**
 * The hub could not replay everything missed on some channels: their state must
 * be fetched again. Events after `id` follow normally.
 */
export interface ResetNotice {
  /** `unknown_id` (e.g. the hub restarted) or `expired` (history no longer covers the gap). */
  readonly reason: 'unknown_id' | 'expired' | (string & {});
  readonly channels: readonly string[];
  /** The position the stream resumes from. */
  readonly id: string;
}

export type Unsubscribe = () => void;

/**
 * Supplies a token; called at start and whenever the current one is about to
 * expire, has expired, or was rejected.
 */
export type TokenProvider = (context: { reason: TokenRequestReason }) => string | Promise<string>;

export type TokenRequestReason = 'initial' | 'expiring' | 'expired' | 'rejected';
