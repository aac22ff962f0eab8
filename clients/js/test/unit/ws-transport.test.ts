import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import type { HeraldError } from '../../src/errors.js';
import type { HubMessage, TransportClose, TransportRequest } from '../../src/transport.js';
import { closeAction, wsTransport, wsUrl, type WebSocketLike, type WsTransportOptions } from '../../src/ws/transport.js';
import type { TransportConnection } from '../../src/transport.js';

const request: TransportRequest = {
  url: 'https://hub.test',
  channels: ['a', 'team:1'],
  token: 'tok',
  lastEventId: '5f-9',
  credentials: 'include',
};

/** A socket the test plays the hub's side of. */
class FakeSocket implements WebSocketLike {
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: Array<Record<string, unknown>> = [];
  closedWith: number | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    this.closedWith = code ?? 1005;
  }

  open(): this {
    this.onopen?.({});
    return this;
  }

  frame(value: unknown): this {
    this.onmessage?.({ data: JSON.stringify(value) });
    return this;
  }

  connected(extra: Record<string, unknown> = {}): this {
    return this.open().frame({ type: 'connected', connection_id: 'n-1', user: 'ann', channels: ['a', 'team:1', 'user:ann', '$broadcast'], last_event_id: '5f-9', ...extra });
  }

  hubCloses(code: number, reason = ''): void {
    this.onclose?.({ code, reason });
  }

  /** The last frame the client sent with `op`. */
  lastOp(op: string): Record<string, unknown> {
    const frame = this.sent.filter((f) => f.op === op).at(-1);
    assert.ok(frame, `no ${op} frame sent`);
    return frame;
  }
}

/** Every connection a test opened, closed after it so that no timer outlives it. */
const opened: TransportConnection[] = [];
afterEach(() => {
  for (const connection of opened.splice(0)) connection.close();
});

function open(options: WsTransportOptions = {}, req: TransportRequest = request) {
  const messages: HubMessage[] = [];
  const closes: TransportClose[] = [];
  const sockets: FakeSocket[] = [];
  const connection = wsTransport({
    webSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket;
    },
    ...options,
  }).open(req, { message: (m) => messages.push(m), closed: (r) => closes.push(r) });
  opened.push(connection);
  const socket = sockets[0];
  assert.ok(socket);
  return { messages, closes, connection, socket };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('wsUrl', () => {
  it('names the channels, the resume position and the token, over ws or wss', () => {
    assert.equal(wsUrl(request), 'wss://hub.test/ws?channel=a&channel=team%3A1&last_event_id=5f-9&token=tok');
    assert.equal(wsUrl({ ...request, url: 'http://127.0.0.1:8080', token: null, lastEventId: null, channels: [] }), 'ws://127.0.0.1:8080/ws');
    assert.equal(wsUrl({ ...request, url: '/realtime', token: null, lastEventId: null, channels: ['a'] }, 'https://app.test/page'), 'wss://app.test/realtime/ws?channel=a');
  });
});

describe('closeAction', () => {
  it('maps the hub close codes to reconnect, renew the token, or stop', () => {
    assert.equal(closeAction(1000), 'reconnect');
    assert.equal(closeAction(1006), 'reconnect');
    assert.equal(closeAction(1012), 'reconnect');
    assert.equal(closeAction(4000), 'reconnect');
    assert.equal(closeAction(4008), 'reconnect');
    assert.equal(closeAction(4001), 'token_expired');
    assert.equal(closeAction(1008), 'stop');
  });
});

describe('wsTransport', () => {
  it('translates the hub frames into messages', () => {
    const { messages, socket } = open();
    socket.connected();
    socket.frame({ type: 'event', channel: 'a', event: 'note', data: { n: 1 }, time: 't', id: '5f-10' });
    socket.frame({ type: 'event', channel: 'a', channels: ['a', 'team:1'], event: 'message', data: 'x', time: 't', id: '5f-11' });
    socket.frame({ type: 'reset', reason: 'expired', channels: ['team:1'], id: '5f-12' });
    socket.frame({ type: 'mystery' });
    socket.frame({ type: 'shutdown', retry_ms: 750 });
    assert.deepEqual(messages, [
      {
        kind: 'connected',
        info: { connectionId: 'n-1', user: 'ann', channels: ['a', 'team:1', 'user:ann', '$broadcast'], heartbeatMs: 0, lastEventId: '5f-9', transport: 'ws' },
      },
      { kind: 'event', event: { channel: 'a', type: 'note', data: { n: 1 }, time: 't', id: '5f-10' } },
      { kind: 'event', event: { channel: 'a', channels: ['a', 'team:1'], type: 'message', data: 'x', time: 't', id: '5f-11' } },
      { kind: 'reset', notice: { reason: 'expired', channels: ['team:1'], id: '5f-12' } },
      { kind: 'shutdown', retryMs: 750 },
    ]);
  });

  it('publishes with an id per request and resolves on the matching ack', async () => {
    const { socket, connection } = open();
    socket.connected();
    const first = connection.publish?.('chat:1', 'typing', { user: 'ann' });
    const second = connection.publish?.('chat:1', 'said', 'hello');
    const [one, two] = socket.sent.filter((f) => f.op === 'publish');
    assert.deepEqual(one, { op: 'publish', channel: 'chat:1', type: 'typing', data: { user: 'ann' }, id: one?.id });
    assert.notEqual(one?.id, two?.id);
    socket.frame({ type: 'ack', op: 'publish', event_id: '5f-20', id: two?.id });
    socket.frame({ type: 'error', code: 'forbidden', message: 'clients may not publish to chat:1', id: one?.id });
    assert.deepEqual(await second, { id: '5f-20' });
    await assert.rejects(first ?? Promise.resolve(), (error: HeraldError) => error.code === 'forbidden' && /chat:1/.test(error.message));
  });

  it('refuses requests before the connection is live and fails them when it closes', async () => {
    const { socket, connection } = open();
    await assert.rejects(connection.publish?.('a', 't', 1) ?? Promise.resolve(), (e: HeraldError) => e.code === 'not_connected');
    socket.connected();
    const waiting = connection.presence?.('a');
    connection.close();
    await assert.rejects(waiting ?? Promise.resolve(), (e: HeraldError) => e.code === 'closed');
    assert.equal(socket.closedWith, 1000);
  });

  it('answers presence queries with the members', async () => {
    const { socket, connection } = open();
    socket.connected();
    const members = connection.presence?.('doc:1');
    const asked = socket.lastOp('presence');
    assert.equal(asked.channel, 'doc:1');
    socket.frame({ type: 'presence', channel: 'doc:1', users: [{ user: 'ann', info: { name: 'Ann' }, connections: 2 }, { user: 'bob', connections: 1 }], id: asked.id });
    assert.deepEqual(await members, [
      { user: 'ann', info: { name: 'Ann' }, connections: 2 },
      { user: 'bob', connections: 1 },
    ]);
  });

  it('changes channels in place: subscribe resuming after the last id, unsubscribe, refusals reported', async () => {
    const { socket, connection, messages } = open();
    assert.equal(connection.setChannels?.(['a', 'b'], '5f-30'), false, 'not before the connection is live');
    socket.connected();
    assert.equal(connection.setChannels?.(['a', 'b', 'secret'], '5f-30'), true);
    const subscribes = socket.sent.filter((f) => f.op === 'subscribe');
    assert.deepEqual(
      subscribes.map((f) => [f.channel, f.last_event_id]),
      [
        ['b', '5f-30'],
        ['secret', '5f-30'],
      ],
    );
    assert.deepEqual(socket.lastOp('unsubscribe').channel, 'team:1');
    socket.frame({ type: 'ack', op: 'subscribe', channel: 'b', id: subscribes[0]?.id });
    socket.frame({ type: 'error', code: 'forbidden', message: 'no', id: subscribes[1]?.id });
    await tick();
    const refused = messages.filter((m) => m.kind === 'refused');
    assert.equal(refused.length, 1);
    const [message] = refused;
    assert.ok(message?.kind === 'refused');
    assert.equal(message.channel, 'secret');
    assert.equal(message.error.code, 'forbidden');
    assert.equal(message.error.status, 403);
    assert.deepEqual(message.error.channels, ['secret']);
    // Already subscribed: nothing sent again.
    const sent = socket.sent.length;
    assert.equal(connection.setChannels?.(['a', 'b'], '5f-31'), true);
    assert.equal(socket.sent.length, sent);
  });

  it('maps close codes: token expiry, restart, normal close, policy', () => {
    const expired = open();
    expired.socket.connected().hubCloses(4001, 'token expired');
    assert.deepEqual(expired.messages.at(-1), { kind: 'token_expired' });
    assert.deepEqual(expired.closes, [{ kind: 'network', message: 'the token expired' }]);

    const restart = open();
    restart.socket.connected().hubCloses(1012, 'the hub is shutting down');
    assert.deepEqual(restart.closes, [{ kind: 'network', message: 'closed with 1012: the hub is shutting down' }]);

    const slow = open();
    slow.socket.connected().hubCloses(4000);
    assert.deepEqual(slow.closes, [{ kind: 'network', message: 'closed with 4000' }]);

    const normal = open();
    normal.socket.connected().hubCloses(1000);
    assert.deepEqual(normal.closes, [{ kind: 'ended' }]);

    const policy = open();
    policy.socket.connected().hubCloses(1008, 'go away');
    assert.deepEqual(policy.closes, [{ kind: 'rejected', status: 400, code: 'ws_close_1008', message: 'go away', retryAfterMs: null }]);
  });

  it('asks /poll why a socket that never opened was refused', async () => {
    const asked: string[] = [];
    const refused = open({
      fetch: (url, init) => {
        asked.push(`${String(url)} ${new Headers(init?.headers).get('authorization')}`);
        return Promise.resolve(
          new Response('{"error":{"code":"forbidden","message":"not granted","channel":"team:1"}}', { status: 403, headers: { 'content-type': 'application/json' } }),
        );
      },
    });
    refused.socket.hubCloses(1006);
    await tick();
    assert.deepEqual(asked, ['https://hub.test/poll?channel=a&channel=team%3A1&timeout=0 Bearer tok']);
    assert.deepEqual(refused.closes, [{ kind: 'rejected', status: 403, code: 'forbidden', message: 'not granted', channel: 'team:1', retryAfterMs: null }]);

    const down = open({ fetch: () => Promise.reject(new TypeError('Failed to fetch')) });
    down.socket.hubCloses(1006);
    await tick();
    assert.deepEqual(down.closes, [{ kind: 'network', message: 'the WebSocket could not connect: Failed to fetch' }]);

    const fine = open({ fetch: () => Promise.resolve(new Response('{}', { status: 200 })) });
    fine.socket.hubCloses(1006);
    await tick();
    assert.deepEqual(fine.closes, [{ kind: 'network', message: 'the WebSocket could not connect' }]);
  });

  it('pings while live and drops a socket that went silent', async () => {
    const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    try {
      const { socket, closes } = open({ pingIntervalMs: 1000, idleTimeoutMs: 2500 });
      socket.connected();
      await clock.tickAsync(1000);
      const ping = socket.lastOp('ping');
      socket.frame({ type: 'pong', id: ping.id });
      await clock.tickAsync(2000);
      assert.deepEqual(closes, []);
      assert.equal(socket.sent.filter((f) => f.op === 'ping').length, 3);
      await clock.tickAsync(600);
      assert.deepEqual(closes, [{ kind: 'network', message: 'the connection went silent' }]);
      assert.equal(socket.closedWith, 1000);
    } finally {
      clock.uninstall();
    }
  });
});
