// The presence hook in headless Chromium against a real hub, over WebSocket and SSE.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, launchBrowser, openPage, servePages, withPage, type PageServer } from './support/browser.js';
import { mintToken, startHub, type Hub } from './support/hub.js';

let pages: PageServer;
let browser: Browser;
let hub: Hub;
let ann: string;
let bob: string;

before(async () => {
  pages = await servePages(['react-presence']);
  browser = await launchBrowser();
  hub = await startHub({ corsOrigins: [pages.origin], env: { HERALD_NAMESPACES__ROOM__PRESENCE: 'true' } });
  ann = await mintToken({ sub: 'ann', subscribe: ['room:*'] });
  bob = await mintToken({ sub: 'bob', subscribe: ['room:*'] });
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  await browser?.close();
  await hub?.stop();
  await pages?.close();
}, { timeout: HOOK_TIMEOUT_MS });

const users = (page: Page): Promise<string[]> => page.locator('li[data-user]').evaluateAll((lis) => lis.map((li) => li.getAttribute('data-user') ?? ''));

async function waitUsers(page: Page, expected: string[]): Promise<void> {
  await page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll('li[data-user]')].map((li) => li.getAttribute('data-user'))) === JSON.stringify(want),
    expected,
    { timeout: 15_000 },
  );
}

describe('usePresence', () => {
  for (const transport of ['ws', 'sse']) {
    it(`lists who is on a channel as people come and go (${transport})`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const channel = `room:${randomBytes(3).toString('hex')}`;
      const url = (token: string) => `${pages.origin}/react-presence.html?${new URLSearchParams({ hub: hub.url, token, channel, transport })}`;
      await withPage(`use presence ${transport}`, browser, url(ann), async ({ page }) => {
        await page.locator('section[data-state="open"][data-loading="false"]').waitFor();
        await waitUsers(page, ['ann']);
        const other = await openPage(browser, url(bob));
        try {
          await waitUsers(other.page, ['ann', 'bob']);
          await waitUsers(page, ['ann', 'bob']);
        } finally {
          await other.context.close();
        }
        await waitUsers(page, ['ann']);
        assert.deepEqual(await users(page), ['ann']);
        assert.equal(await page.locator('section').getAttribute('data-error'), '');
      });
    });
  }
});
