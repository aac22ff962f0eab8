// Driving the vanilla harness page (pages/vanilla.ts) from a test: start a client in
// it and read what it received.
import type { Page } from 'playwright-core';
import type { HarnessStart, Received } from '../pages/harness-types.js';

/** Starts the page's client with `options` and waits until it is open. */
export async function start(page: Page, options: HarnessStart): Promise<void> {
  await page.waitForFunction(() => window.harness !== undefined);
  await page.evaluate((o) => window.harness.start(o), options);
  await page.waitForFunction(() => window.harness.state() === 'open');
}

/** Everything the page's client received so far. */
export const received = (page: Page): Promise<Received[]> => page.evaluate(() => window.harness.received);

/** Waits until the page's client received at least `count` events; all of them. */
export async function waitReceived(page: Page, count: number, timeout: number): Promise<Received[]> {
  await page.waitForFunction((n) => window.harness.received.length >= n, count, { timeout });
  return received(page);
}
