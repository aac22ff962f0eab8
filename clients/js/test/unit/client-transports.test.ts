import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { HeraldClient } from '../../src/client.js';
import { HeraldError } from '../../src/errors.js';
import { applyPresence } from '../../src/react/hooks.js';
import type { TransportConnection, TransportRequest, TransportSink } from '../../src/transport.js';
import type { HeraldEvent, PresenceChange, PresenceMember } from '../../src/types.js';
import { FakeConnection, FakeTransport } from './fake-transport.js';
import { installClock, stubGlobal, type Clock } from './support.js';

let clock: Clock;
let clients: HeraldClient[] = [];
const settle = () => clock.tickAsync(0);

/** A connection that, like a WebSocket, changes channels in place and publishes. */
class SocketLikeConnection extends FakeConnection implements TransportConnection {
  readonly channelChanges: Array<[readonly string[], string | null]> = [];
  readonly published: Array<[string, string, unknown]> = [];
  live = false;

  setChannels(channels: readonly string[], lastEventId: string | null): boolean {
    if (!this.live) return false;
    this.channelChanges.push([channels, lastEventId]);
    return true;
  }

  publish(channel: string, type: string, data: unknown): Promise<{ id: string }> {
    this.published.push([channel, type, data]);
    return Promise.resolve({ id: `ev-${this.published.length}` });
  }

  presence(channel: string): Promise<PresenceMember[]> {
    return Promise.resolve([{ user: `on-${channel}`, connections: 1 }]);
  }
}

class SocketLikeTransport extends FakeTransport {
  override readonly name: string = 'ws';
  override open(request: TransportRequest, sink: TransportSink): TransportConnection {
    const connection = new SocketLikeConnection(request, sink);
    this.connections.push(connection);
    return connection;
  }
  get socket(): SocketLikeConnection {
    return this.last as SocketLikeConnection;
  }
}

beforeEach(() => {
  clock = installClock();
});

afterEach(() => {
  for (const client of clients) client.close();
  clients = [];
  clock.uninstall();
});

function make(transport: FakeTransport) {
  const client = new HeraldClient({ url: 'https://hub.test', transport, reconnect: { jitter: 0 } });
  clients.push(client);
  const errors: HeraldError[] = [];
  client.onError((e) => errors.push(e));
  return { client, errors };
}

describe('client over a connection that changes channels in place', () => {
  it('adds and removes channels without reconnecting, resuming added ones after the last event', async () => {
    const transport = new SocketLikeTransport();
    const { client } = make(transport);
    const seen: HeraldEvent[] = [];
    client.subscribe('a', (e) => seen.push(e));
    await settle();
    const socket = transport.socket;
    socket.live = true;
    socket.connected({ lastEventId: '5f-1' });
    socket.event('a', '5f-2');
    const stopB = client.subscribe('b', (e) => seen.push(e));
    await settle();
    assert.equal(transport.connections.length, 1, 'no new connection');
    assert.deepEqual(socket.channelChanges, [[['a', 'b'], '5f-2']]);
    assert.ok(client.connection?.channels.includes('b'));
    stopB();
    await settle();
    assert.deepEqual(socket.channelChanges.at(-1), [['a'], '5f-2']);
    assert.equal(transport.connections.length, 1);
  });

  it('reports a channel the hub refused mid-connection and keeps the others', async () => {
    const transport = new SocketLikeTransport();
    const { client, errors } = make(transport);
    const refusals: HeraldError[] = [];
    client.subscribe('a', () => {});
    await settle();
    transport.socket.live = true;
    transport.socket.connected();
    client.subscribe('secret', () => {}, { onError: (e) => refusals.push(e) });
    await settle();
    const error = new HeraldError('forbidden', 'not granted', { status: 403, channels: ['secret'] });
    transport.socket.send({ kind: 'refused', channel: 'secret', error });
    await settle();
    assert.deepEqual(refusals.map((e) => [e.code, e.channels]), [['forbidden', ['secret']]]);
    assert.deepEqual(errors.map((e) => e.channels), [['secret']]);
    assert.deepEqual(transport.socket.channelChanges.at(-1), [['a'], null]);
    assert.equal(client.state, 'open');
    assert.equal(transport.connections.length, 1);
  });

  it('publishes over the connection, and refuses while it is not open', async () => {
    const transport = new SocketLikeTransport();
    const { client } = make(transport);
    client.subscribe('chat:1', () => {});
    await assert.rejects(client.publish('chat:1', 'typing', { user: 'u' }), (e: HeraldError) => e.code === 'not_connected');
    await settle();
    transport.socket.live = true;
    transport.socket.connected();
    assert.deepEqual(await client.publish('chat:1', 'typing', { user: 'u' }), { id: 'ev-1', duplicate: false });
    assert.deepEqual(transport.socket.published, [['chat:1', 'typing', { user: 'u' }]]);
    assert.deepEqual(await client.presence('chat:1'), [{ user: 'on-chat:1', connections: 1 }]);
  });
});

describe('client on any transport', () => {
  it('starts from the position the first connection reports, so a loss before any event misses nothing', async () => {
    const transport = new FakeTransport();
    const { client } = make(transport);
    client.subscribe('a', () => {});
    await settle();
    transport.last.connected({ lastEventId: '5f-7' });
    assert.equal(client.lastEventId, '5f-7');
    transport.last.fail({ kind: 'network', message: 'gone' });
    await clock.tickAsync(60_000);
    assert.equal(transport.last.request.lastEventId, '5f-7');
  });

  it('refuses only the channel the hub names in its answer', async () => {
    const transport = new FakeTransport();
    const { client, errors } = make(transport);
    client.subscribe('a', () => {});
    client.subscribe('b', () => {});
    await settle();
    transport.last.fail({ kind: 'rejected', status: 403, code: 'forbidden', message: 'no b', channel: 'b', retryAfterMs: null });
    await settle();
    assert.deepEqual(errors.map((e) => e.channels), [['b']]);
    assert.deepEqual(transport.last.request.channels, ['a']);
  });

  it('hands an event published to several of its channels to the subscribers of each, once', async () => {
    const transport = new FakeTransport();
    const { client } = make(transport);
    const a: string[] = [];
    const b: string[] = [];
    client.subscribe('a', (e) => a.push(`${e.channel}/${e.id}`));
    client.subscribe('b', (e) => b.push(`${e.channel}/${e.id}`));
    await settle();
    transport.last.connected();
    transport.last.send({ kind: 'event', event: { channel: 'a', channels: ['a', 'b'], type: 'message', data: 1, time: 't', id: '5f-1' } });
    transport.last.send({ kind: 'event', event: { channel: 'a', channels: ['a', 'b'], type: 'message', data: 1, time: 't', id: '5f-1' } });
    assert.deepEqual(a, ['a/5f-1']);
    assert.deepEqual(b, ['b/5f-1']);
  });

  it('turns presence events into joins and leaves', async () => {
    const transport = new FakeTransport();
    const { client } = make(transport);
    const changes: PresenceChange[] = [];
    client.onPresence('doc:1', (c) => changes.push(c));
    await settle();
    const connection = transport.last;
    connection.connected();
    connection.event('doc:1', '5f-1', { user: 'ann', info: { name: 'Ann' } }, 'presence.join');
    connection.event('doc:1', '5f-2', 'just a message');
    connection.event('doc:1', '5f-3', { user: 'ann' }, 'presence.leave');
    assert.deepEqual(changes, [
      { kind: 'join', user: 'ann', info: { name: 'Ann' } },
      { kind: 'leave', user: 'ann' },
    ]);
  });

  it('asks the hub over HTTP who is present when the connection cannot', async () => {
    const asked: string[] = [];
    const restore = stubGlobal('fetch', (url: string) => {
      asked.push(url);
      return Promise.resolve(
        new Response('{"channel":"doc:1","count":1,"users":[{"user":"bob","connections":2}]}', { headers: { 'content-type': 'application/json' } }),
      );
    });
    try {
      const { client } = make(new FakeTransport());
      assert.deepEqual(await client.presence('doc:1'), [{ user: 'bob', connections: 2 }]);
      assert.deepEqual(asked, ['https://hub.test/channels/doc%3A1/presence']);
    } finally {
      restore();
    }
  });

  it('accepts a transport by name and refuses unknown ones', () => {
    for (const name of ['sse', 'ws', 'poll', 'auto'] as const) {
      const client = new HeraldClient({ url: 'https://hub.test', transport: name });
      clients.push(client);
    }
    assert.throws(() => new HeraldClient({ url: 'https://hub.test', transport: 'carrier-pigeon' as 'sse' }), TypeError);
  });
});

describe('applyPresence', () => {
  it('lists each user once, in the order they joined', () => {
    let members: PresenceMember[] = [];
    members = applyPresence(members, { kind: 'join', user: 'ann' });
    members = applyPresence(members, { kind: 'join', user: 'bob', info: { name: 'Bob' } });
    members = applyPresence(members, { kind: 'join', user: 'ann' });
    assert.deepEqual(members, [
      { user: 'ann', connections: 1 },
      { user: 'bob', info: { name: 'Bob' }, connections: 1 },
    ]);
    members = applyPresence(members, { kind: 'leave', user: 'ann' });
    members = applyPresence(members, { kind: 'leave', user: 'nobody' });
    assert.deepEqual(members, [{ user: 'bob', info: { name: 'Bob' }, connections: 1 }]);
  });
});
