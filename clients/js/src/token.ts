import type { TokenProvider, TokenRequestReason } from './types.js';

/** When a JWT expires (`exp`, in ms since the epoch), or `null` if it cannot be read. */
export function tokenExpiry(token: string): number | null {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (typeof claims === 'object' && claims !== null && 'exp' in claims) {
      const { exp } = claims;
      if (typeof exp === 'number' && Number.isFinite(exp)) return exp * 1000;
    }
  } catch {
    /* not a readable JWT: treat as opaque */
  }
  return null;
}

/**
 * The current token and how to get the next one. A static token is used as is;
 * a provider is asked again before the token expires, when it has expired, and
 * when the hub rejected it. Concurrent requests share one call.
 */
export class TokenSource {
  readonly #provider: TokenProvider | null;
  readonly #marginMs: number;
  readonly #now: () => number;
  #token: string | null;
  #expiresAt: number | null = null;
  #receivedAt = 0;
  #stale: 'expired' | 'rejected' | null = null;
  #inflight: Promise<string> | null = null;

  readonly #onToken: () => void;

  /** `onToken` is called whenever a new token was stored. */
  constructor(
    source: string | TokenProvider | undefined,
    marginMs: number,
    onToken: () => void = () => {},
    now: () => number = Date.now,
  ) {
    this.#provider = typeof source === 'function' ? source : null;
    this.#marginMs = marginMs;
    this.#onToken = onToken;
    this.#now = now;
    this.#token = typeof source === 'string' ? source : null;
    if (this.#token) this.#remember(this.#token);
  }

  /** The token to use now (`null` for anonymous use or before the first one). */
  get current(): string | null {
    return this.#token;
  }

  get refreshable(): boolean {
    return this.#provider !== null;
  }

  /** Whether a new token should be fetched now: none yet, rejected, or due for renewal. */
  get needed(): boolean {
    if (!this.#provider) return false;
    if (this.#token === null || this.#stale !== null) return true;
    const at = this.refreshAt;
    return at !== null && this.#now() >= at;
  }

  /** Why the next token is needed, for the provider. */
  get reason(): TokenRequestReason {
    if (this.#token === null) return 'initial';
    if (this.#stale !== null) return this.#stale;
    if (this.#expiresAt !== null && this.#now() >= this.#expiresAt) return 'expired';
    return 'expiring';
  }

  /**
   * When to fetch the next token ahead of expiry: `margin` before `exp`, but never
   * earlier than two thirds into the token's remaining life when it was received.
   * `null` when there is no provider or the token's expiry is unknown.
   */
  get refreshAt(): number | null {
    if (!this.#provider || this.#expiresAt === null) return null;
    const life = Math.max(0, this.#expiresAt - this.#receivedAt);
    return this.#expiresAt - Math.min(this.#marginMs, life / 3);
  }

  /** The hub rejected the current token or said it expired: the next connection needs a new one. */
  invalidate(why: 'expired' | 'rejected'): void {
    if (this.#provider) this.#stale = why;
  }

  /** Asks the provider for a new token (one call at a time). */
  refresh(reason: TokenRequestReason = this.reason): Promise<string> {
    const provider = this.#provider;
    if (!provider) return Promise.reject(new Error('no token provider'));
    if (!this.#inflight) {
      this.#inflight = Promise.resolve()
        .then(() => provider({ reason }))
        .then(
          (token) => {
            this.#inflight = null;
            if (typeof token !== 'string' || token === '') throw new Error('the token provider returned no token');
            this.#token = token;
            this.#stale = null;
            this.#remember(token);
            this.#onToken();
            return token;
          },
          (error: unknown) => {
            this.#inflight = null;
            throw error;
          },
        );
    }
    return this.#inflight;
  }

  #remember(token: string): void {
    this.#receivedAt = this.#now();
    this.#expiresAt = tokenExpiry(token);
  }
}
