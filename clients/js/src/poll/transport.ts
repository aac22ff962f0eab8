import { isRecord, readErrorBody, retryAfterMs } from '../errors.js';
import { eventFromJson, stringArray } from '../sse/messages.js';
import { sseTransport, type SseTransportOptions } from '../sse/transport.js';
import type { HubMessage, Transport, TransportClose, TransportConnection, TransportRequest, TransportSink } from '../transport.js';

export interface PollTransportOptions {
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** How long the hub holds a request open when there is nothing to deliver, in seconds. Default 25 (the hub caps it at 55). */
  waitSeconds?: number;
  /** How much longer than that the client waits for an answer before taking the request for lost. Default 10 000 ms. */
  graceMs?: number;
}

/** One answer of `GET /poll`. */
export interface PollAnswer {
  readonly messages: HubMessage[];
  readonly lastEventId: string;
  readonly retryMs: number;
  readonly user: string | null;
  readonly channels: string[];
}

/** Reads a `GET /poll` answer; `null` when it is not one. */
export function parsePollAnswer(json: unknown): PollAnswer | null {
  if (!isRecord(json) || !Array.isArray(json.events) || typeof json.last_event_id !== 'string') return null;
  const messages: HubMessage[] = [];
  for (const raw of json.events) {
    const event = eventFromJson(raw, 'type', null, 'message');
    if (event) messages.push({ kind: 'event', event });
  }
  const reset = json.reset;
  if (isRecord(reset) && typeof reset.id === 'string') {
    messages.push({
      kind: 'reset',
      notice: { reason: typeof reset.reason === 'string' ? reset.reason : 'unknown_id', channels: stringArray(reset.channels), id: reset.id },
    });
  }
  return {
    messages,
    lastEventId: json.last_event_id,
    retryMs: typeof json.retry_ms === 'number' ? json.retry_ms : 0,
    user: typeof json.user === 'string' ? json.user : null,
    channels: stringArray(json.channels),
  };
}

/** The `/poll` URL of a request. */
export function pollUrl(request: Pick<TransportRequest, 'url' | 'channels'>, lastEventId: string | null, waitSeconds: number): string {
  const query = new URLSearchParams();
  for (const channel of request.channels) query.append('channel', channel);
  if (lastEventId !== null) query.set('last_event_id', lastEventId);
  query.set('timeout', String(waitSeconds));
  return `${request.url}/poll?${query.toString()}`;
}

/**
 * Long-polling: `GET /poll`, one request after another, for networks that will
 * not carry a stream. The first request answers at once (the hub's position, or
 * what was missed since the last event id) and counts as the connection opening;
 * each next one sends the previous answer's `last_event_id`, so nothing kept in
 * history is lost between requests. Live-only events (typing indicators, presence
 * changes) published between two requests are not seen.
 */
export function pollTransport(options: PollTransportOptions = {}): Transport {
  return {
    name: 'poll',
    open(request, sink) {
      const connection = new PollConnection(request, sink, options);
      void connection.run();
      return connection;
    },
  };
}

class PollConnection implements TransportConnection {
  readonly #request: TransportRequest;
  readonly #sink: TransportSink;
  readonly #options: PollTransportOptions;
  readonly #abort = new AbortController();
  #done = false;

  constructor(request: TransportRequest, sink: TransportSink, options: PollTransportOptions) {
    this.#request = request;
    this.#sink = sink;
    this.#options = options;
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    this.#abort.abort();
  }

  async run(): Promise<void> {
    const fetchImpl = this.#options.fetch ?? globalThis.fetch.bind(globalThis);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.#request.token !== null) headers.Authorization = `Bearer ${this.#request.token}`;
    const waitSeconds = this.#options.waitSeconds ?? 25;
    let cursor = this.#request.lastEventId;
    let first = true;
    while (!this.#done) {
      const wait = first ? 0 : waitSeconds;
      const timer = setTimeout(() => this.#finish({ kind: 'network', message: 'no answer from the hub in time' }), wait * 1000 + (this.#options.graceMs ?? 10_000));
      let response: Response;
      let body: unknown;
      try {
        response = await fetchImpl(pollUrl(this.#request, cursor, wait), {
          headers,
          credentials: this.#request.credentials,
          cache: 'no-store',
          signal: this.#abort.signal,
        });
        if (!response.ok) {
          clearTimeout(timer);
          const retryAfter = retryAfterMs(response);
          const error = await readErrorBody(response);
          this.#finish({ kind: 'rejected', status: response.status, ...error, retryAfterMs: retryAfter });
          return;
        }
        body = await response.json();
      } catch (error) {
        clearTimeout(timer);
        this.#finish({ kind: 'network', message: error instanceof Error ? error.message : String(error) });
        return;
      }
      clearTimeout(timer);
      if (this.#done) return;
      const answer = parsePollAnswer(body);
      if (!answer) {
        this.#finish({ kind: 'network', message: 'the hub answered the poll with something else' });
        return;
      }
      if (first) {
        first = false;
        this.#sink.message({
          kind: 'connected',
          info: {
            connectionId: '',
            user: answer.user,
            channels: answer.channels.length > 0 ? answer.channels : [...this.#request.channels],
            heartbeatMs: 0,
            lastEventId: cursor ?? answer.lastEventId,
            transport: 'poll',
          },
        });
      }
      for (const message of answer.messages) {
        if (this.#done) return;
        this.#sink.message(message);
      }
      cursor = answer.lastEventId;
      if (answer.retryMs > 0 && !this.#done) {
        this.#sink.message({ kind: 'shutdown', retryMs: answer.retryMs });
        this.#finish({ kind: 'ended' });
        return;
      }
    }
  }

  #finish(reason: TransportClose): void {
    if (this.#done) return;
    this.close();
    this.#sink.closed(reason);
  }
}

export interface AutoTransportOptions {
  sse?: SseTransportOptions;
  poll?: PollTransportOptions;
  /**
   * How long an SSE connection may take to deliver the hub's `connected` event
   * (which the hub sends as soon as the subscription is live) before streaming is
   * taken to be blocked and the client switches to long-polling. Default 8000 ms.
   */
  fallbackAfterMs?: number;
}

/** A transport that may change its mind: `current` names the one in use. */
export interface AutoTransport extends Transport {
  /** `sse`, or `poll` once streaming was found to be blocked. */
  readonly current: 'sse' | 'poll';
}

/**
 * SSE, falling back to long-polling when streaming is blocked. The rule: an SSE
 * request that has not failed, yet has not delivered the `connected` event within
 * `fallbackAfterMs`, is held up by something on the way (a proxy or antivirus that
 * buffers responses until they end, so the stream's first bytes never arrive). That
 * connection is dropped and the same request goes to `GET /poll`, which needs no
 * streaming; the client stays on long-polling from then on. A request that fails
 * outright (the hub is down, refuses the token) is not a reason to switch: it is
 * retried as usual.
 */
export function autoTransport(options: AutoTransportOptions = {}): AutoTransport {
  const sse = sseTransport(options.sse);
  const poll = pollTransport(options.poll);
  const fallbackAfterMs = options.fallbackAfterMs ?? 8000;
  let current: 'sse' | 'poll' = 'sse';
  return {
    name: 'auto',
    get current() {
      return current;
    },
    open(request, sink) {
      if (current === 'poll') return poll.open(request, sink);
      let inner: TransportConnection;
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        inner.close();
        current = 'poll';
        inner = poll.open(request, sink);
      }, fallbackAfterMs);
      inner = sse.open(request, {
        message(message) {
          if (message.kind === 'connected') {
            settled = true;
            clearTimeout(timer);
          }
          sink.message(message);
        },
        closed(reason) {
          settled = true;
          clearTimeout(timer);
          sink.closed(reason);
        },
      });
      return {
        close() {
          settled = true;
          clearTimeout(timer);
          inner.close();
        },
      };
    },
  };
}
