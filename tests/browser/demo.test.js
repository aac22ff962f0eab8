// The demo page against a real hub: connecting, receiving, publishing.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { mintToken, publish, startHub } from './hub.js';
import {
  TEST_TIMEOUT_MS,
  closePages,
  launchBrowser,
  logEntries,
  openDemo,
  waitConnected,
  withScreenshots,
} from './browser.js';

const marker = (label) => `${label}-${randomBytes(4).toString('hex')}`;

describe('demo page', { timeout: 7 * TEST_TIMEOUT_MS + 30_000 }, () => {
  let hub;
  let browser;
  let token;

  before(async () => {
    hub = await startHub();
    browser = await launchBrowser();
    token = await mintToken({ sub: 'browser-test', subscribe: ['demo:*'], publish: ['demo:*', 'user:*'] });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await hub?.stop();
  });

  test('loads, gets a demo token and reaches state open', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    try {
      await withScreenshots(t, () => [page], async () => {
        page = await openDemo(browser, hub.url, '?user=alice');
        await waitConnected(page);
        assert.equal(await page.locator('#state').textContent(), 'open');
        assert.equal(await page.locator('#user').inputValue(), 'alice');
        assert.match(await page.locator('#token-info').textContent(), /Token for alice/);
        assert.equal(await page.locator('#conn-user').textContent(), 'alice');
        const channels = await page.locator('#conn-channels').textContent();
        assert.ok(channels.split(', ').includes('demo:lobby'), `connected channels: ${channels}`);
        assert.notEqual((await page.locator('#conn-id').textContent()).trim(), '');
        // The `connected` control event is also visible in the log.
        await page.locator('#log li[data-type="connected"]').first().waitFor();
        assert.equal(await page.locator('#token-paste').isVisible(), false);

        // Disconnect and connect again with the same button.
        assert.equal(await page.locator('#connect').textContent(), 'Disconnect');
        await page.locator('#connect').click();
        await page.locator('#state[data-state="closed"]').waitFor();
        assert.equal(await page.locator('#connect').textContent(), 'Connect');
        const firstId = await page.locator('#conn-id').textContent();
        await page.locator('#connect').click();
        await waitConnected(page);
        await page.waitForFunction((id) => document.querySelector('#conn-id').textContent !== id, firstId);
      });
    } finally {
      await closePages([page]);
    }
  });

  test('an event published over HTTP appears in the log', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    try {
      await withScreenshots(t, () => [page], async () => {
        page = await openDemo(browser, hub.url);
        await waitConnected(page);
        const text = marker('http');
        const data = { text, n: 42, nested: { ok: true } };
        const { id } = await publish(hub.url, token, { channel: 'demo:lobby', type: 'message', data });

        const item = page.locator('#log li[data-channel="demo:lobby"]', { hasText: text });
        await item.waitFor();
        assert.equal(await item.count(), 1);
        assert.equal(await item.getAttribute('data-type'), 'message');
        if (id != null) assert.equal(await item.getAttribute('data-id'), String(id));
        const shown = await item.locator('.ev-data').textContent();
        assert.deepEqual(JSON.parse(shown), data);
        // Events on channels the page did not subscribe to do not show up.
        const other = marker('elsewhere');
        await publish(hub.url, token, { channel: 'demo:elsewhere', data: { text: other } });
        const after = marker('after');
        await publish(hub.url, token, { channel: 'demo:lobby', data: { text: after } });
        await page.locator('#log li', { hasText: after }).waitFor();
        assert.equal(await page.locator('#log li', { hasText: other }).count(), 0);
      });
    } finally {
      await closePages([page]);
    }
  });

  test("the user's private channel reaches only that user", { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let dana;
    let eric;
    try {
      await withScreenshots(t, () => [dana, eric], async () => {
        [dana, eric] = await Promise.all([
          openDemo(browser, hub.url, '?user=dana'),
          openDemo(browser, hub.url, '?user=eric'),
        ]);
        await Promise.all([waitConnected(dana), waitConnected(eric)]);
        assert.ok((await dana.locator('#conn-channels').textContent()).split(', ').includes('user:dana'));

        const secret = marker('for-dana');
        await publish(hub.url, token, { channel: 'user:dana', data: { text: secret } });
        const item = dana.locator('#log li[data-channel="user:dana"]', { hasText: secret });
        await item.waitFor();
        // A later event on a shared channel reaches eric; the private one never did.
        const shared = marker('shared');
        await publish(hub.url, token, { channel: 'demo:lobby', data: { text: shared } });
        await eric.locator('#log li', { hasText: shared }).waitFor();
        assert.equal(await eric.locator('#log li', { hasText: secret }).count(), 0);
      });
    } finally {
      await closePages([dana, eric]);
    }
  });

  test('multi-line text published from the form arrives intact', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    try {
      await withScreenshots(t, () => [page], async () => {
        page = await openDemo(browser, hub.url);
        await waitConnected(page);
        const id = marker('multi');
        const text = `first line ${id}\n  second line, indented\n\nfourth line after a blank one\ttab "quotes" {not json}`;
        await page.locator('#pub-channel').fill('demo:lobby');
        await page.locator('#pub-type').fill('message');
        await page.locator('#pub-data').fill(text);
        await page.locator('#publish').click();
        await page.locator('#pub-result[data-status="ok"]').waitFor();

        const item = page.locator('#log li[data-channel="demo:lobby"]', { hasText: id });
        await item.waitFor();
        assert.equal(await item.count(), 1);
        assert.equal(await item.getAttribute('data-type'), 'message');
        assert.equal(await item.locator('.ev-data').textContent(), text);
        assert.equal(await item.locator('.badge', { hasText: 'text' }).count(), 1);
      });
    } finally {
      await closePages([page]);
    }
  });

  test('a publish error from the hub is shown', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    try {
      await withScreenshots(t, () => [page], async () => {
        page = await openDemo(browser, hub.url);
        await waitConnected(page);
        // Demo tokens may publish to demo:*, user:* and broadcast only.
        await page.locator('#pub-channel').fill('private:nope');
        await page.locator('#pub-data').fill('{"x": 1}');
        await page.locator('#publish').click();
        const result = page.locator('#pub-result[data-status="error"]');
        await result.waitFor();
        const msg = await result.textContent();
        assert.match(msg, /^Publish failed: \S/);
        assert.doesNotMatch(msg, /undefined|\[object Object\]/);
      });
    } finally {
      await closePages([page]);
    }
  });

  test('on a hub without demo tokens a pasted token is used', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    let prodHub;
    try {
      await withScreenshots(t, () => [page], async () => {
        // Like a production hub: POST /demo/token answers 404.
        prodHub = await startHub({ env: { HERALD_DEMO__TOKENS: 'false' } });
        const probe = await fetch(`${prodHub.url}/demo/token`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: '{"user":"x"}',
        });
        assert.equal(probe.status, 404, 'demo tokens are off on this hub');

        page = await openDemo(browser, prodHub.url);
        await page.locator('#token-paste').waitFor({ state: 'visible' });
        assert.equal(await page.locator('#user').isVisible(), false);
        assert.equal(await page.locator('#state').getAttribute('data-state'), 'closed');

        const pasted = await mintToken({ sub: 'carol', subscribe: ['demo:*'], publish: ['demo:*'] });
        await page.locator('#token').fill(pasted);
        await page.locator('#use-token').click();
        await waitConnected(page);
        assert.equal(await page.locator('#conn-user').textContent(), 'carol');
        assert.match(await page.locator('#token-info').textContent(), /Token for carol/);

        const text = marker('pasted');
        await page.locator('#pub-data').fill(JSON.stringify({ text }));
        await page.locator('#publish').click();
        await page.locator('#pub-result[data-status="ok"]').waitFor();
        await page.locator('#log li[data-channel="demo:lobby"]', { hasText: text }).waitFor();
      });
    } finally {
      await closePages([page]);
      await prodHub?.stop();
    }
  });

  test("an event published from page A's form appears in page B", { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let a;
    let b;
    try {
      await withScreenshots(t, () => [a, b], async () => {
        [a, b] = await Promise.all([
          openDemo(browser, hub.url, '?user=ann'),
          openDemo(browser, hub.url, '?user=bob&channels=demo:lobby,demo:team'),
        ]);
        await Promise.all([waitConnected(a), waitConnected(b)]);

        const text = marker('from-a');
        const data = { text, from: 'ann' };
        await a.locator('#pub-channel').fill('demo:team');
        await a.locator('#pub-data').fill(JSON.stringify(data));
        await a.locator('#publish').click();
        await a.locator('#pub-result[data-status="ok"]').waitFor();
        const publishedId = await a.locator('#pub-result').getAttribute('data-id');

        const item = b.locator('#log li[data-channel="demo:team"]', { hasText: text });
        await item.waitFor();
        assert.equal(await item.count(), 1);
        assert.equal(await item.getAttribute('data-type'), 'message');
        if (publishedId) assert.equal(await item.getAttribute('data-id'), publishedId);
        assert.deepEqual(JSON.parse(await item.locator('.ev-data').textContent()), data);
        // Page A subscribes to demo:lobby only, so it does not see demo:team.
        assert.equal(await a.locator('#log li', { hasText: text }).count(), 0);

        // A broadcast from B reaches A.
        const shout = marker('broadcast');
        await b.locator('#pub-data').fill(JSON.stringify({ text: shout }));
        await b.locator('#pub-broadcast').check();
        await b.locator('#publish').click();
        await b.locator('#pub-result[data-status="ok"]').waitFor();
        await a.locator('#log li', { hasText: shout }).waitFor();
        const entries = (await logEntries(a)).filter((e) => e.text.includes(shout));
        assert.equal(entries.length, 1);
      });
    } finally {
      await closePages([a, b]);
    }
  });
});
