/**
 * The transport extension point. A transport carries one connection's worth of
 * hub traffic and translates it into {@link HubMessage}s; everything else
 * (subscriptions, resume, de-duplication, backoff, token refresh, state) lives in
 * the client and is shared by every transport.
 *
 * The client opens a new connection for each change of token and after each loss,
 * so a transport never reconnects on its own. A change of channel set also opens a
 * new connection, unless the connection can change its channels in place
 * ({@link TransportConnection.setChannels}, as the WebSocket does). The transports:
 * SSE ({@link sseTransport}, the default), WebSocket ({@link wsTransport}, which can
 * also publish client events), long-polling ({@link pollTransport}) and SSE falling
 * back to long-polling ({@link autoTransport}).
 */
import type { HeraldError } from './errors.js';
import type { ConnectedInfo, HeraldEvent, PresenceMember, ResetNotice } from './types.js';

/** What a connection is opened with. */
export interface TransportRequest {
  /** The hub's base URL, without a trailing slash (`https://hub.example.com`). */
  readonly url: string;
  /** The channels to subscribe to, sorted; never `$`-prefixed hub channels. */
  readonly channels: readonly string[];
  /** The bearer token, or `null` for anonymous (or cookie) authentication. */
  readonly token: string | null;
  /** Resume after this event id; `null` to start with live events only. */
  readonly lastEventId: string | null;
  /** Whether cookies go with the request (`include` for a cookie-authenticated cross-origin hub). */
  readonly credentials: RequestCredentials;
}

/** What the hub said on a connection, independent of the transport. */
export type HubMessage =
  /** The subscription is live; always the first message. */
  | { readonly kind: 'connected'; readonly info: ConnectedInfo }
  | { readonly kind: 'event'; readonly event: HeraldEvent }
  | { readonly kind: 'reset'; readonly notice: ResetNotice }
  /** The hub is going away; reconnect after `retryMs` (elsewhere if possible). */
  | { readonly kind: 'shutdown'; readonly retryMs: number | null }
  /** The token expired; the hub ends the connection. */
  | { readonly kind: 'token_expired' }
  /** The hub refused a channel added with `setChannels`; the connection carries on without it. */
  | { readonly kind: 'refused'; readonly channel: string; readonly error: HeraldError };

/** Why a connection ended (other than by {@link TransportConnection.close}). */
export type TransportClose =
  /** The hub ended the stream without saying why. */
  | { readonly kind: 'ended' }
  /** The connection failed, dropped, or went silent for too long. */
  | { readonly kind: 'network'; readonly message: string }
  /** The hub refused the connection with an HTTP error. */
  | {
      readonly kind: 'rejected';
      readonly status: number;
      readonly code: string;
      readonly message: string;
      /** `Retry-After`, when the hub sent one (and CORS lets the page read it). */
      readonly retryAfterMs: number | null;
      /** The refused channel, when the hub named it. */
      readonly channel?: string;
    };

/** Where a connection reports to. */
export interface TransportSink {
  message(message: HubMessage): void;
  /** Called at most once, and never after `close()`. */
  closed(reason: TransportClose): void;
}

/** An open (or opening) connection. */
export interface TransportConnection {
  /** Ends the connection; no callback follows. */
  close(): void;
  /**
   * Changes the channels of a live connection without reconnecting; channels added
   * resume after `lastEventId`. Returns false when it cannot (then the client opens
   * a new connection). A refused channel is reported as a `refused` message.
   */
  setChannels?(channels: readonly string[], lastEventId: string | null): boolean;
  /** Publishes a client event on the connection (WebSocket); rejects with a `HeraldError`. */
  publish?(channel: string, type: string, data: unknown): Promise<{ id: string }>;
  /** Who is present on `channel`, asked on the connection. */
  presence?(channel: string): Promise<PresenceMember[]>;
}

export interface Transport {
  /** A short name for diagnostics (`sse`, `ws`, `poll`, `auto`). */
  readonly name: string;
  open(request: TransportRequest, sink: TransportSink): TransportConnection;
}
