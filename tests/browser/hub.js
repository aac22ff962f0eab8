// Shared fixture: runs the real `herald` binary for the browser tests, mints
// tokens with `herald token`, and publishes over HTTP.
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const HERALD_BIN = process.env.HERALD_BIN
  ? process.env.HERALD_BIN.includes('/')
    ? path.resolve(process.env.HERALD_BIN)
    : process.env.HERALD_BIN
  : path.join(REPO_ROOT, 'target', 'debug', 'herald');

/** One random signing secret per test process, shared by the hub and `herald token`. */
export const TEST_SECRET = `browser-tests-${randomBytes(24).toString('hex')}`;

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const MAX_CAPTURE = 64 * 1024;

const running = new Set();

// Last line of defence: never leave a hub behind, whatever happened.
process.on('exit', () => {
  for (const proc of running) {
    try {
      proc.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    for (const proc of running) proc.kill('SIGKILL');
    process.exit(130);
  });
}

/**
 * Environment for herald child processes: the caller's environment without
 * any HERALD_* settings (so a developer's local configuration cannot leak in),
 * plus the test secret and any extra variables.
 */
export function hubEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HERALD_')) env[k] = v;
  }
  env.HERALD_JWT_SECRET = TEST_SECRET;
  // Notifications in memory: test hubs leave no database file behind (pass
  // HERALD_STORE__PATH in `extra` to test persistence).
  env.HERALD_STORE__PATH = ':memory:';
  if (!env.RUST_LOG) env.RUST_LOG = 'info';
  env.NO_COLOR = '1'; // readable captured logs
  return { ...env, ...extra };
}

/**
 * Starts `herald serve --listen 127.0.0.1:0` and resolves once it prints
 * `listening on http://HOST:PORT`. Demo tokens (`POST /demo/token`) are
 * switched on explicitly, since the hub runs with a fixed test secret; pass
 * `env: { HERALD_DEMO__TOKENS: 'false' }` to test a hub without them.
 *
 * @param {{ args?: string[], env?: Record<string,string>, timeoutMs?: number }} [opts]
 * @returns {Promise<{ url: string, pid: number, output: () => string, stop: () => Promise<void> }>}
 */
export async function startHub(opts = {}) {
  const { args = [], env = {}, timeoutMs = STARTUP_TIMEOUT_MS } = opts;
  const cwd = mkdtempSync(path.join(tmpdir(), 'herald-browser-'));
  const argv = ['serve', '--listen', '127.0.0.1:0', ...args];
  const proc = spawn(HERALD_BIN, argv, {
    cwd,
    env: hubEnv({ HERALD_DEMO__TOKENS: 'true', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);

  let captured = '';
  const capture = (chunk) => {
    captured += chunk.toString('utf8');
    if (captured.length > MAX_CAPTURE) captured = captured.slice(-MAX_CAPTURE);
  };
  proc.stdout.on('data', capture);
  proc.stderr.on('data', capture);

  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    });
  });

  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    rmSync(cwd, { recursive: true, force: true });
  };

  const describe = () =>
    `${HERALD_BIN} ${argv.join(' ')}\n--- captured output ---\n${captured || '(nothing)'}\n--- end ---`;

  let url;
  try {
    url = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`herald did not report "listening on http://..." within ${timeoutMs} ms\n${describe()}`)),
        timeoutMs,
      );
      const check = () => {
        const m = /listening on (https?:\/\/[^\s"'<>]+)/.exec(captured);
        if (m) {
          clearTimeout(timer);
          resolve(m[1].replace(/[).,;]+$/, '').replace(/\/+$/, ''));
        }
      };
      proc.stdout.on('data', check);
      proc.stderr.on('data', check);
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not start ${HERALD_BIN}: ${err.message} (build it with \`cargo build -p herald --bin herald\` or set HERALD_BIN)`));
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`herald exited early (code ${code}, signal ${signal})\n${describe()}`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }

  return { url, pid: proc.pid, output: () => captured, stop };
}

/**
 * Mints a JWT with `herald token` using the shared test secret.
 *
 * @param {{ sub: string, subscribe?: string[], publish?: string[], ttl?: number }} claims
 * @returns {Promise<string>}
 */
export function mintToken({ sub, subscribe = [], publish = [], ttl } = {}) {
  const args = ['token', '--sub', sub];
  for (const p of subscribe) args.push('--subscribe', p);
  for (const p of publish) args.push('--publish', p);
  if (ttl != null) args.push('--ttl', String(ttl));
  return new Promise((resolve, reject) => {
    execFile(HERALD_BIN, args, { env: hubEnv(), timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`herald ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        return;
      }
      const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
      const token = lines.findLast((l) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(l)) ?? lines.at(-1);
      if (!token) reject(new Error(`herald ${args.join(' ')} printed no token\n${stderr}`));
      else resolve(token);
    });
  });
}

/**
 * Publishes one event with POST /publish. Resolves with the parsed answer
 * (`{ id }`); rejects with the status and body on anything but 2xx.
 *
 * @param {string} hubUrl
 * @param {string} token
 * @param {{ channel?: string, broadcast?: boolean, type?: string, data: unknown }} event
 */
export async function publish(hubUrl, token, event) {
  const res = await fetch(`${hubUrl}/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST /publish ${JSON.stringify(event)} -> ${res.status}: ${text}`);
  return text ? JSON.parse(text) : {};
}
