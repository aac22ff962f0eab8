import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { HeraldClient, type ClientOptions } from '../../src/client.js';
import type { HeraldError } from '../../src/errors.js';
import type { ConnectionState, HeraldEvent, ResetNotice, TokenRequestReason } from '../../src/types.js';
import { FakeTransport } from './fake-transport.js';
import { assertIncludes, installClock, stubGlobal, type Clock } from './support.js';

let clock: Clock;
let undo: Array<() => void> = [];

/** Lets queued microtasks (batched subscription changes, token promises) run. */
const settle = () => clock.tickAsync(0);

function jwt(expSeconds: number): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'HS256' })}.${part({ sub: 'u', exp: expSeconds })}.sig`;
}

let transport: FakeTransport;
let clients: HeraldClient[] = [];

function makeClient(options: Partial<ClientOptions> = {}) {
  const client = new HeraldClient({ url: 'https://hub.test/', transport, reconnect: { jitter: 0 }, ...options });
  clients.push(client);
  const states: ConnectionState[] = [];
  const errors: HeraldError[] = [];
  client.onStateChange((s) => states.push(s));
  client.onError((e) => errors.push(e));
  return { client, states, errors };
}

function collect(client: HeraldClient, channel: string) {
  const events: HeraldEvent[] = [];
  const unsubscribe = client.subscribe(channel, (e) => events.push(e));
  return { events, unsubscribe, ids: () => events.map((e) => e.id) };
}

beforeEach(() => {
  clock = installClock();
  transport = new FakeTransport();
});

afterEach(() => {
  for (const client of clients) client.close();
  clients = [];
  clock.uninstall();
  for (const restore of undo) restore();
  undo = [];
});

describe('subscriptions', () => {
  it('opens one connection lazily, for all channels subscribed in the same tick', async () => {
    const { client, states } = makeClient();
    assert.equal(transport.connections.length, 0);
    collect(client, 'b');
    collect(client, 'a');
    collect(client, 'a');
    client.subscribe('$broadcast', () => {});
    assert.equal(transport.connections.length, 0);
    await settle();
    assert.equal(transport.connections.length, 1);
    assertIncludes(transport.last.request, {
      url: 'https://hub.test',
      channels: ['a', 'b'],
      lastEventId: null,
      token: null,
    });
    assert.equal(client.state, 'connecting');
    transport.last.connected();
    assert.equal(client.state, 'open');
    assert.deepEqual(states, ['connecting', 'open']);
  });

  it('dispatches by channel and by type', async () => {
    const { client } = makeClient();
    const a = collect(client, 'a');
    const b = collect(client, 'b');
    const done: HeraldEvent[] = [];
    client.subscribe('a', 'task.done', (e) => done.push(e));
    await settle();
    transport.last.connected().event('a', 'x-1').event('b', 'x-2').event('a', 'x-3', { ok: true }, 'task.done').event('c', 'x-4');
    assert.deepEqual(a.ids(), ['x-1', 'x-3']);
    assert.deepEqual(b.ids(), ['x-2']);
    assert.deepEqual(done.map((e) => e.data), [{ ok: true }]);
    assert.equal(client.lastEventId, 'x-4');
  });

  it('drops events delivered twice', async () => {
    const { client } = makeClient();
    const a = collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1').event('a', 'x-2').event('a', 'x-1').event('a', 'x-2');
    assert.deepEqual(a.ids(), ['x-1', 'x-2']);
  });

  it('batches changes made in one tick into one new connection that resumes, and loses nothing meanwhile', async () => {
    const { client } = makeClient();
    const a = collect(client, 'a');
    await settle();
    const first = transport.last;
    first.connected().event('a', 'x-1');

    const b = collect(client, 'b');
    const c = collect(client, 'c');
    c.unsubscribe();
    const d = collect(client, 'd');
    await settle();
    assert.equal(transport.connections.length, 2);
    const second = transport.last;
    assert.deepEqual(second.request.channels, ['a', 'b', 'd']);
    assert.equal(second.request.lastEventId, 'x-1');
    // The old connection keeps delivering until the new one is live.
    assert.equal(first.closedByClient, false);
    first.event('a', 'x-2').event('a', 'x-3');
    assert.equal(client.state, 'open');

    // The new connection replays from x-1: x-2 and x-3 again, then what followed.
    second.connected();
    assert.equal(first.closedByClient, true);
    second.event('a', 'x-2').event('a', 'x-3').event('b', 'x-4').event('a', 'x-5').event('d', 'x-6');
    assert.deepEqual(a.ids(), ['x-1', 'x-2', 'x-3', 'x-5']);
    assert.deepEqual(b.ids(), ['x-4']);
    assert.deepEqual(d.ids(), ['x-6']);
    assert.deepEqual(transport.active, [second]);
  });

  it('makes no new connection when changes in one tick cancel out (React StrictMode)', async () => {
    const { client } = makeClient();
    collect(client, 'a');
    await settle();
    transport.last.connected();
    const b = collect(client, 'b');
    b.unsubscribe();
    collect(client, 'a').unsubscribe();
    await settle();
    assert.equal(transport.connections.length, 1);
  });

  it('replaces a connection still opening when the set changes again', async () => {
    const { client } = makeClient();
    collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1');
    collect(client, 'b');
    await settle();
    const opening = transport.last;
    collect(client, 'c');
    await settle();
    assert.equal(opening.closedByClient, true);
    assert.deepEqual(transport.last.request.channels, ['a', 'b', 'c']);
    assert.equal(transport.active.length, 2);
  });

  it('without an id to resume from, keeps the old connection until the two overlap', async () => {
    const { client } = makeClient();
    const a = collect(client, 'a');
    await settle();
    const first = transport.last;
    first.connected();
    collect(client, 'b');
    await settle();
    const second = transport.last;
    assert.equal(second.request.lastEventId, null);
    second.connected();
    // Events published before the new subscription was live still come on the old one.
    assert.equal(first.closedByClient, false);
    first.event('a', 'x-1');
    second.event('a', 'x-2');
    assert.equal(first.closedByClient, false);
    first.event('a', 'x-2');
    assert.equal(first.closedByClient, true);
    assert.deepEqual(a.ids(), ['x-1', 'x-2']);
  });

  it('without overlap, ends the old connection after a grace period', async () => {
    const { client } = makeClient();
    collect(client, 'a');
    await settle();
    const first = transport.last;
    first.connected();
    collect(client, 'b');
    await settle();
    transport.last.connected();
    await clock.tickAsync(1999);
    assert.equal(first.closedByClient, false);
    await clock.tickAsync(1);
    assert.equal(first.closedByClient, true);
  });

  it('closes when the last subscription goes, and opens again on the next', async () => {
    const { client, states } = makeClient();
    const a = collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1');
    a.unsubscribe();
    await settle();
    assert.equal(transport.active.length, 0);
    assert.equal(client.state, 'closed');
    collect(client, 'b');
    await settle();
    assertIncludes(transport.last.request, { channels: ['b'], lastEventId: 'x-1' });
    assert.deepEqual(states, ['connecting', 'open', 'closed', 'connecting']);
  });

  it('isolates exceptions thrown by handlers', async () => {
    const reported: unknown[] = [];
    undo.push(stubGlobal('reportError', (e: unknown) => reported.push(e)));
    const { client } = makeClient();
    client.subscribe('a', () => {
      throw new Error('app bug');
    });
    const a = collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1');
    assert.deepEqual(a.ids(), ['x-1']);
    assert.equal(reported.length, 1);
  });
});

describe('reconnection', () => {
  it('reconnects after a backoff delay, resuming after the last event', async () => {
    const { client, states } = makeClient();
    const a = collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1').event('a', 'x-2');
    transport.last.fail({ kind: 'network', message: 'reset by peer' });
    assert.equal(client.state, 'reconnecting');
    await clock.tickAsync(999);
    assert.equal(transport.connections.length, 1);
    await clock.tickAsync(1);
    assert.equal(transport.connections.length, 2);
    assert.equal(transport.last.request.lastEventId, 'x-2');
    transport.last.connected().event('a', 'x-2').event('a', 'x-3');
    assert.deepEqual(a.ids(), ['x-1', 'x-2', 'x-3']);
    assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open']);
  });

  it('backs off exponentially while attempts fail, and starts over after a stable connection', async () => {
    const { client } = makeClient({ reconnect: { jitter: 0, initialDelayMs: 100, maxDelayMs: 1000 } });
    collect(client, 'a');
    await settle();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const count = transport.connections.length;
      const start = Date.now();
      transport.last.fail({ kind: 'network', message: 'refused' });
      while (transport.connections.length === count) await clock.tickAsync(10);
      delays.push(Date.now() - start);
    }
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
    transport.last.connected();
    await clock.tickAsync(5000);
    transport.last.fail({ kind: 'ended' });
    await clock.tickAsync(100);
    assert.equal(transport.connections.length, 8);
  });

  it('honours Retry-After on 429 and 503', async () => {
    const { client, errors } = makeClient();
    collect(client, 'a');
    await settle();
    transport.last.reject(503, 'too_many_connections', 5000);
    await clock.tickAsync(4999);
    assert.equal(transport.connections.length, 1);
    await clock.tickAsync(1001);
    assert.equal(transport.connections.length, 2);
    assert.deepEqual(errors.map((e) => e.code), ['too_many_connections']);
  });

  it('reconnects after the delay a shutting-down hub asks for', async () => {
    const { client } = makeClient();
    collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1').send({ kind: 'shutdown', retryMs: 2500 });
    assert.equal(transport.last.closedByClient, true);
    assert.equal(client.state, 'reconnecting');
    await clock.tickAsync(2499);
    assert.equal(transport.connections.length, 1);
    await clock.tickAsync(1);
    assert.equal(transport.last.request.lastEventId, 'x-1');
  });

  it('calls the refetch hooks of the channels a reset names, then resumes from its id', async () => {
    const { client } = makeClient();
    const resets: Array<[string, ResetNotice]> = [];
    const all: ResetNotice[] = [];
    client.onReset((n) => all.push(n));
    client.subscribe('a', () => {}, { onReset: (n) => resets.push(['a', n]) });
    client.subscribe('a', 'only.this', () => {}, { onReset: (n) => resets.push(['a typed', n]) });
    client.subscribe('b', () => {}, { onReset: (n) => resets.push(['b', n]) });
    client.subscribe('c', () => {}, { onReset: (n) => resets.push(['c', n]) });
    await settle();
    transport.last.connected().event('a', 'old-1');
    transport.last.fail({ kind: 'ended' });
    await clock.tickAsync(1000);
    assert.equal(transport.last.request.lastEventId, 'old-1');
    transport.last.connected().reset(['a', 'b', 'user:u'], 'new-7');
    assert.equal(client.lastEventId, 'new-7');
    transport.last.event('a', 'new-8');
    assert.deepEqual(resets.map(([who, n]) => [who, n.reason, n.id]), [
      ['a', 'unknown_id', 'new-7'],
      ['a typed', 'unknown_id', 'new-7'],
      ['b', 'unknown_id', 'new-7'],
    ]);
    assert.equal(all.length, 1);
    assert.equal(client.lastEventId, 'new-8');
    transport.last.fail({ kind: 'ended' });
    await clock.tickAsync(2000);
    assert.equal(transport.connections.length, 3);
    assert.equal(transport.last.request.lastEventId, 'new-8');
  });

  it('reports a refused channel to its subscribers, keeps the others, and does not retry it', async () => {
    const { client, errors } = makeClient();
    collect(client, 'a');
    await settle();
    const first = transport.last;
    first.connected().event('a', 'x-1');
    const refusals: HeraldError[] = [];
    const stopFirst = client.subscribe('secret', () => {}, { onError: (e) => refusals.push(e) });
    await settle();
    transport.last.reject(403, 'forbidden');
    await clock.tickAsync(60_000);
    assert.deepEqual(refusals.map((e) => [e.code, e.channels]), [['forbidden', ['secret']]]);
    assert.deepEqual(errors.map((e) => e.channels), [['secret']]);
    assert.equal(transport.connections.length, 2);
    assert.deepEqual(transport.active, [first]);
    assert.equal(client.state, 'open');

    // A late subscriber learns of the refusal too; only resubscribing from scratch retries.
    const late: HeraldError[] = [];
    const stop = client.subscribe('secret', () => {}, { onError: (e) => late.push(e) });
    await settle();
    assert.equal(late.length, 1);
    assert.equal(transport.connections.length, 2);
    stop();
    stopFirst();
    await settle();
    client.subscribe('secret', () => {});
    await settle();
    assert.equal(transport.connections.length, 3);
  });

  it('closes when the only channel is refused', async () => {
    const { client, errors } = makeClient();
    collect(client, 'nope');
    await settle();
    transport.last.reject(400, 'invalid_channel');
    await clock.tickAsync(60_000);
    assert.equal(client.state, 'closed');
    assert.equal(transport.connections.length, 1);
    assert.equal(errors[0]?.code, 'invalid_channel');
  });

  it('pauses on a hidden page and catches up when it is shown', async () => {
    const page = Object.assign(new EventTarget(), { visibilityState: 'visible' });
    undo.push(stubGlobal('document', page));
    const show = (state: 'visible' | 'hidden') => {
      page.visibilityState = state;
      page.dispatchEvent(new Event('visibilitychange'));
    };
    const { client, states } = makeClient({ pauseWhenHidden: { afterMs: 10_000 } });
    collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1');
    show('hidden');
    await clock.tickAsync(5000);
    show('visible');
    show('hidden');
    await clock.tickAsync(9999);
    assert.equal(transport.active.length, 1);
    await clock.tickAsync(1);
    assert.equal(transport.active.length, 0);
    assert.equal(client.state, 'reconnecting');
    await clock.tickAsync(600_000);
    assert.equal(transport.connections.length, 1);
    show('visible');
    await settle();
    assert.equal(transport.connections.length, 2);
    assert.equal(transport.last.request.lastEventId, 'x-1');
    transport.last.connected();
    assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open']);
  });

  it('close() ends everything for good', async () => {
    const { client } = makeClient();
    collect(client, 'a');
    await settle();
    transport.last.connected();
    client.close();
    assert.equal(transport.active.length, 0);
    assert.equal(client.state, 'closed');
    assert.throws(() => client.subscribe('a', () => {}), /after close/);
  });
});

describe('tokens', () => {
  it('asks the provider first, then again shortly before expiry, and moves the stream over without a gap', async () => {
    const reasons: TokenRequestReason[] = [];
    let n = 0;
    const { client } = makeClient({
      tokenRefreshMarginMs: 30_000,
      token: ({ reason }) => {
        reasons.push(reason);
        n += 1;
        return Promise.resolve(jwt(Math.floor(Date.now() / 1000) + 90) + n);
      },
    });
    const a = collect(client, 'a');
    await settle();
    assert.deepEqual(reasons, ['initial']);
    const first = transport.last;
    assert.match(String(first.request.token), /1$/);
    first.connected().event('a', 'x-1');

    await clock.tickAsync(59_999);
    assert.deepEqual(reasons, ['initial']);
    await clock.tickAsync(1);
    assert.deepEqual(reasons, ['initial', 'expiring']);
    const second = transport.last;
    assertIncludes(second.request, { channels: ['a'], lastEventId: 'x-1' });
    assert.match(String(second.request.token), /2$/);
    first.event('a', 'x-2');
    second.connected().event('a', 'x-2').event('a', 'x-3');
    assert.equal(first.closedByClient, true);
    assert.deepEqual(a.ids(), ['x-1', 'x-2', 'x-3']);
  });

  it('refreshes a short-lived token a third before it expires', async () => {
    const reasons: TokenRequestReason[] = [];
    const { client } = makeClient({
      token: ({ reason }) => {
        reasons.push(reason);
        return jwt(Math.floor(Date.now() / 1000) + 3);
      },
    });
    collect(client, 'a');
    await settle();
    transport.last.connected();
    await clock.tickAsync(1999);
    assert.deepEqual(reasons, ['initial']);
    await clock.tickAsync(1);
    assert.deepEqual(reasons, ['initial', 'expiring']);
  });

  it('keeps refreshing when a timer fires a fraction of a millisecond early', async () => {
    clock.setSystemTime(Date.parse('2026-11-23T09:00:00.001Z'));
    const reasons: TokenRequestReason[] = [];
    const { client } = makeClient({
      token: ({ reason }) => {
        reasons.push(reason);
        // Whole seconds, as in a JWT: the token's life is 2999 ms, a third of it is not a whole number.
        return jwt(Math.floor(Date.now() / 1000) + 3);
      },
    });
    collect(client, 'a');
    await settle();
    transport.last.connected();
    for (let i = 0; i < 3; i++) {
      await clock.tickAsync(2100);
      transport.last.connected();
    }
    assert.deepEqual(reasons, ['initial', 'expiring', 'expiring', 'expiring']);
  });

  it('after a pause longer than the token lives, gets a new token before reconnecting', async () => {
    const page = Object.assign(new EventTarget(), { visibilityState: 'visible' });
    undo.push(stubGlobal('document', page));
    const show = (state: 'visible' | 'hidden') => {
      page.visibilityState = state;
      page.dispatchEvent(new Event('visibilitychange'));
    };
    const reasons: TokenRequestReason[] = [];
    const { client } = makeClient({
      pauseWhenHidden: { afterMs: 0 },
      token: ({ reason }) => {
        reasons.push(reason);
        return jwt(Math.floor(Date.now() / 1000) + 60) + reasons.length;
      },
    });
    collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1');
    show('hidden');
    await clock.tickAsync(600_000);
    assert.equal(transport.active.length, 0);
    assert.deepEqual(reasons, ['initial']);
    show('visible');
    await settle();
    assert.deepEqual(reasons, ['initial', 'expired']);
    assert.equal(transport.connections.length, 2);
    assertIncludes(transport.last.request, { lastEventId: 'x-1' });
    assert.match(String(transport.last.request.token), /2$/);
  });

  it('gets a new token and reconnects at once when the hub says the token expired', async () => {
    const reasons: TokenRequestReason[] = [];
    const { client } = makeClient({
      token: ({ reason }) => {
        reasons.push(reason);
        return `opaque-${reasons.length}`;
      },
    });
    collect(client, 'a');
    await settle();
    transport.last.connected().event('a', 'x-1').send({ kind: 'token_expired' });
    await settle();
    assert.deepEqual(reasons, ['initial', 'expired']);
    assertIncludes(transport.last.request, { token: 'opaque-2', lastEventId: 'x-1' });
  });

  it('retries a 401 once at once with a new token, then backs off and reports', async () => {
    const reasons: TokenRequestReason[] = [];
    const { client, errors } = makeClient({
      token: ({ reason }) => {
        reasons.push(reason);
        return `opaque-${reasons.length}`;
      },
    });
    collect(client, 'a');
    await settle();
    transport.last.reject(401, 'token_expired');
    await settle();
    assert.deepEqual(reasons, ['initial', 'expired']);
    assert.equal(transport.connections.length, 2);
    transport.last.reject(401, 'invalid_token');
    await settle();
    assert.deepEqual(errors.map((e) => e.code), ['invalid_token']);
    assert.equal(transport.connections.length, 2);
    await clock.tickAsync(1000);
    assert.deepEqual(reasons, ['initial', 'expired', 'rejected']);
    assert.equal(transport.connections.length, 3);
  });

  it('closes on a 401 when the token is static', async () => {
    const { client, errors } = makeClient({ token: 'static' });
    collect(client, 'a');
    await settle();
    assert.equal(transport.last.request.token, 'static');
    transport.last.reject(401, 'token_expired');
    await clock.tickAsync(60_000);
    assert.equal(client.state, 'closed');
    assert.deepEqual(errors.map((e) => e.status), [401]);
    assert.equal(transport.connections.length, 1);
  });

  it('reports a failing provider and tries again later', async () => {
    let fail = true;
    const { client, errors } = makeClient({
      token: () => (fail ? Promise.reject(new Error('logged out')) : 'tok'),
    });
    collect(client, 'a');
    await settle();
    assert.deepEqual(errors.map((e) => e.code), ['token_provider']);
    assert.equal(transport.connections.length, 0);
    fail = false;
    await clock.tickAsync(1000);
    assert.equal(transport.last.request.token, 'tok');
  });
});

describe('HTTP API', () => {
  it('publishes and reads history with the token, renewing it once on a 401', async () => {
    const calls: Array<{ url: string; init: RequestInit }> = [];
    const answers = [
      new Response(JSON.stringify({ error: { code: 'token_expired', message: 'expired' } }), { status: 401 }),
      new Response(JSON.stringify({ id: 'e-1' })),
      new Response(JSON.stringify({ channel: 'a b', events: [{ channel: 'a b', id: 'e-1' }] })),
      new Response(JSON.stringify({ error: { code: 'forbidden', message: 'no' } }), { status: 403 }),
    ];
    const fetchStub = (url: string | URL | Request, init?: RequestInit) => {
      calls.push({ url: String(url), init: init ?? {} });
      const answer = answers.shift();
      return answer ? Promise.resolve(answer) : Promise.reject(new Error('no answer'));
    };
    let n = 0;
    const { client } = makeClient({ token: () => `t${++n}`, fetch: fetchStub as typeof fetch });
    assert.deepEqual(await client.publish('a', 'message', { text: 'hi' }), { id: 'e-1', duplicate: false });
    assert.deepEqual(calls.map((c) => new Headers(c.init.headers).get('authorization')), ['Bearer t1', 'Bearer t2']);
    assert.equal(calls[1]?.init.body, '{"channel":"a","type":"message","data":{"text":"hi"}}');
    const events = await client.history('a b', { limit: 5 });
    assert.equal(calls[2]?.url, 'https://hub.test/channels/a%20b/history?limit=5');
    assert.equal(events.length, 1);
    await assert.rejects(client.publish('x', 'message', 1), { code: 'forbidden', status: 403 });
  });
});
