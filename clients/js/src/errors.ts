/** An error the hub reported, or a failure of the client on the hub's behalf. */
export class HeraldError extends Error {
  override readonly name = 'HeraldError';
  /**
   * The hub's error code (`forbidden`, `invalid_channel`, `too_many_channels`,
   * `token_expired`, ...) or one of the client's: `network`, `token_provider`,
   * `no_token`, `closed`, `bad_response`.
   */
  readonly code: string;
  /** The HTTP status, when there was a response. */
  readonly status: number | null;
  /** The channels the error concerns (a refused subscription), if any. */
  readonly channels: readonly string[];

  constructor(
    code: string,
    message: string,
    options: { status?: number | null; channels?: readonly string[]; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status ?? null;
    this.channels = options.channels ?? [];
  }
}

/** The parts of the hub's `{"error":{"code","message"}}` body. */
export interface HubErrorBody {
  code: string;
  message: string;
  /** The channel the error is about, when the hub names one. */
  channel?: string;
}

/** Reads an error response's body; tolerates bodies that are not the hub's JSON. */
export async function readErrorBody(response: Response): Promise<HubErrorBody> {
  const fallback = { code: `http_${response.status}`, message: response.statusText || `HTTP ${response.status}` };
  let text: string;
  try {
    text = await response.text();
  } catch {
    return fallback;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (isRecord(parsed) && isRecord(parsed.error)) {
      const { code, message, channel } = parsed.error;
      if (typeof code === 'string') {
        const body = { code, message: typeof message === 'string' ? message : code };
        return typeof channel === 'string' ? { ...body, channel } : body;
      }
    }
  } catch {
    /* not JSON */
  }
  return text ? { ...fallback, message: text.slice(0, 500) } : fallback;
}

/** `Retry-After` in milliseconds (seconds or an HTTP date), when present and readable. */
export function retryAfterMs(response: Response, now = Date.now()): number | null {
  const value = response.headers.get('retry-after');
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
