import { readErrorBody, retryAfterMs } from '../errors.js';
import type { Transport, TransportClose, TransportConnection, TransportRequest, TransportSink } from '../transport.js';
import { frameToMessage } from './messages.js';
import { SseParser } from './parser.js';

export interface SseTransportOptions {
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** How long to wait for the hub's `connected` event. Default 20 000 ms. */
  connectTimeoutMs?: number;
  /**
   * How long an open stream may stay silent before it is taken for dead and
   * dropped. Default: two heartbeat periods (as announced by the hub) plus 5 s.
   */
  idleTimeoutMs?: number;
}

/**
 * Server-Sent Events over `fetch()`: `GET /events?channel=...&envelope=1`, read as
 * a stream and parsed here. Unlike `EventSource` this sees the status and JSON
 * body of a refused connection, sends the token in an `Authorization` header
 * rather than the URL, receives every event type without registering names in
 * advance, and leaves reconnection to the client.
 */
export function sseTransport(options: SseTransportOptions = {}): Transport {
  return {
    name: 'sse',
    open(request, sink) {
      const connection = new SseConnection(request, sink, options);
      void connection.run();
      return connection;
    },
  };
}

/** The `/events` URL of a request. */
export function eventsUrl(request: Pick<TransportRequest, 'url' | 'channels' | 'lastEventId'>): string {
  const query = new URLSearchParams();
  for (const channel of request.channels) query.append('channel', channel);
  if (request.lastEventId !== null) query.set('last_event_id', request.lastEventId);
  query.set('envelope', '1');
  return `${request.url}/events?${query.toString()}`;
}

class SseConnection implements TransportConnection {
  readonly #request: TransportRequest;
  readonly #sink: TransportSink;
  readonly #options: SseTransportOptions;
  readonly #abort = new AbortController();
  #done = false;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #idleTimeoutMs: number | null = null;

  constructor(request: TransportRequest, sink: TransportSink, options: SseTransportOptions) {
    this.#request = request;
    this.#sink = sink;
    this.#options = options;
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#watchdog);
    this.#abort.abort();
  }

  async run(): Promise<void> {
    const fetchImpl = this.#options.fetch ?? globalThis.fetch.bind(globalThis);
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this.#request.token !== null) headers.Authorization = `Bearer ${this.#request.token}`;
    this.#arm(this.#options.connectTimeoutMs ?? 20_000, 'no connected event from the hub in time');

    let response: Response;
    try {
      response = await fetchImpl(eventsUrl(this.#request), {
        headers,
        credentials: this.#request.credentials,
        cache: 'no-store',
        signal: this.#abort.signal,
      });
    } catch (error) {
      this.#finish({ kind: 'network', message: describe(error) });
      return;
    }
    if (!response.ok) {
      const retryAfter = retryAfterMs(response);
      const body = await readErrorBody(response);
      this.#finish({ kind: 'rejected', status: response.status, ...body, retryAfterMs: retryAfter });
      return;
    }
    const type = response.headers.get('content-type') ?? '';
    if (!response.body || !type.startsWith('text/event-stream')) {
      void response.body?.cancel().catch(() => undefined);
      this.#finish({ kind: 'network', message: `expected an event stream, got ${type || 'no content type'}` });
      return;
    }

    const parser = new SseParser((frame) => {
      if (this.#done) return;
      const message = frameToMessage(frame);
      if (!message) return;
      if (message.kind === 'connected') {
        this.#idleTimeoutMs = this.#options.idleTimeoutMs ?? message.info.heartbeatMs * 2 + 5000;
        this.#arm(this.#idleTimeoutMs, 'the stream went silent');
      }
      this.#sink.message(message);
    });
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.#done) return;
        if (done) break;
        if (this.#idleTimeoutMs !== null) this.#arm(this.#idleTimeoutMs, 'the stream went silent');
        parser.push(value);
      }
    } catch (error) {
      this.#finish({ kind: 'network', message: describe(error) });
      return;
    }
    this.#finish({ kind: 'ended' });
  }

  #arm(ms: number, why: string): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#finish({ kind: 'network', message: why }), ms);
  }

  #finish(reason: TransportClose): void {
    if (this.#done) return;
    this.close();
    this.#sink.closed(reason);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
