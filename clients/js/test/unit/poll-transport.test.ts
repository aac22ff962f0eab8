import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { autoTransport, parsePollAnswer, pollTransport, pollUrl } from '../../src/poll/transport.js';
import type { HubMessage, TransportClose, TransportConnection, TransportRequest } from '../../src/transport.js';

const request: TransportRequest = {
  url: 'https://hub.test',
  channels: ['a', 'b'],
  token: 'tok',
  lastEventId: null,
  credentials: 'include',
};

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

const answer = (lastEventId: string, events: unknown[] = [], extra: Record<string, unknown> = {}) => ({
  events,
  reset: null,
  last_event_id: lastEventId,
  retry_ms: 0,
  user: 'ann',
  channels: ['a', 'b', 'user:ann', '$broadcast'],
  ...extra,
});

const envelope = (channel: string, id: string, data: unknown = id) => ({ channel, type: 'message', data, time: 't', id });

/** A fetch that answers from a script, one entry per request; requests past the end wait until aborted. */
function scripted(answers: Array<Response | Error>) {
  const urls: string[] = [];
  const inits: RequestInit[] = [];
  const fetchImpl = ((url: string, init: RequestInit) => {
    urls.push(url);
    inits.push(init);
    const next = answers.shift();
    if (next === undefined) {
      return new Promise((_resolve, reject) => {
        init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      });
    }
    return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
  }) as unknown as typeof fetch;
  return { fetchImpl, urls, inits };
}

const opened: TransportConnection[] = [];
afterEach(() => {
  for (const connection of opened.splice(0)) connection.close();
});

function open(fetchImpl: typeof fetch, req: TransportRequest = request) {
  const messages: HubMessage[] = [];
  const closes: TransportClose[] = [];
  const connection = pollTransport({ fetch: fetchImpl, waitSeconds: 20 }).open(req, {
    message: (m) => messages.push(m),
    closed: (r) => closes.push(r),
  });
  opened.push(connection);
  return { messages, closes, connection };
}

const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

describe('pollUrl and parsePollAnswer', () => {
  it('names the channels, the position and the wait', () => {
    assert.equal(pollUrl(request, null, 0), 'https://hub.test/poll?channel=a&channel=b&timeout=0');
    assert.equal(pollUrl(request, '5f-3', 25), 'https://hub.test/poll?channel=a&channel=b&last_event_id=5f-3&timeout=25');
  });

  it('reads events, a reset after them, and refuses what is not an answer', () => {
    const parsed = parsePollAnswer({
      events: [envelope('a', '5f-1'), { ...envelope('a', '5f-2'), channels: ['a', 'b'] }, { nonsense: true }],
      reset: { reason: 'expired', channels: ['b'], id: '5f-2' },
      last_event_id: '5f-2',
      retry_ms: 0,
    });
    assert.deepEqual(parsed?.messages, [
      { kind: 'event', event: envelope('a', '5f-1') },
      { kind: 'event', event: { ...envelope('a', '5f-2'), channels: ['a', 'b'] } },
      { kind: 'reset', notice: { reason: 'expired', channels: ['b'], id: '5f-2' } },
    ]);
    assert.equal(parsed?.lastEventId, '5f-2');
    assert.equal(parsePollAnswer({ error: { code: 'x' } }), null);
  });
});

describe('pollTransport', () => {
  it('opens with an immediate request, then waits, each request continuing after the last answer', async () => {
    const { fetchImpl, urls, inits } = scripted([
      json(answer('5f-3')),
      json(answer('5f-5', [envelope('a', '5f-4'), envelope('b', '5f-5')])),
      json(answer('5f-5')),
      json(answer('5f-6', [envelope('a', '5f-6')])),
    ]);
    const { messages, closes } = open(fetchImpl);
    await tick(30);
    assert.deepEqual(urls, [
      'https://hub.test/poll?channel=a&channel=b&timeout=0',
      'https://hub.test/poll?channel=a&channel=b&last_event_id=5f-3&timeout=20',
      'https://hub.test/poll?channel=a&channel=b&last_event_id=5f-5&timeout=20',
      'https://hub.test/poll?channel=a&channel=b&last_event_id=5f-5&timeout=20',
      'https://hub.test/poll?channel=a&channel=b&last_event_id=5f-6&timeout=20',
    ]);
    assert.equal(new Headers(inits[0]?.headers).get('authorization'), 'Bearer tok');
    assert.equal(inits[0]?.credentials, 'include');
    assert.deepEqual(messages[0], {
      kind: 'connected',
      info: { connectionId: '', user: 'ann', channels: ['a', 'b', 'user:ann', '$broadcast'], heartbeatMs: 0, lastEventId: '5f-3', transport: 'poll' },
    });
    assert.deepEqual(
      messages.slice(1).map((m) => (m.kind === 'event' ? m.event.id : m.kind)),
      ['5f-4', '5f-5', '5f-6'],
    );
    assert.deepEqual(closes, []);
  });

  it('resumes from the client position, delivering what was missed at once', async () => {
    const { fetchImpl, urls } = scripted([json(answer('5f-9', [envelope('a', '5f-9')], { reset: { reason: 'expired', channels: ['b'], id: '5f-9' } }))]);
    const { messages } = open(fetchImpl, { ...request, lastEventId: '5f-1' });
    await tick();
    assert.equal(urls[0], 'https://hub.test/poll?channel=a&channel=b&last_event_id=5f-1&timeout=0');
    assert.deepEqual(
      messages.map((m) => m.kind),
      ['connected', 'event', 'reset'],
    );
    assert.ok(messages[0]?.kind === 'connected' && messages[0].info.lastEventId === '5f-1');
  });

  it('reports refusals with the hub code, network failures, and the hub stopping', async () => {
    const refused = open(scripted([json(answer('5f-1')), json({ error: { code: 'token_expired', message: 'expired' } }, 401)]).fetchImpl);
    const failed = open(scripted([new TypeError('Failed to fetch')]).fetchImpl);
    const stopping = open(scripted([json(answer('5f-1', [], { retry_ms: 700 }))]).fetchImpl);
    await tick(20);
    assert.deepEqual(refused.closes, [{ kind: 'rejected', status: 401, code: 'token_expired', message: 'expired', retryAfterMs: null }]);
    assert.deepEqual(failed.closes, [{ kind: 'network', message: 'Failed to fetch' }]);
    assert.deepEqual(stopping.messages.map((m) => m.kind), ['connected', 'shutdown']);
    assert.deepEqual(stopping.messages[1], { kind: 'shutdown', retryMs: 700 });
    assert.deepEqual(stopping.closes, [{ kind: 'ended' }]);
  });

  it('aborts the waiting request on close() and reports nothing after', async () => {
    const script = scripted([json(answer('5f-1'))]);
    const { connection, closes } = open(script.fetchImpl);
    await tick();
    assert.equal(script.urls.length, 2);
    connection.close();
    await tick();
    assert.equal(script.inits[1]?.signal?.aborted, true);
    assert.deepEqual(closes, []);
  });
});

describe('autoTransport', () => {
  /** A fetch for both endpoints: `/events` answers 200 but its body never arrives (a buffering proxy), `/poll` answers from a script. */
  function blockedStreams(polls: Response[]) {
    const urls: string[] = [];
    const fetchImpl = ((url: string, init: RequestInit) => {
      urls.push(url);
      if (new URL(url).pathname === '/events') {
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            init.signal?.addEventListener('abort', () => controller.error(new DOMException('aborted', 'AbortError')));
          },
        });
        return Promise.resolve(new Response(body, { headers: { 'content-type': 'text/event-stream' } }));
      }
      const next = polls.shift();
      if (next) return Promise.resolve(next);
      return new Promise((_resolve, reject) => init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
    }) as unknown as typeof fetch;
    return { fetchImpl, urls };
  }

  it('switches to long-polling when the stream never delivers its first event, and stays there', async () => {
    const { fetchImpl, urls } = blockedStreams([json(answer('5f-1')), json(answer('5f-2', [envelope('a', '5f-2')]))]);
    const transport = autoTransport({ sse: { fetch: fetchImpl }, poll: { fetch: fetchImpl }, fallbackAfterMs: 50 });
    const messages: HubMessage[] = [];
    const closes: TransportClose[] = [];
    const connection = transport.open(request, { message: (m) => messages.push(m), closed: (r) => closes.push(r) });
    opened.push(connection);
    await tick(20);
    assert.equal(transport.current, 'sse');
    assert.equal(messages.length, 0);
    await tick(80);
    assert.equal(transport.current, 'poll');
    assert.deepEqual(
      messages.map((m) => (m.kind === 'connected' ? `connected:${m.info.transport}` : m.kind)),
      ['connected:poll', 'event'],
    );
    assert.deepEqual(closes, []);
    assert.deepEqual(
      urls.map((u) => new URL(u).pathname),
      ['/events', '/poll', '/poll', '/poll'],
    );
    connection.close();
    // The next connection goes straight to long-polling.
    const next = transport.open(request, { message: () => {}, closed: () => {} });
    opened.push(next);
    await tick();
    assert.equal(new URL(urls.at(-1) ?? '').pathname, '/poll');
  });

  it('keeps SSE when the stream opens in time, and does not switch on a plain failure', async () => {
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('event: connected\ndata: {"heartbeat_ms":30000}\n\n'));
      },
    });
    const working = (() => Promise.resolve(new Response(stream, { headers: { 'content-type': 'text/event-stream' } }))) as unknown as typeof fetch;
    const ok = autoTransport({ sse: { fetch: working }, fallbackAfterMs: 30 });
    const messages: HubMessage[] = [];
    opened.push(ok.open(request, { message: (m) => messages.push(m), closed: () => {} }));
    await tick(60);
    assert.equal(ok.current, 'sse');
    assert.deepEqual(messages.map((m) => m.kind), ['connected']);

    const down = autoTransport({ sse: { fetch: () => Promise.reject(new TypeError('Failed to fetch')) }, fallbackAfterMs: 30 });
    const closes: TransportClose[] = [];
    opened.push(down.open(request, { message: () => {}, closed: (r) => closes.push(r) }));
    await tick(60);
    assert.equal(down.current, 'sse');
    assert.deepEqual(closes, [{ kind: 'network', message: 'Failed to fetch' }]);
  });
});
