// The vanilla client in headless Chromium against a real hub on another origin.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { Received } from './pages/harness-types.js';
import { HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, launchBrowser, servePages, withPage, type PageServer, type TestPage } from './support/browser.js';
import { received, start, waitReceived as waitForReceived } from './support/harness.js';
import { mintToken, publish, startHub, type Hub } from './support/hub.js';

const USER = 'ann';
let pages: PageServer;
let browser: Browser;
let hub: Hub;
let publisher: string;
let subscriber: string;

before(async () => {
  pages = await servePages(['vanilla']);
  browser = await launchBrowser();
  hub = await startHub({ corsOrigins: [pages.origin] });
  publisher = await mintToken({ sub: 'publisher', publish: ['*'] });
  subscriber = await mintToken({ sub: USER, subscribe: ['e2e:*'] });
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  await browser?.close();
  await hub?.stop();
  await pages?.close();
}, { timeout: HOOK_TIMEOUT_MS });

/** A fresh channel prefix per test, so tests never see each other's events. */
const fresh = (): string => `e2e:${randomBytes(3).toString('hex')}`;

const waitReceived = (page: Page, count: number, timeout = 10_000): Promise<Received[]> =>
  waitForReceived(page, count, timeout);

const on = (events: Received[], channel: string) => events.filter((e) => e.via === channel);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function run(name: string, body: (page: TestPage) => Promise<void>, setup?: (page: Page) => Promise<void>) {
  return withPage(name, browser, `${pages.origin}/vanilla.html`, body, setup);
}

describe('vanilla client against a real hub', () => {
  it('delivers events to the right channel, by type, with the user channel', { timeout: TEST_TIMEOUT_MS }, async () => {
    await run('events on several channels', async ({ page, streams }) => {
      const [a, b] = [fresh(), fresh()];
      await start(page, { url: hub.url, token: subscriber, channels: [a, b, `user:${USER}`] });
      await page.evaluate((ch) => window.harness.subscribeType(ch, 'note'), a);
      const carried = await page.evaluate(() => window.harness.connectedChannels());
      for (const channel of [a, b, `user:${USER}`, '$broadcast']) assert.ok(carried.includes(channel), channel);

      await publish(hub.url, publisher, { channel: a, data: { n: 1 } });
      await publish(hub.url, publisher, { channel: b, data: 'plain text' });
      await publish(hub.url, publisher, { channel: a, type: 'note', data: { n: 2 } });
      await publish(hub.url, publisher, { channel: `user:${USER}`, type: 'dm', data: { hi: USER } });
      await publish(hub.url, publisher, { channel: b, data: [1, 2] });

      const events = await waitReceived(page, 6);
      await sleep(200);
      assert.equal((await received(page)).length, 6);
      assert.deepEqual(on(events, a).map((e) => [e.type, e.data]), [
        ['message', { n: 1 }],
        ['note', { n: 2 }],
      ]);
      assert.deepEqual(on(events, `${a}#note`).map((e) => e.data), [{ n: 2 }]);
      assert.deepEqual(on(events, b).map((e) => e.data), ['plain text', [1, 2]]);
      assert.deepEqual(on(events, `user:${USER}`).map((e) => [e.type, e.data]), [['dm', { hi: USER }]]);
      // The subscribeType call added no channel: no new connection.
      assert.equal(streams.length, 1);
      assert.doesNotMatch(streams[0] ?? '', /token=/);
    });
  });

  it('adds channels mid-stream, with one reconnect and nothing lost on the others', { timeout: TEST_TIMEOUT_MS }, async () => {
    await run('adding channels mid-stream', async ({ page, streams }) => {
      const [a, b, c] = [fresh(), fresh(), fresh()];
      await start(page, { url: hub.url, token: subscriber, channels: [a] });

      const total = 60;
      const published: string[] = [];
      const publishing = (async () => {
        for (let i = 0; i < total; i++) {
          published.push(await publish(hub.url, publisher, { channel: a, data: { i } }));
          await sleep(10);
        }
      })();
      await page.waitForFunction(() => window.harness.received.length >= 10);
      // Two channels in the same tick: one new connection for both.
      await page.evaluate((channels) => window.harness.subscribe(channels), [b, c]);
      await page.waitForFunction((ch) => window.harness.connectedChannels().includes(ch), c);
      await publish(hub.url, publisher, { channel: b, data: 'b-after' });
      await publish(hub.url, publisher, { channel: c, data: 'c-after' });
      await publishing;

      const events = await waitReceived(page, total + 2);
      await sleep(300);
      const all = await received(page);
      assert.deepEqual(on(all, a).map((e) => e.id), published);
      assert.deepEqual(on(all, a).map((e) => (e.data as { i: number }).i), [...Array(total).keys()]);
      assert.deepEqual(on(events, b).map((e) => e.data), ['b-after']);
      assert.deepEqual(on(events, c).map((e) => e.data), ['c-after']);
      assert.equal(new Set(all.map((e) => e.id)).size, all.length);
      assert.equal(streams.length, 2);
      const second = new URL(streams[1] ?? '');
      assert.deepEqual(second.searchParams.getAll('channel'), [a, b, c].sort());
      assert.ok(second.searchParams.get('last_event_id'));
    });
  });

  it('resumes after a dropped connection with every event published meanwhile, once', { timeout: TEST_TIMEOUT_MS }, async () => {
    await run('dropped connection', async ({ page, streams }) => {
      const a = fresh();
      await start(page, {
        url: hub.url,
        token: subscriber,
        channels: [a],
        reconnect: { initialDelayMs: 1500, jitter: 0 },
      });
      const before: string[] = [];
      for (let i = 0; i < 3; i++) before.push(await publish(hub.url, publisher, { channel: a, data: { i } }));
      await waitReceived(page, 3);

      await page.evaluate(() => window.harness.drop());
      assert.equal(await page.evaluate(() => window.harness.state()), 'reconnecting');
      const during: string[] = [];
      for (let i = 3; i < 8; i++) during.push(await publish(hub.url, publisher, { channel: a, data: { i } }));
      // All of them were published while the client was still reconnecting.
      assert.equal(await page.evaluate(() => window.harness.state()), 'reconnecting');
      assert.equal((await received(page)).length, 3);

      await page.waitForFunction(() => window.harness.state() === 'open');
      const events = await waitReceived(page, 8);
      await sleep(200);
      assert.deepEqual((await received(page)).map((e) => e.id), [...before, ...during]);
      assert.deepEqual(events.map((e) => (e.data as { i: number }).i), [0, 1, 2, 3, 4, 5, 6, 7]);
      assert.equal(new URL(streams[1] ?? '').searchParams.get('last_event_id'), before[2]);
      assert.deepEqual(await page.evaluate(() => window.harness.states), ['connecting', 'open', 'reconnecting', 'open']);
    });
  });

  it('refreshes an expiring token through the app and keeps the stream without loss', { timeout: TEST_TIMEOUT_MS }, async () => {
    const setup = async (page: Page): Promise<void> => {
      await page.exposeFunction('mintTestToken', () => mintToken({ sub: USER, subscribe: ['e2e:*'], ttl: 3 }));
    };
    await run(
      'expiring token',
      async ({ page, streams }) => {
        const a = fresh();
        await start(page, { url: hub.url, tokenFromTest: true, channels: [a] });
        const published: string[] = [];
        const until = Date.now() + 7000;
        for (let i = 0; Date.now() < until; i++) {
          published.push(await publish(hub.url, publisher, { channel: a, data: { i } }));
          await sleep(50);
        }
        await waitReceived(page, published.length);
        await sleep(200);
        assert.deepEqual((await received(page)).map((e) => e.id), published);
        const reasons = await page.evaluate(() => window.harness.tokenReasons);
        assert.equal(reasons[0], 'initial');
        assert.ok(reasons.filter((r) => r === 'expiring').length >= 2, reasons.join());
        // Each new token moved the stream to a new connection.
        assert.ok(streams.length >= 3, `${streams.length} connections`);
        assert.equal(await page.evaluate(() => window.harness.state()), 'open');
        assert.deepEqual(await page.evaluate(() => window.harness.errors), []);
      },
      setup,
    );
  });

  it('reports a refused channel without disturbing the others or retrying it', { timeout: TEST_TIMEOUT_MS }, async () => {
    await run('refused channel', async ({ page, streams }) => {
      const a = fresh();
      await start(page, { url: hub.url, token: subscriber, channels: [a] });
      await page.evaluate(() => window.harness.subscribe(['private:x']));
      await page.waitForFunction(() => window.harness.errors.length > 0);
      assert.deepEqual(await page.evaluate(() => window.harness.errors), [{ code: 'forbidden', channels: ['private:x'] }]);
      const id = await publish(hub.url, publisher, { channel: a, data: 'still here' });
      assert.deepEqual((await waitReceived(page, 1)).map((e) => e.id), [id]);
      await sleep(1500);
      assert.equal(streams.length, 2);
      assert.equal(await page.evaluate(() => window.harness.state()), 'open');
    });
  });

  it('pauses on a hidden page and catches up when it is shown again', { timeout: TEST_TIMEOUT_MS }, async () => {
    await run('hidden page', async ({ page, streams }) => {
      const a = fresh();
      await start(page, { url: hub.url, token: subscriber, channels: [a], pauseAfterMs: 300 });
      const first = await publish(hub.url, publisher, { channel: a, data: 0 });
      await waitReceived(page, 1);
      await page.evaluate(() => window.harness.setHidden(true));
      await page.waitForFunction(() => window.harness.state() === 'reconnecting');
      const missed: string[] = [];
      for (let i = 1; i <= 3; i++) missed.push(await publish(hub.url, publisher, { channel: a, data: i }));
      await sleep(300);
      assert.equal((await received(page)).length, 1);
      await page.evaluate(() => window.harness.setHidden(false));
      await waitReceived(page, 4);
      assert.deepEqual((await received(page)).map((e) => e.id), [first, ...missed]);
      assert.equal(new URL(streams[1] ?? '').searchParams.get('last_event_id'), first);
    });
  });
});

describe('hub restart', () => {
  it('gets a reset after the hub lost its history, calls the refetch hooks, and carries on', { timeout: TEST_TIMEOUT_MS }, async () => {
    const own = await startHub({ corsOrigins: [pages.origin] });
    try {
      await run('hub restart reset', async ({ page }) => {
        const [a, b] = [fresh(), fresh()];
        await start(page, {
          url: own.url,
          token: subscriber,
          channels: [a, b],
          reconnect: { initialDelayMs: 200, maxDelayMs: 500 },
        });
        await publish(own.url, publisher, { channel: a, data: 'before' });
        await waitReceived(page, 1);

        await own.kill();
        await page.waitForFunction(() => window.harness.state() === 'reconnecting');
        const restarted = await startHub({ port: own.port, corsOrigins: [pages.origin] });
        try {
          await page.waitForFunction(() => window.harness.state() === 'open', undefined, { timeout: 10_000 });
          await page.waitForFunction(() => window.harness.resets.length >= 2);
          const resets = await page.evaluate(() => window.harness.resets);
          assert.deepEqual(resets.map((r) => r.channel).sort(), [a, b].sort());
          assert.ok(resets.every((r) => r.reason === 'unknown_id' && r.refetched === 0), JSON.stringify(resets));

          const after = await publish(restarted.url, publisher, { channel: b, data: 'after' });
          const events = await waitReceived(page, 2);
          assert.deepEqual(events.map((e) => e.data), ['before', 'after']);
          assert.equal(events[1]?.id, after);
        } finally {
          await restarted.stop();
        }
      });
    } finally {
      await own.stop();
    }
  });
});
