// Headless Chromium from the system package, a server for the test pages, and
// per-test pages that record their console and are screenshotted on failure.
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ARTIFACTS, PACKAGE_ROOT } from './paths.js';

export const CHROMIUM = '/usr/bin/chromium';
/** Limits of one test and of a file's setup or teardown. */
export const TEST_TIMEOUT_MS = 30_000;
export const HOOK_TIMEOUT_MS = 40_000;
const PAGES = path.join(PACKAGE_ROOT, 'test', 'e2e', 'pages');

export function launchBrowser(): Promise<Browser> {
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

export interface PageServer {
  /** The origin the pages are served from (for the hub's CORS setting). */
  readonly origin: string;
  close(): Promise<void>;
}

/**
 * Bundles the test pages with esbuild against the built package (`dist/`, as an
 * application would import it) and serves them: `/<name>.html` loads `<name>.js`.
 */
export async function servePages(names: string[]): Promise<PageServer> {
  const result = await build({
    absWorkingDir: PACKAGE_ROOT,
    entryPoints: names.map((name) => path.join(PAGES, `${name}.ts${name.startsWith('react') ? 'x' : ''}`)),
    outdir: 'out',
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    jsx: 'automatic',
    sourcemap: 'inline',
    logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"development"' },
    alias: {
      '@herald/client/react': './dist/react/index.js',
      '@herald/client': './dist/index.js',
    },
  });
  const files = new Map<string, string>();
  for (const file of result.outputFiles) files.set(`/${path.basename(file.path)}`, file.text);
  for (const name of names) {
    files.set(`/${name}.html`, `<!doctype html><meta charset="utf-8"><title>${name}</title><div id="root"></div><script type="module" src="/${name}.js"></script>`);
  }
  const server: Server = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://x').pathname;
    if (pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const body = files.get(pathname);
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    const type = req.url?.endsWith('.js') ? 'text/javascript' : 'text/html';
    res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('page server has no port');
  return {
    origin: `http://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface TestPage {
  readonly page: Page;
  readonly context: BrowserContext;
  /** Console output and page errors. */
  readonly logs: string[];
  /** Every `/events` request the page made (URL). */
  readonly streams: string[];
  /** Every `/poll` request the page made (URL). */
  readonly polls: string[];
  /** Every WebSocket the page opened (URL). */
  readonly sockets: string[];
}

export async function openPage(
  browser: Browser,
  url: string,
  setup?: (page: Page) => Promise<void>,
  context?: BrowserContext,
): Promise<TestPage> {
  context ??= await browser.newContext({ viewport: { width: 1280, height: 860 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const logs: string[] = [];
  const streams: string[] = [];
  const polls: string[] = [];
  const sockets: string[] = [];
  page.on('websocket', (socket) => sockets.push(socket.url()));
  page.on('console', (msg) => logs.push(`[console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (error) => logs.push(`[pageerror] ${error.message}`));
  page.on('request', (request) => {
    const pathname = new URL(request.url()).pathname;
    if (request.method() === 'GET' && pathname === '/events') streams.push(request.url());
    if (request.method() === 'GET' && pathname === '/poll') polls.push(request.url());
  });
  if (setup) await setup(page);
  await page.goto(url);
  return { page, context, logs, streams, polls, sockets };
}

/** Polls `condition` until it holds, or fails after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function slug(text: string): string {
  return text.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').slice(0, 80) || 'test';
}

/** Screenshots each page into `test-results/` and prints its console. */
async function capture(name: string, pages: readonly TestPage[]): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const [i, testPage] of pages.entries()) {
    const file = path.join(ARTIFACTS, `${slug(name)}${pages.length > 1 ? `-${i + 1}` : ''}.png`);
    await testPage.page.screenshot({ path: file, fullPage: true, timeout: 5000 }).then(
      () => console.error(`screenshot: ${file}`),
      (shotError: Error) => console.error(`screenshot failed: ${shotError.message}`),
    );
    if (testPage.logs.length > 0) console.error(`page ${i + 1} console:\n  ${testPage.logs.join('\n  ')}`);
  }
}

/**
 * Runs a test body on a fresh page. On failure the page is screenshotted into
 * `test-results/` and its console printed; the page is closed in any case.
 */
export async function withPage(
  name: string,
  browser: Browser,
  url: string,
  body: (page: TestPage) => Promise<void>,
  setup?: (page: Page) => Promise<void>,
): Promise<void> {
  const testPage = await openPage(browser, url, setup);
  try {
    await body(testPage);
  } catch (error) {
    await capture(name, [testPage]);
    throw error;
  } finally {
    await testPage.context.close().catch(() => undefined);
  }
}

/**
 * Runs a test body that opens pages of its own with `open` (each in a new browser
 * context unless one is given: a second tab of the same user shares a context).
 * On failure every page is screenshotted; all are closed in any case.
 */
export async function withPages(
  name: string,
  browser: Browser,
  body: (open: (url: string, context?: BrowserContext) => Promise<TestPage>) => Promise<void>,
): Promise<void> {
  const opened: TestPage[] = [];
  const open = async (url: string, context?: BrowserContext): Promise<TestPage> => {
    const testPage = await openPage(browser, url, undefined, context);
    opened.push(testPage);
    return testPage;
  };
  try {
    await body(open);
  } catch (error) {
    await capture(name, opened);
    throw error;
  } finally {
    for (const context of new Set(opened.map((p) => p.context))) await context.close().catch(() => undefined);
  }
}
