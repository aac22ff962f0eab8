// The WebSocket and long-poll transports and the fallback, in headless Chromium
// against real hubs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { Received } from './pages/harness-types.js';
import { HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, launchBrowser, openPage, servePages, withPage, type PageServer, type TestPage } from './support/browser.js';
import { received, start, waitReceived as waitForReceived } from './support/harness.js';
import { mintToken, publish, startHub, type Hub } from './support/hub.js';
import { startBufferingProxy } from './support/proxy.js';

/** Namespace `chat`: presence, client events, live-only client events. */
const CHAT = {
  HERALD_NAMESPACES__CHAT__PRESENCE: 'true',
  HERALD_NAMESPACES__CHAT__CLIENT_PUBLISH: 'true',
  HERALD_NAMESPACES__CHAT__CLIENT_HISTORY: 'false',
};

let pages: PageServer;
let browser: Browser;
let hub: Hub;
let publisher: string;
let ann: string;
let bob: string;

before(async () => {
  pages = await servePages(['vanilla']);
  browser = await launchBrowser();
  hub = await startHub({ corsOrigins: [pages.origin], env: CHAT });
  publisher = await mintToken({ sub: 'publisher', publish: ['*'] });
  ann = await mintToken({ sub: 'ann', subscribe: ['e2e:*', 'chat:*'], publish: ['chat:*'] });
  bob = await mintToken({ sub: 'bob', subscribe: ['e2e:*', 'chat:*'], publish: ['chat:*'] });
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  await browser?.close();
  await hub?.stop();
  await pages?.close();
}, { timeout: HOOK_TIMEOUT_MS });

const fresh = (prefix = 'e2e'): string => `${prefix}:${randomBytes(3).toString('hex')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const waitReceived = (page: Page, count: number, timeout = 15_000): Promise<Received[]> =>
  waitForReceived(page, count, timeout);

function run(name: string, body: (page: TestPage) => Promise<void>) {
  return withPage(name, browser, `${pages.origin}/vanilla.html`, body);
}

/** Whether a service answers; prints why a test is skipped, or fails under HERALD_REQUIRE_SERVICES=1. */
async function serviceAvailable(name: string, host: string, port: number): Promise<boolean> {
  const up = await new Promise<boolean>((resolve) => {
    const socket = connect({ host, port, timeout: 2000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
  if (up) return true;
  if (process.env.HERALD_REQUIRE_SERVICES === '1') throw new Error(`${name} is required (HERALD_REQUIRE_SERVICES=1) but not reachable at ${host}:${port}`);
  console.log(`SKIP: ${name} not reachable at ${host}:${port}; set HERALD_REQUIRE_SERVICES=1 to make this a failure`);
  return false;
}

describe('WebSocket transport', () => {
  it('carries client events and presence between two browsers, and changes channels without reconnecting', { timeout: TEST_TIMEOUT_MS }, async () => {
    const room = fresh('chat');
    await run('ws chat between two browsers', async ({ page, sockets }) => {
      await start(page, { url: hub.url, token: ann, channels: [room], transport: 'ws' });
      assert.equal(await page.evaluate(() => window.harness.transportInUse()), 'ws');
      await page.evaluate((ch) => window.harness.watchPresence(ch), room);
      await page.waitForFunction(
        async (ch) => {
          const members = await window.harness.presence(ch);
          return Array.isArray(members) && members.some((m) => m.user === 'ann');
        },
        room,
      );

      const other = await openPage(browser, `${pages.origin}/vanilla.html`);
      try {
        await start(other.page, { url: hub.url, token: bob, channels: [room], transport: 'ws' });
        await page.waitForFunction(() => window.harness.presenceChanges.some((c) => c.kind === 'join' && c.user === 'bob'));
        const members = await page.evaluate((ch) => window.harness.presence(ch), room);
        assert.ok(Array.isArray(members));
        assert.deepEqual(members.map((m) => m.user).sort(), ['ann', 'bob']);

        // A client event from bob reaches ann, acknowledged with its id.
        const id = await other.page.evaluate((ch) => window.harness.publish(ch, 'typing', { user: 'bob' }), room);
        assert.doesNotMatch(id, /^error:/);
        await page.waitForFunction(() => window.harness.received.some((e) => e.type === 'typing'));
        const typing = (await received(page)).find((e) => e.type === 'typing');
        assert.deepEqual([typing?.channel, typing?.data, typing?.id], [room, { user: 'bob' }, id]);

        // A namespace without client publishing refuses, as a HeraldError.
        assert.equal(await other.page.evaluate(() => window.harness.publish('e2e:nope', 'typing', {})), 'error:forbidden');
      } finally {
        await other.context.close();
      }
      // Bob's browser went away: he leaves.
      await page.waitForFunction(() => window.harness.presenceChanges.some((c) => c.kind === 'leave' && c.user === 'bob'), undefined, { timeout: 15_000 });

      // A channel added later joins the same socket and gets its events.
      const extra = fresh();
      await page.evaluate((ch) => window.harness.subscribe([ch]), extra);
      await page.waitForFunction((ch) => window.harness.connectedChannels().includes(ch), extra);
      await sleep(200);
      const published = await publish(hub.url, publisher, { channel: extra, data: 'on the same socket' });
      await page.waitForFunction((ch) => window.harness.received.some((e) => e.via === ch), extra);
      assert.equal((await received(page)).find((e) => e.via === extra)?.id, published);
      assert.equal(sockets.length, 1, `one socket: ${sockets.join(', ')}`);
    });
  });

  it('resumes after the hub is killed and restarted, with every event published meanwhile, once', { timeout: 45_000 }, async (t) => {
    if (!(await serviceAvailable('Redis', '127.0.0.1', 6379))) {
      t.skip('Redis not reachable');
      return;
    }
    // Two hubs sharing history through Redis: the client's hub is killed, events are
    // published through the other one meanwhile, and the first comes back on its port.
    const env = { ...CHAT, HERALD_BROKER: 'redis://127.0.0.1:6379', HERALD_REDIS__PREFIX: `herald-e2e-${randomBytes(4).toString('hex')}` };
    const own = await startHub({ corsOrigins: [pages.origin], env });
    const other = await startHub({ corsOrigins: [pages.origin], env });
    try {
      await run('ws resume across a hub restart', async ({ page, sockets }) => {
        const a = fresh();
        await start(page, { url: own.url, token: ann, channels: [a], transport: 'ws', reconnect: { initialDelayMs: 200, maxDelayMs: 500 } });
        const before: string[] = [];
        for (let i = 0; i < 5; i++) before.push(await publish(own.url, publisher, { channel: a, data: { i } }));
        await waitReceived(page, 5);

        await own.kill();
        await page.waitForFunction(() => window.harness.state() === 'reconnecting');
        const during: string[] = [];
        for (let i = 5; i < 25; i++) during.push(await publish(other.url, publisher, { channel: a, data: { i } }));
        const restarted = await startHub({ port: own.port, corsOrigins: [pages.origin], env });
        try {
          await page.waitForFunction(() => window.harness.state() === 'open', undefined, { timeout: 15_000 });
          const events = await waitReceived(page, 25);
          await sleep(300);
          const all = await received(page);
          assert.deepEqual(all.map((e) => e.id), [...before, ...during]);
          assert.deepEqual(events.map((e) => (e.data as { i: number }).i), [...Array(25).keys()]);
          assert.deepEqual(await page.evaluate(() => window.harness.resets), []);
          assert.ok(sockets.length >= 2);
          assert.equal(new URL(sockets.at(-1) ?? '').searchParams.get('last_event_id'), before.at(-1));
        } finally {
          await restarted.stop();
        }
      });
    } finally {
      await own.stop();
      await other.stop();
    }
  });
});

describe('long-polling', () => {
  it('receives every event published while it polls, once and in order', { timeout: TEST_TIMEOUT_MS }, async () => {
    await run('poll transport', async ({ page, polls, streams }) => {
      const [a, b] = [fresh(), fresh()];
      await start(page, { url: hub.url, token: ann, channels: [a, b], transport: 'poll' });
      assert.equal(await page.evaluate(() => window.harness.transportInUse()), 'poll');
      const published: string[] = [];
      for (let i = 0; i < 40; i++) {
        published.push(await publish(hub.url, publisher, { channel: i % 2 === 0 ? a : b, data: { i } }));
        if (i % 5 === 0) await sleep(30);
      }
      await waitReceived(page, 40);
      await sleep(300);
      const all = await received(page);
      assert.deepEqual(all.map((e) => e.id), published);
      assert.deepEqual(all.map((e) => (e.data as { i: number }).i), [...Array(40).keys()]);
      assert.ok(polls.length >= 2, `${polls.length} requests`);
      assert.equal(streams.length, 0);
      assert.doesNotMatch(polls.join(' '), /token=/);
    });
  });

  it('falls back from SSE to long-polling behind a proxy that buffers event streams', { timeout: TEST_TIMEOUT_MS }, async () => {
    const proxy = await startBufferingProxy(hub.url);
    try {
      await run('fallback to long-polling', async ({ page, polls, streams }) => {
        const a = fresh();
        await page.waitForFunction(() => window.harness !== undefined);
        await page.evaluate((o) => window.harness.start(o), { url: proxy.url, token: ann, channels: [a], transport: 'auto' as const, fallbackAfterMs: 1500 });
        await page.waitForFunction(() => window.harness.state() === 'open', undefined, { timeout: 10_000 });
        assert.equal(await page.evaluate(() => window.harness.transportInUse()), 'poll');
        assert.equal(streams.length, 1, 'one stream was tried');
        assert.equal(proxy.buffered(), 1);
        const ids: string[] = [];
        for (let i = 0; i < 5; i++) ids.push(await publish(hub.url, publisher, { channel: a, data: { i } }));
        await waitReceived(page, 5);
        assert.deepEqual((await received(page)).map((e) => e.id), ids);
        assert.ok(polls.length >= 2);
        assert.ok(polls.every((url) => url.startsWith(proxy.url)));
      });
    } finally {
      await proxy.close();
    }
  });
});
