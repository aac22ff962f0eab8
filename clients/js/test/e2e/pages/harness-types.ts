// What the vanilla test page exposes to the tests, on `window.harness`.
import type { BackoffOptions, ConnectionState } from '@herald/client';

export interface HarnessStart {
  url: string;
  /** A fixed token; or, with `tokenFromTest`, ask the test (`window.mintTestToken`) for each one. */
  token?: string;
  tokenFromTest?: boolean;
  channels: string[];
  reconnect?: Partial<BackoffOptions>;
  pauseAfterMs?: number;
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
