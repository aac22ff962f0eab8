// The React hooks in headless Chromium against a real hub.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, launchBrowser, servePages, waitUntil, withPage, type PageServer } from './support/browser.js';
import { mintToken, publish, startHub, type Hub } from './support/hub.js';

let pages: PageServer;
let browser: Browser;
let hub: Hub;
let publisher: string;
let subscriber: string;

before(async () => {
  pages = await servePages(['react']);
  browser = await launchBrowser();
  hub = await startHub({ corsOrigins: [pages.origin] });
  publisher = await mintToken({ sub: 'publisher', publish: ['*'] });
  subscriber = await mintToken({ sub: 'ann', subscribe: ['e2e:*'] });
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  await browser?.close();
  await hub?.stop();
  await pages?.close();
}, { timeout: HOOK_TIMEOUT_MS });

describe('React hooks', () => {
  it('render events, keep one subscription across re-renders, and add a channel without loss', { timeout: TEST_TIMEOUT_MS }, async () => {
    const first = `e2e:${randomBytes(3).toString('hex')}`;
    const second = `e2e:${randomBytes(3).toString('hex')}`;
    const query = new URLSearchParams({ hub: hub.url, token: subscriber, first, second });
    await withPage('react hooks', browser, `${pages.origin}/react.html?${query}`, async ({ page, streams }) => {
      await page.locator('#state[data-state="open"]').waitFor();
      const feed = (channel: string) => page.locator(`section[data-channel="${channel}"]`);

      const ids: string[] = [];
      for (let i = 1; i <= 5; i++) ids.push(await publish(hub.url, publisher, { channel: first, data: { text: `one-${i}` } }));
      await feed(first).locator('li').nth(4).waitFor();
      // Five re-renders, each with a new handler: still the one connection.
      assert.equal(await feed(first).getAttribute('data-renders'), '5');
      assert.equal(streams.length, 1);

      await page.locator('#add').click();
      await page.waitForFunction(() => document.querySelector('#state')?.getAttribute('data-state') === 'open');
      const more: string[] = [];
      const publishing = (async () => {
        for (let i = 6; i <= 15; i++) {
          more.push(await publish(hub.url, publisher, { channel: first, data: { text: `one-${i}` } }));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      await waitUntil(() => streams.length === 2, 5000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await publish(hub.url, publisher, { channel: second, type: 'note', data: { text: 'note' } });
      await publish(hub.url, publisher, { channel: second, data: { text: 'two-1' } });
      await publishing;

      await feed(first).locator('li').nth(14).waitFor();
      await feed(second).locator('li').nth(1).waitFor();
      assert.deepEqual(await feed(first).locator('li').evaluateAll((lis) => lis.map((li) => li.getAttribute('data-id'))), [
        ...ids,
        ...more,
      ]);
      assert.deepEqual(await feed(second).locator('li').allTextContents(), ['note', 'two-1']);
      assert.equal(await feed(second).getAttribute('data-notes'), '1');
      assert.equal(await page.locator('#state').getAttribute('data-state'), 'open');
      assert.equal(streams.length, 2);
    });
  });
});
