import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { frameToMessage } from '../../src/sse/messages.js';
import { eventsUrl, sseTransport } from '../../src/sse/transport.js';
import type { HubMessage, TransportClose, TransportRequest } from '../../src/transport.js';
import { installClock } from './support.js';

const request: TransportRequest = {
  url: 'https://hub.test',
  channels: ['a', 'team:1'],
  token: 'tok',
  lastEventId: '5f-9',
  credentials: 'include',
};

/** A response whose body the test writes to. */
function streamResponse(init: ResponseInit = {}) {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { headers: { 'content-type': 'text/event-stream' }, ...init }),
    write: (text: string) => controller.enqueue(encoder.encode(text)),
    end: () => controller.close(),
  };
}

function open(fetchImpl: typeof fetch, options: { idleTimeoutMs?: number } = {}) {
  const messages: HubMessage[] = [];
  const closes: TransportClose[] = [];
  const connection = sseTransport({ fetch: fetchImpl, ...options }).open(request, {
    message: (m) => messages.push(m),
    closed: (r) => closes.push(r),
  });
  return { messages, closes, connection };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('eventsUrl', () => {
  it('names every channel, the resume position and envelope mode', () => {
    assert.equal(eventsUrl(request), 'https://hub.test/events?channel=a&channel=team%3A1&last_event_id=5f-9&envelope=1');
    assert.equal(eventsUrl({ ...request, channels: [], lastEventId: null }), 'https://hub.test/events?envelope=1');
  });
});

describe('frameToMessage', () => {
  it('reads the hub events and envelopes', () => {
    const base = { id: null, retry: null };
    assert.deepEqual(
      frameToMessage({
        ...base,
        event: 'connected',
        data: '{"connection_id":7,"user":"ann","channels":["a","user:ann","$broadcast"],"heartbeat_ms":1000,"last_event_id":"5f-3"}',
      }),
      {
        kind: 'connected',
        info: {
          connectionId: '7',
          user: 'ann',
          channels: ['a', 'user:ann', '$broadcast'],
          heartbeatMs: 1000,
          lastEventId: '5f-3',
          transport: 'sse',
        },
      },
    );
    assert.deepEqual(frameToMessage({ ...base, id: '5f-3', event: 'reset', data: '{"reason":"expired","channels":["a"]}' }), {
      kind: 'reset',
      notice: { reason: 'expired', channels: ['a'], id: '5f-3' },
    });
    assert.deepEqual(frameToMessage({ ...base, retry: 900, event: 'shutdown', data: '{"reason":"bye","retry_ms":900}' }), {
      kind: 'shutdown',
      retryMs: 900,
    });
    assert.deepEqual(frameToMessage({ ...base, event: 'token_expired', data: '{}' }), { kind: 'token_expired' });
    const envelope = '{"channel":"b","type":"task.done","data":{"n":1},"time":"2026-11-23T09:00:00.123Z","id":"5f-4"}';
    assert.deepEqual(frameToMessage({ ...base, id: '5f-4', event: 'task.done', data: envelope }), {
      kind: 'event',
      event: { channel: 'b', type: 'task.done', data: { n: 1 }, time: '2026-11-23T09:00:00.123Z', id: '5f-4' },
    });
    assert.equal(frameToMessage({ ...base, id: '5f-5', event: 'message', data: 'not json' }), null);
    assert.equal(frameToMessage({ ...base, event: 'reset', data: '{}' }), null);
  });
});

describe('sseTransport', () => {
  it('sends the token in a header and parses the stream', async () => {
    const stream = streamResponse();
    const calls: Array<[string | URL | Request, RequestInit | undefined]> = [];
    const { messages, closes } = open((url, init) => {
      calls.push([url, init]);
      return Promise.resolve(stream.response);
    });
    const [url, init] = calls[0] ?? [];
    assert.equal(url, eventsUrl(request));
    assert.equal(new Headers(init?.headers).get('authorization'), 'Bearer tok');
    assert.equal(init?.credentials, 'include');
    stream.write('retry: 3000\nevent: connected\ndata: {"connection_id":1,"user":null,"channels":["a"],"heartbeat_ms":30000}\n\n:\n\n');
    stream.write('id: 5f-10\ndata: {"channel":"a","type":"message","data":"hi","time":"t","id":"5f-10"}\n');
    await tick();
    assert.deepEqual(messages.map((m) => m.kind), ['connected']);
    stream.write('\n');
    stream.end();
    await tick();
    assert.deepEqual(messages.map((m) => m.kind), ['connected', 'event']);
    assert.deepEqual(closes, [{ kind: 'ended' }]);
  });

  it('reports a refused connection with its code and Retry-After', async () => {
    const response = new Response('{"error":{"code":"too_many_connections","message":"later"}}', {
      status: 503,
      headers: { 'content-type': 'application/json', 'retry-after': '5' },
    });
    const { closes } = open(() => Promise.resolve(response));
    await tick();
    assert.deepEqual(closes, [
      { kind: 'rejected', status: 503, code: 'too_many_connections', message: 'later', retryAfterMs: 5000 },
    ]);
  });

  it('reports network failures and wrong content', async () => {
    const failed = open(() => Promise.reject(new TypeError('Failed to fetch')));
    const html = open(() => Promise.resolve(new Response('<html>', { headers: { 'content-type': 'text/html' } })));
    await tick();
    assert.deepEqual(failed.closes, [{ kind: 'network', message: 'Failed to fetch' }]);
    assert.deepEqual(html.closes, [{ kind: 'network', message: 'expected an event stream, got text/html' }]);
  });

  it('aborts on close() and reports nothing after', async () => {
    const stream = streamResponse();
    let signal: AbortSignal | undefined;
    const { closes, messages, connection } = open((_url, init) => {
      signal = init?.signal ?? undefined;
      return Promise.resolve(stream.response);
    });
    await tick();
    connection.close();
    assert.equal(signal?.aborted, true);
    await tick();
    assert.deepEqual(closes, []);
    assert.deepEqual(messages, []);
  });

  it('drops a stream that stays silent past the idle timeout', async () => {
    const clock = installClock();
    try {
      const stream = streamResponse();
      const { closes } = open(() => Promise.resolve(stream.response), { idleTimeoutMs: 1000 });
      stream.write('event: connected\ndata: {"heartbeat_ms":300}\n\n');
      await clock.tickAsync(900);
      stream.write(':\n\n');
      await clock.tickAsync(900);
      assert.deepEqual(closes, []);
      await clock.tickAsync(200);
      assert.deepEqual(closes, [{ kind: 'network', message: 'the stream went silent' }]);
    } finally {
      clock.uninstall();
    }
  });
});
