// The demo app the hub serves at `/`, in headless Chromium against a real hub:
// what a user sees on the page as events arrive, the hub dies and comes back,
// and other users come and go.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, launchBrowser, withPages, type TestPage } from './support/browser.js';
import { hubJson, mintToken, publish, startHub, type Hub, type HubOptions } from './support/hub.js';
import { redisMissing } from './support/services.js';

let browser: Browser;
let hub: Hub;
/** A backend's token: may publish anywhere, including to any user and the broadcast. */
let server: string;

before(async () => {
  browser = await launchBrowser();
  hub = await startHub({ demoTokens: true });
  server = await mintToken({ sub: 'server', publish: ['*'] });
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  await browser?.close();
  await hub?.stop();
}, { timeout: HOOK_TIMEOUT_MS });

const fresh = (label: string): string => `${label}-${randomBytes(3).toString('hex')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Open = (url: string, context?: BrowserContext) => Promise<TestPage>;

/** Opens the demo signed in as `user` and waits until it is live. */
async function openDemo(open: Open, on: Hub, user: string, context?: BrowserContext): Promise<Page> {
  const { page } = await open(`${on.url}/?user=${encodeURIComponent(user)}`, context);
  await page.getByTestId('connection').and(page.locator('[data-state="open"]')).waitFor();
  return page;
}

const connection = (page: Page) => page.getByTestId('connection');
const cardTitles = (page: Page, column = 'next') =>
  page.getByTestId(`column-${column}`).getByTestId('card-title').allTextContents();
const unread = (page: Page) => page.getByTestId('unread-count');
const presence = (page: Page) =>
  page.getByTestId('presence-member').evaluateAll((lis) => lis.map((li) => li.getAttribute('data-user')));

async function waitUnread(page: Page, count: number): Promise<void> {
  await page.waitForFunction(
    (n) => document.querySelector('[data-testid="unread-count"]')?.getAttribute('data-count') === String(n),
    count,
  );
}

async function notify(user: string, title: string): Promise<void> {
  await hubJson(hub.url, server, 'POST', '/api/notifications', { user, title, message: 'from the test', type: 'info' });
}

describe('demo app', () => {
  it('signs in by name and shows board events as they arrive', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('demo events arrive', browser, async (open) => {
      const { page } = await open(`${hub.url}/`);
      await page.getByTestId('signin-name').fill(fresh('ann'));
      await page.getByTestId('signin-submit').click();
      await connection(page).and(page.locator('[data-state="open"]')).waitFor();
      assert.equal(await connection(page).textContent(), 'Live');

      const titles = [fresh('first'), fresh('second'), fresh('third')] as const;
      const before = await cardTitles(page);
      for (const title of titles) {
        await publish(hub.url, server, { channel: 'demo:board', type: 'card.created', data: { id: fresh('card'), title } });
      }
      await page.getByTestId('card-title').filter({ hasText: titles[2] }).waitFor();
      assert.deepEqual((await cardTitles(page)).slice(before.length), titles);

      // A card moved by someone else moves here too.
      const id = fresh('card');
      const moved = fresh('moved');
      await publish(hub.url, server, { channel: 'demo:board', type: 'card.created', data: { id, title: moved } });
      await publish(hub.url, server, { channel: 'demo:board', type: 'card.moved', data: { id, column: 'done' } });
      await page.getByTestId('column-done').getByTestId('card-title').filter({ hasText: moved }).waitFor();
      assert.ok(!(await cardTitles(page)).includes(moved));
    });
  });

  it('adds and moves cards for every page on the board', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('demo board', browser, async (open) => {
      const ann = await openDemo(open, hub, fresh('ann'));
      const bob = await openDemo(open, hub, fresh('bob'));
      const title = fresh('card');
      await ann.getByTestId('new-card').fill(title);
      await ann.getByTestId('add-card').click();
      await bob.getByTestId('column-next').getByTestId('card-title').filter({ hasText: title }).waitFor();
      await bob.getByTestId('card').filter({ hasText: title }).getByTestId('card-forward').click();
      await ann.getByTestId('column-doing').getByTestId('card-title').filter({ hasText: title }).waitFor();
    });
  });

  it('keeps the unread count the same in two tabs of one user', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('two tabs unread', browser, async (open) => {
      const user = fresh('cat');
      const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
      const first = await openDemo(open, hub, user, context);
      const second = await openDemo(open, hub, user, context);
      await notify(user, 'one');
      await notify(user, 'two');
      await waitUnread(first, 2);
      await waitUnread(second, 2);
      assert.equal(await unread(first).textContent(), '2');

      await first.getByTestId('bell').click();
      const item = first.getByTestId('notification').filter({ hasText: 'one' });
      await item.getByTestId('notification-read').click();
      await waitUnread(first, 1);
      await waitUnread(second, 1);
      assert.equal(await unread(second).textContent(), '1');

      // Deleting the other one in the second tab empties the first tab's list of unread ones.
      await second.getByTestId('bell').click();
      await second.getByTestId('notification').filter({ hasText: 'two' }).getByTestId('notification-delete').click();
      await waitUnread(first, 0);
      await first.getByTestId('notification').filter({ hasText: 'two' }).waitFor({ state: 'detached' });
      assert.equal(await unread(first).isVisible(), false);
      assert.deepEqual(await first.getByTestId('notification-title').allTextContents(), ['one']);
    });
  });

  it('shows a broadcast to every user and marks all read', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('broadcast', browser, async (open) => {
      const page = await openDemo(open, hub, fresh('dan'));
      const title = fresh('announcement');
      await hubJson(hub.url, server, 'POST', '/api/notifications/broadcast', { title, message: 'to all', type: 'warning' });
      await page.getByTestId('bell').click();
      await page.getByTestId('notification-title').filter({ hasText: title }).waitFor();
      assert.ok(Number(await unread(page).getAttribute('data-count')) >= 1);
      await page.getByTestId('mark-all-read').click();
      await waitUnread(page, 0);
      assert.equal(await page.getByTestId('notification').filter({ hasText: title }).getAttribute('data-read'), 'true');
    });
  });

  it('runs a demo job with a live progress bar and a notification when it is done', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('demo job', browser, async (open) => {
      const page = await openDemo(open, hub, fresh('eve'));
      // Broadcasts of earlier tests reach every user, this one too.
      await page.getByTestId('bell').and(page.locator('[data-fetches="1"]')).waitFor();
      const before = Number(await unread(page).getAttribute('data-count'));
      await page.getByTestId('start-job').click();
      const task = page.getByTestId('task').first();
      await task.waitFor();
      // Progress arrives step by step: at least one value between the ends is shown.
      await page.waitForFunction(() => {
        const value = Number(document.querySelector('[data-testid="task-progress"]')?.getAttribute('aria-valuenow'));
        return value > 0 && value < 100;
      });
      await page.getByTestId('task').and(page.locator('[data-status="completed"]')).waitFor({ timeout: 15_000 });
      assert.equal(await task.getByTestId('task-progress').getAttribute('aria-valuenow'), '100');
      await waitUnread(page, before + 1);
      await page.getByTestId('bell').click();
      const title = await page.getByTestId('task').first().locator('.task-title').textContent();
      assert.equal(await page.getByTestId('notification-title').first().textContent(), `${title} finished`);
    });
  });

  it('updates the presence list as a second browser joins and leaves', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('presence', browser, async (open) => {
      const [ann, bob] = [fresh('ann'), fresh('bob')];
      const first = await openDemo(open, hub, ann);
      await first.getByTestId('presence-member').and(first.locator(`[data-user="${ann}"]`)).waitFor();
      assert.ok(!(await presence(first)).includes(bob));

      const bobContext = await browser.newContext();
      const second = await openDemo(open, hub, bob, bobContext);
      await first.getByTestId('presence-member').and(first.locator(`[data-user="${bob}"]`)).waitFor();
      await second.getByTestId('presence-member').and(second.locator(`[data-user="${ann}"]`)).waitFor();

      await bobContext.close();
      await first.getByTestId('presence-member').and(first.locator(`[data-user="${bob}"]`)).waitFor({ state: 'detached' });
      assert.ok((await presence(first)).includes(ann));
    });
  });

  it("shows another client's presence and typing indicator, then the message", { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPages('typing', browser, async (open) => {
      const [ann, bob] = [fresh('ann'), fresh('bob')];
      const first = await openDemo(open, hub, ann);
      const second = await openDemo(open, hub, bob, await browser.newContext());
      await first.getByTestId('presence-member').and(first.locator(`[data-user="${bob}"]`)).waitFor();
      assert.equal(((await first.getByTestId('typing').textContent()) ?? '').trim(), '');

      await second.getByTestId('chat-input').pressSequentially('hello', { delay: 30 });
      await first.getByTestId('typing').filter({ hasText: `${bob} is typing` }).waitFor();
      // The one typing does not see themselves typing.
      assert.equal(((await second.getByTestId('typing').textContent()) ?? '').trim(), '');

      await second.getByTestId('chat-send').click();
      await first.getByTestId('chat-line').filter({ hasText: 'hello' }).waitFor();
      assert.equal(await first.getByTestId('chat-line').filter({ hasText: 'hello' }).locator('strong').textContent(), bob);
      await first.getByTestId('typing').filter({ hasText: 'typing' }).waitFor({ state: 'detached' });
    });
  });
});

describe('demo app and a hub that dies', () => {
  /** Starts a hub for one test; `restart` replaces it with one on the same port and directory. */
  async function ownHub(options: HubOptions) {
    const first = await startHub({ demoTokens: true, ...options });
    let current = first;
    return {
      get url() {
        return current.url;
      },
      get hub() {
        return current;
      },
      async restart(): Promise<void> {
        await current.kill();
        current = await startHub({ demoTokens: true, ...options, port: current.port, dir: current.dir });
      },
      /** Stops the running hub, then removes the directory (and store) they shared. */
      async stop(): Promise<void> {
        await current.stop();
        await first.stop();
      },
    };
  }

  it('recovers from kill -9 and a restart with every event shown once, in order', { timeout: 60_000 }, async (t) => {
    const missing = await redisMissing();
    if (missing) {
      t.skip(missing);
      return;
    }
    // History in Redis outlives the hub process, so the page resumes where it was.
    const env = { HERALD_BROKER: 'redis://127.0.0.1:6379', HERALD_REDIS__PREFIX: fresh('herald-e2e') };
    const own = await ownHub({ env });
    const token = await mintToken({ sub: 'server', publish: ['*'] });
    try {
      await withPages('kill and restart', browser, async (open) => {
        const page = await openDemo(open, own.hub, fresh('kim'));
        const run = fresh('n');
        const total = 40;
        // A publisher that keeps going through the outage: each event is retried
        // with its own id until the hub takes it (a repeat is answered as a duplicate).
        const publisher = (async () => {
          for (let i = 1; i <= total; i++) {
            const deadline = Date.now() + 20_000;
            for (;;) {
              try {
                await publish(own.url, token, {
                  channel: 'demo:board',
                  type: 'card.created',
                  id: `${run}-${i}`,
                  data: { id: `${run}-${i}`, title: `${run} #${i}` },
                });
                break;
              } catch (error) {
                if (Date.now() > deadline) throw error;
                await sleep(100);
              }
            }
            await sleep(40);
          }
        })();

        await page.getByTestId('card-title').filter({ hasText: `${run} #12` }).waitFor();
        await own.hub.kill();
        await connection(page).and(page.locator('[data-state="reconnecting"]')).waitFor();
        await own.restart();
        await publisher;

        await page.getByTestId('card-title').filter({ hasText: `${run} #${total}` }).waitFor({ timeout: 15_000 });
        await connection(page).and(page.locator('[data-state="open"]')).waitFor();
        await sleep(300);
        const shown = (await cardTitles(page)).filter((title) => title.startsWith(run));
        assert.deepEqual(shown, Array.from({ length: total }, (_, i) => `${run} #${i + 1}`));
      });
    } finally {
      await own.stop();
    }
  });

  it('refetches the board, the inbox and the tasks after a reset', { timeout: 45_000 }, async () => {
    // The memory broker forgets everything: the page's position is unknown to the
    // new hub, which answers with a reset.
    const own = await ownHub({});
    const token = await mintToken({ sub: 'server', publish: ['*'] });
    try {
      await withPages('reset', browser, async (open) => {
        const page = await openDemo(open, own.hub, fresh('rae'));
        const board = page.getByTestId('board');
        await board.and(page.locator('[data-loads="1"]')).waitFor();
        await page.getByTestId('bell').and(page.locator('[data-fetches="1"]')).waitFor();
        await page.getByTestId('jobs').and(page.locator('[data-fetches="1"]')).waitFor();
        const before = fresh('before');
        await publish(own.url, token, { channel: 'demo:board', type: 'card.created', data: { id: before, title: before } });
        await page.getByTestId('card-title').filter({ hasText: before }).waitFor();

        await own.restart();
        await board.and(page.locator('[data-loads="2"]')).waitFor({ timeout: 15_000 });
        await page.getByTestId('bell').and(page.locator('[data-fetches="2"]')).waitFor();
        await page.getByTestId('jobs').and(page.locator('[data-fetches="2"]')).waitFor();
        assert.equal(((await page.getByTestId('board-loads').textContent()) ?? '').includes('synced 2×'), true);
        // The board is what the new hub keeps: the card from before the restart is gone.
        await page.getByTestId('card-title').filter({ hasText: before }).waitFor({ state: 'detached' });

        const after = fresh('after');
        await publish(own.url, token, { channel: 'demo:board', type: 'card.created', data: { id: after, title: after } });
        await page.getByTestId('card-title').filter({ hasText: after }).waitFor();
        assert.equal(await connection(page).getAttribute('data-state'), 'open');
      });
    } finally {
      await own.stop();
    }
  });
});
