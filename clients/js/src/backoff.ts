/** Reconnection delays: exponential growth with random jitter. */
export interface BackoffOptions {
  /** The delay ceiling of the first retry. Default 1000 ms. */
  initialDelayMs: number;
  /** The largest delay. Default 30 000 ms. */
  maxDelayMs: number;
  /** Growth per failed attempt. Default 2. */
  multiplier: number;
  /**
   * The share of each delay that is random, from 0 (none) to 1 (anywhere from 0
   * up to the ceiling). Default 0.5: a delay lies between half the ceiling and the
   * ceiling, which spreads a crowd of clients reconnecting after an outage.
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = {
  initialDelayMs: 1000,
  maxDelayMs: 30_000,
  multiplier: 2,
  jitter: 0.5,
};

/**
 * The delay before retry number `attempt` (0 for the first):
 * `ceiling = min(max, initial * multiplier^attempt)`, and the delay lies in
 * `[ceiling * (1 - jitter), ceiling]`.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const { initialDelayMs, maxDelayMs, multiplier } = options;
  const jitter = Math.min(1, Math.max(0, options.jitter));
  const growth = Math.pow(Math.max(1, multiplier), Math.max(0, attempt));
  const ceiling = Math.min(maxDelayMs, initialDelayMs * growth);
  return Math.round(ceiling * (1 - jitter * random()));
}

/**
 * The delay after the hub asked for `retryAfterMs` (429/503): at least that,
 * plus up to a fifth more so that clients told the same do not return together.
 */
export function retryAfterDelay(retryAfterMs: number, backoffMs: number, random: () => number = Math.random): number {
  return Math.max(backoffMs, Math.round(retryAfterMs * (1 + 0.2 * random())));
}
