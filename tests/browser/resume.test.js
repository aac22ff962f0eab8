// The 'Drop connection' flow: events published while the page is offline are
// replayed exactly once, in order, when it resumes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { mintToken, publish, startHub } from './hub.js';
import {
  TEST_TIMEOUT_MS,
  UI_TIMEOUT_MS,
  closePages,
  launchBrowser,
  logEntries,
  openDemo,
  waitConnected,
  withScreenshots,
} from './browser.js';

describe('drop and resume', { timeout: 2 * TEST_TIMEOUT_MS + 30_000 }, () => {
  let hub;
  let browser;
  let token;

  before(async () => {
    hub = await startHub();
    browser = await launchBrowser();
    token = await mintToken({ sub: 'browser-test', subscribe: ['demo:*'], publish: ['demo:*'] });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await hub?.stop();
  });

  test('events missed during a drop are replayed once each, in order', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    try {
      await withScreenshots(t, () => [page], async () => {
        const run = randomBytes(4).toString('hex');
        page = await openDemo(browser, hub.url);
        await waitConnected(page);

        // One event before the drop, so the page has an id to resume from.
        const before = await publish(hub.url, token, { channel: 'demo:lobby', data: { text: `before-${run}` } });
        const first = page.locator('#log li[data-channel="demo:lobby"]', { hasText: `before-${run}` });
        await first.waitFor();
        const resumeFrom = await first.getAttribute('data-id');
        assert.ok(resumeFrom, 'the event has an id');
        if (before.id != null) assert.equal(resumeFrom, String(before.id));

        await page.locator('#drop').click();
        await page.locator('#state[data-state="closed"]').waitFor();
        await page.locator('#resume-info[data-status="dropped"]').waitFor();

        const missed = [];
        for (let i = 1; i <= 3; i++) {
          const text = `missed-${i}-${run}`;
          const res = await publish(hub.url, token, { channel: 'demo:lobby', type: 'message', data: { text, i } });
          missed.push({ text, id: res.id });
        }
        // All three were published while the page was still disconnected.
        assert.equal(await page.locator('#resume-info').getAttribute('data-status'), 'dropped');

        await page.locator('#state[data-state="open"]').waitFor({ timeout: UI_TIMEOUT_MS });
        const info = page.locator('#resume-info[data-status="resumed"]');
        await info.waitFor({ timeout: UI_TIMEOUT_MS });
        assert.equal(
          (await info.textContent()).trim(),
          `resumed after id ${resumeFrom}: 3 missed events replayed`,
        );
        assert.equal(await page.locator('#reset-info').isVisible(), false, 'no reset after a short drop');

        // A live event after the resume lands on top of the replayed ones.
        const live = `live-${run}`;
        await publish(hub.url, token, { channel: 'demo:lobby', data: { text: live } });
        await page.locator('#log li', { hasText: live }).waitFor();

        const entries = (await logEntries(page, '#log li[data-channel="demo:lobby"]'))
          .filter((e) => e.data.includes(run))
          .reverse(); // oldest first
        const texts = entries.map((e) => JSON.parse(e.data).text);
        assert.deepEqual(texts, [`before-${run}`, ...missed.map((m) => m.text), live]);
        for (const [i, m] of missed.entries()) {
          if (m.id != null) assert.equal(entries[i + 1].id, String(m.id));
        }
        assert.equal(entries.filter((e) => e.duplicate).length, 0, 'no event id was seen twice');
        assert.equal(await page.locator('#log li.replayed').count(), 3);
      });
    } finally {
      await closePages([page]);
    }
  });

  test('a resume the history cannot cover shows a reset', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    let page;
    try {
      await withScreenshots(t, () => [page], async () => {
        const run = randomBytes(4).toString('hex');
        page = await openDemo(browser, hub.url);
        await waitConnected(page);
        await publish(hub.url, token, { channel: 'demo:lobby', data: { text: `seen-${run}` } });
        await page.locator('#log li', { hasText: `seen-${run}` }).waitFor();
        assert.equal(await page.locator('#reset-info').isVisible(), false);

        // Make the page resume from an id the hub never issued.
        await page.route('**/events?**', (route) => {
          const url = new URL(route.request().url());
          if (!url.searchParams.has('last_event_id')) return route.continue();
          url.searchParams.set('last_event_id', `made-up-${run}`);
          return route.continue({ url: url.toString() });
        });
        await page.locator('#drop').click();

        const reset = page.locator('#reset-info');
        await reset.waitFor({ state: 'visible' });
        assert.equal(await reset.getAttribute('data-reason'), 'unknown_id');
        assert.match(await reset.textContent(), /history could not cover the gap/);
        assert.match(await reset.textContent(), /demo:lobby/);
        await page.locator('#log li[data-type="reset"]').waitFor();
        await page.unroute('**/events?**');

        // The page stays connected and keeps receiving live events.
        await page.locator('#state[data-state="open"]').waitFor();
        const live = `live-${run}`;
        await publish(hub.url, token, { channel: 'demo:lobby', data: { text: live } });
        await page.locator('#log li[data-channel="demo:lobby"]', { hasText: live }).waitFor();
      });
    } finally {
      await closePages([page]);
    }
  });
});
