import { HeraldError, isRecord, readErrorBody, retryAfterMs } from '../errors.js';
import { connectedInfo, eventFromJson, parseJson, stringArray } from '../sse/messages.js';
import type { Transport, TransportClose, TransportConnection, TransportRequest, TransportSink } from '../transport.js';
import type { PresenceMember } from '../types.js';

/** The parts of a `WebSocket` the transport uses (so tests can hand it their own). */
export interface WebSocketLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface WsTransportOptions {
  /** Opens a socket (default: the global `WebSocket`). */
  webSocket?: (url: string) => WebSocketLike;
  /** The `fetch` used to learn why a socket was refused (default: the global one). */
  fetch?: typeof fetch;
  /** How long to wait for the hub's `connected` frame. Default 20 000 ms. */
  connectTimeoutMs?: number;
  /** How often the client pings the hub. Default 20 000 ms. */
  pingIntervalMs?: number;
  /** Silence after which the socket is taken for dead. Default: two ping intervals plus 5 s. */
  idleTimeoutMs?: number;
  /** How long a request (publish, presence, subscribe) may wait for its answer. Default 10 000 ms. */
  requestTimeoutMs?: number;
}

/** WebSocket close codes the hub uses (see the hub's WebSocket protocol). */
export const CLOSE = {
  normal: 1000,
  policy: 1008,
  tooBig: 1009,
  restart: 1012,
  slowConsumer: 4000,
  tokenExpired: 4001,
  pingTimeout: 4008,
} as const;

/**
 * What a close code means for the client: `token_expired` (renew the token, then
 * reconnect), `stop` (retrying cannot help) or `reconnect` (with backoff, resuming).
 */
export function closeAction(code: number): 'reconnect' | 'token_expired' | 'stop' {
  if (code === CLOSE.tokenExpired) return 'token_expired';
  if (code === CLOSE.policy || code === 1003 || code === 1007) return 'stop';
  return 'reconnect';
}

/** The HTTP status that matches a WebSocket error code, for a refused channel. */
export function statusOfCode(code: string): number {
  switch (code) {
    case 'unauthorized':
      return 401;
    case 'forbidden':
      return 403;
    case 'unavailable':
      return 503;
    case 'rate_limited':
      return 429;
    default:
      return 400;
  }
}

/**
 * The WebSocket transport: `GET /ws` (see the hub's WebSocket protocol). The same
 * events as SSE, plus what needs the client to talk back on the connection:
 * channels added and removed without reconnecting (each added one resuming after
 * the client's last event), client events ({@link TransportConnection.publish}) and
 * presence queries. A browser cannot send headers with a WebSocket, so the token
 * goes in the `token` query parameter (which the hub never logs). A browser does not
 * show why an upgrade was refused either: when the socket fails before it opens,
 * the transport asks `GET /poll` with the same channels and token, which answers at
 * once with the hub's status and JSON error.
 */
export function wsTransport(options: WsTransportOptions = {}): Transport {
  return {
    name: 'ws',
    open(request, sink) {
      return new WsConnection(request, sink, options);
    },
  };
}

/** The `/ws` URL of a request (`http` becomes `ws`, `https` becomes `wss`). */
export function wsUrl(request: Pick<TransportRequest, 'url' | 'channels' | 'lastEventId' | 'token'>, base?: string): string {
  const query = new URLSearchParams();
  for (const channel of request.channels) query.append('channel', channel);
  if (request.lastEventId !== null) query.set('last_event_id', request.lastEventId);
  if (request.token !== null) query.set('token', request.token);
  const origin = base ?? (typeof location === 'undefined' ? 'http://localhost' : location.href);
  const search = query.toString();
  const url = new URL(`${request.url}/ws${search ? `?${search}` : ''}`, origin);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

interface Pending {
  resolve(frame: Record<string, unknown>): void;
  reject(error: HeraldError): void;
  timer: ReturnType<typeof setTimeout>;
}

class WsConnection implements TransportConnection {
  readonly #request: TransportRequest;
  readonly #sink: TransportSink;
  readonly #options: WsTransportOptions;
  readonly #socket: WebSocketLike | null = null;
  readonly #pending = new Map<number, Pending>();
  /** The channels asked for (not the hub's implicit ones). */
  readonly #channels: Set<string>;
  #nextId = 1;
  #opened = false;
  #live = false;
  #done = false;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #pinger: ReturnType<typeof setInterval> | undefined;

  constructor(request: TransportRequest, sink: TransportSink, options: WsTransportOptions) {
    this.#request = request;
    this.#sink = sink;
    this.#options = options;
    this.#channels = new Set(request.channels);
    this.#arm(options.connectTimeoutMs ?? 20_000, 'no connected frame from the hub in time');
    let socket: WebSocketLike;
    try {
      socket = (options.webSocket ?? defaultWebSocket)(wsUrl(request));
    } catch (error) {
      queueMicrotask(() => this.#finish({ kind: 'network', message: describe(error) }));
      return;
    }
    this.#socket = socket;
    socket.onopen = () => {
      this.#opened = true;
    };
    socket.onmessage = (event) => this.#onFrame(event.data);
    socket.onerror = () => {};
    socket.onclose = (event) => this.#onClose(event.code, event.reason);
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    this.#stopTimers();
    this.#failPending(new HeraldError('closed', 'the connection closed'));
    const socket = this.#socket;
    if (socket) {
      socket.onmessage = null;
      socket.onclose = null;
      try {
        socket.close(CLOSE.normal);
      } catch {
        /* already closed */
      }
    }
  }

  setChannels(channels: readonly string[], lastEventId: string | null): boolean {
    if (!this.#live || this.#done) return false;
    const wanted = new Set(channels);
    for (const channel of [...this.#channels]) {
      if (wanted.has(channel)) continue;
      this.#channels.delete(channel);
      this.#ask({ op: 'unsubscribe', channel }).catch(() => undefined);
    }
    for (const channel of wanted) {
      if (this.#channels.has(channel)) continue;
      this.#channels.add(channel);
      const frame: Record<string, unknown> = { op: 'subscribe', channel };
      if (lastEventId !== null) frame.last_event_id = lastEventId;
      this.#ask(frame).catch((error: HeraldError) => {
        if (this.#done || error.code === 'closed' || error.code === 'timeout') return;
        this.#channels.delete(channel);
        const refused = new HeraldError(error.code, error.message, { status: statusOfCode(error.code), channels: [channel] });
        this.#sink.message({ kind: 'refused', channel, error: refused });
      });
    }
    return true;
  }

  async publish(channel: string, type: string, data: unknown): Promise<{ id: string }> {
    const answer = await this.#ask({ op: 'publish', channel, type, data });
    if (typeof answer.event_id !== 'string') throw new HeraldError('bad_response', 'the hub acknowledged the event without an id');
    return { id: answer.event_id };
  }

  async presence(channel: string): Promise<PresenceMember[]> {
    const answer = await this.#ask({ op: 'presence', channel });
    return presenceMembers(answer.users);
  }

  /** Sends a request frame and waits for the answer with its id. */
  #ask(frame: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (!this.#live || this.#done || !this.#socket) {
      return Promise.reject(new HeraldError('not_connected', 'the WebSocket is not connected'));
    }
    const id = this.#nextId++;
    const socket = this.#socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new HeraldError('timeout', `no answer from the hub to ${String(frame.op)}`));
      }, this.#options.requestTimeoutMs ?? 10_000);
      this.#pending.set(id, { resolve, reject, timer });
      try {
        socket.send(JSON.stringify({ ...frame, id }));
      } catch (error) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new HeraldError('network', describe(error)));
      }
    });
  }

  #onFrame(data: unknown): void {
    if (this.#done) return;
    if (this.#live) this.#arm(this.#idleTimeoutMs(), 'the connection went silent');
    const frame = typeof data === 'string' ? parseJson(data) : undefined;
    if (!isRecord(frame)) return;
    const id = frame.id;
    if (typeof id === 'number' && (frame.type === 'ack' || frame.type === 'error' || frame.type === 'presence' || frame.type === 'pong')) {
      const pending = this.#pending.get(id);
      if (!pending) return;
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      if (frame.type === 'error') {
        const code = typeof frame.code === 'string' ? frame.code : 'error';
        pending.reject(new HeraldError(code, typeof frame.message === 'string' ? frame.message : code));
      } else {
        pending.resolve(frame);
      }
      return;
    }
    switch (frame.type) {
      case 'connected':
        if (this.#live) return;
        this.#live = true;
        this.#arm(this.#idleTimeoutMs(), 'the connection went silent');
        this.#startPinging();
        this.#sink.message({ kind: 'connected', info: connectedInfo(frame, 'ws') });
        return;
      case 'event': {
        const event = eventFromJson(frame, 'event', null, 'message');
        if (event) this.#sink.message({ kind: 'event', event });
        return;
      }
      case 'reset':
        if (typeof frame.id !== 'string') return;
        this.#sink.message({
          kind: 'reset',
          notice: { reason: typeof frame.reason === 'string' ? frame.reason : 'unknown_id', channels: stringArray(frame.channels), id: frame.id },
        });
        return;
      case 'shutdown':
        this.#sink.message({ kind: 'shutdown', retryMs: typeof frame.retry_ms === 'number' ? frame.retry_ms : null });
        return;
      case 'token_expired':
        this.#expire();
        return;
      default:
        return;
    }
  }

  #expire(): void {
    if (this.#done) return;
    this.#sink.message({ kind: 'token_expired' });
  }

  #onClose(code: number, reason: string): void {
    if (this.#done) return;
    if (!this.#opened) {
      void this.#whyRefused();
      return;
    }
    switch (closeAction(code)) {
      case 'token_expired':
        this.#expire();
        if (!this.#done) this.#finish({ kind: 'network', message: 'the token expired' });
        return;
      case 'stop':
        this.#finish({ kind: 'rejected', status: 400, code: `ws_close_${code}`, message: reason || `closed with ${code}`, retryAfterMs: null });
        return;
      case 'reconnect':
        this.#finish(code === CLOSE.normal ? { kind: 'ended' } : { kind: 'network', message: `closed with ${code}${reason ? `: ${reason}` : ''}` });
        return;
    }
  }

  /** The socket failed before it opened: ask the hub over HTTP what it thinks of the request. */
  async #whyRefused(): Promise<void> {
    const fetchImpl = this.#options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!fetchImpl) {
      this.#finish({ kind: 'network', message: 'the WebSocket could not connect' });
      return;
    }
    const query = new URLSearchParams();
    for (const channel of this.#request.channels) query.append('channel', channel);
    query.set('timeout', '0');
    const headers: Record<string, string> = {};
    if (this.#request.token !== null) headers.Authorization = `Bearer ${this.#request.token}`;
    try {
      const response = await fetchImpl(`${this.#request.url}/poll?${query.toString()}`, {
        headers,
        credentials: this.#request.credentials,
        cache: 'no-store',
      });
      if (this.#done) return;
      if (response.ok) {
        void response.body?.cancel().catch(() => undefined);
        this.#finish({ kind: 'network', message: 'the WebSocket could not connect' });
        return;
      }
      const retryAfter = retryAfterMs(response);
      const body = await readErrorBody(response);
      this.#finish({ kind: 'rejected', status: response.status, ...body, retryAfterMs: retryAfter });
    } catch (error) {
      this.#finish({ kind: 'network', message: `the WebSocket could not connect: ${describe(error)}` });
    }
  }

  #startPinging(): void {
    const every = this.#options.pingIntervalMs ?? 20_000;
    this.#pinger = setInterval(() => {
      this.#ask({ op: 'ping' }).catch(() => undefined);
    }, every);
  }

  #idleTimeoutMs(): number {
    return this.#options.idleTimeoutMs ?? (this.#options.pingIntervalMs ?? 20_000) * 2 + 5000;
  }

  #arm(ms: number, why: string): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#finish({ kind: 'network', message: why }), ms);
  }

  #stopTimers(): void {
    clearTimeout(this.#watchdog);
    clearInterval(this.#pinger);
  }

  #failPending(error: HeraldError): void {
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.#pending.clear();
  }

  #finish(reason: TransportClose): void {
    if (this.#done) return;
    this.close();
    this.#sink.closed(reason);
  }
}

/** The members of a presence answer. */
export function presenceMembers(value: unknown): PresenceMember[] {
  if (!Array.isArray(value)) return [];
  const members: PresenceMember[] = [];
  for (const entry of value) {
    if (!isRecord(entry) || typeof entry.user !== 'string') continue;
    const connections = typeof entry.connections === 'number' ? entry.connections : 1;
    members.push(entry.info === undefined || entry.info === null ? { user: entry.user, connections } : { user: entry.user, info: entry.info, connections });
  }
  return members;
}

function defaultWebSocket(url: string): WebSocketLike {
  if (typeof WebSocket === 'undefined') throw new Error('no WebSocket in this environment');
  return new WebSocket(url) as unknown as WebSocketLike;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
