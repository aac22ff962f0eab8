// Browser helpers: headless Chromium from the system package, pages that
// record their console, and failure screenshots.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

/** Budget for one test body; node's own per-test timeout is a little longer. */
export const TEST_BUDGET_MS = 25_000;
export const TEST_TIMEOUT_MS = 30_000;
/** Default wait for something to show up in the page. */
export const UI_TIMEOUT_MS = 8_000;

export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 20_000,
  });
}

/**
 * A fresh isolated page on the demo, with its console and errors recorded.
 * `query` is appended to the page URL (e.g. `?user=alice`); `setup(page)` runs
 * before navigation (for request routing).
 */
export async function openDemo(browser, hubUrl, query = '', setup = null) {
  const context = await browser.newContext({ viewport: { width: 900, height: 1000 } });
  context.setDefaultTimeout(UI_TIMEOUT_MS);
  const page = await context.newPage();
  if (setup) await setup(page);
  const logs = [];
  page.on('console', (msg) => logs.push(`[console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`[pageerror] ${err.message}`));
  page.on('requestfailed', (req) => {
    // Closing an EventSource aborts its request; that is expected, not news.
    if (!req.url().includes('/events')) logs.push(`[requestfailed] ${req.method()} ${req.url()} ${req.failure()?.errorText}`);
  });
  page.herald = { logs, context };
  await page.goto(`${hubUrl}/${query}`);
  return page;
}

/** Waits until the page's stream is open and the hub's `connected` event was shown. */
export async function waitConnected(page) {
  await page.locator('#state[data-state="open"]').waitFor();
  await page.locator('#connected-info').waitFor({ state: 'visible' });
}

/** Log entries (newest first, as shown) as plain objects. */
export function logEntries(page, selector = '#log li') {
  return page.$$eval(selector, (lis) =>
    lis.map((li) => ({
      id: li.dataset.id,
      channel: li.dataset.channel,
      type: li.dataset.type,
      duplicate: li.dataset.duplicate === 'true',
      data: li.querySelector('.ev-data')?.textContent ?? '',
      text: li.textContent,
    })),
  );
}

function slug(s) {
  return s.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').slice(0, 80) || 'test';
}

/**
 * Runs a test body within TEST_BUDGET_MS. On failure (or when the budget is
 * exhausted) every page in `pages()` is screenshotted into artifacts/ and its
 * console is printed, then the error is rethrown.
 */
export async function withScreenshots(t, pages, body) {
  let timer;
  const budget = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`test body did not finish within ${TEST_BUDGET_MS} ms`)), TEST_BUDGET_MS);
  });
  try {
    await Promise.race([body(), budget]);
  } catch (err) {
    mkdirSync(ARTIFACTS, { recursive: true });
    const list = pages().filter(Boolean);
    for (const [i, page] of list.entries()) {
      const file = path.join(ARTIFACTS, `${slug(t.name)}${list.length > 1 ? `-page${i + 1}` : ''}.png`);
      try {
        await page.screenshot({ path: file, fullPage: true, timeout: 5_000 });
        console.error(`screenshot: ${file}`);
      } catch (shotErr) {
        console.error(`screenshot failed (${file}): ${shotErr.message}`);
      }
      const logs = page.herald?.logs ?? [];
      if (logs.length) console.error(`page ${i + 1} console:\n  ${logs.join('\n  ')}`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Closes the pages' contexts, ignoring errors (used in cleanup). */
export async function closePages(pages) {
  for (const page of pages) {
    try {
      await page?.herald?.context.close();
    } catch {
      /* browser may be gone already */
    }
  }
}
