// What the vanilla test page exposes to the tests, on `window.harness`.
import type { BackoffOptions, ConnectionState, PresenceChange, PresenceMember } from '@herald/client';

export interface HarnessStart {
  url: string;
  /** A fixed token; or, with `tokenFromTest`, ask the test (`window.mintTestToken`) for each one. */
  token?: string;
  tokenFromTest?: boolean;
  channels: string[];
  reconnect?: Partial<BackoffOptions>;
  pauseAfterMs?: number;
  /** Default `sse`. */
  transport?: 'sse' | 'ws' | 'poll' | 'auto';
  /** For `auto`: how long the stream may take to open before the client switches to long-polling. */
  fallbackAfterMs?: number;
}

export interface Received {
  channel: string;
  type: string;
  data: unknown;
  id: string;
  /** Which subscription recorded it: the channel, or `channel#type` for a typed one. */
  via: string;
}

export interface Harness {
  start(options: HarnessStart): void;
  /** Subscribes to several channels in one go (one tick). */
  subscribe(channels: string[]): void;
  subscribeType(channel: string, type: string): void;
  unsubscribe(channel: string): void;
  /** Drops every open connection as a network failure would. */
  drop(): void;
  setHidden(hidden: boolean): void;
  state(): ConnectionState;
  lastEventId(): string | null;
  connectedChannels(): readonly string[];
  /** The transport of the current connection (`sse`, `ws`, `poll`), or null. */
  transportInUse(): string | null;
  /** `client.publish`; resolves with the id, or `error:<code>`. */
  publish(channel: string, type: string, data: unknown): Promise<string>;
  /** `client.presence`; the users, or `error:<code>`. */
  presence(channel: string): Promise<PresenceMember[] | string>;
  /** Records the presence changes of `channel` in `presenceChanges`. */
  watchPresence(channel: string): void;
  presenceChanges: PresenceChange[];
  received: Received[];
  states: ConnectionState[];
  resets: Array<{ channel: string; reason: string; id: string; refetched: number }>;
  errors: Array<{ code: string; channels: readonly string[] }>;
  tokenReasons: string[];
}

declare global {
  interface Window {
    harness: Harness;
    mintTestToken?: () => Promise<string>;
  }
}
