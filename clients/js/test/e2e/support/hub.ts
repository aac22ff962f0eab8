// Runs the real `herald` binary for the end-to-end tests, mints tokens with
// `herald token`, publishes over HTTP. Every hub started is killed when its test
// file ends (and, failing that, by the runner, see run.ts).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PID_DIR, REPO_ROOT } from './paths.js';

export const HERALD_BIN = process.env.HERALD_BIN
  ? path.resolve(process.env.HERALD_BIN)
  : path.join(path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR ?? 'target'), 'debug', 'herald');

/** One signing secret per test file, shared by every hub it starts and by `herald token`. */
const SECRET = `client-e2e-${randomBytes(24).toString('hex')}`;
const STARTUP_TIMEOUT_MS = 20_000;

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

function hubEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('HERALD_')) env[key] = value;
  // Notifications in memory, so test hubs leave no database file behind; a test of
  // persistence passes its own HERALD_STORE__PATH.
  return { ...env, HERALD_JWT_SECRET: SECRET, HERALD_STORE__PATH: ':memory:', NO_COLOR: '1', ...extra };
}

export interface Hub {
  readonly url: string;
  readonly port: number;
  /** The hub's working directory (where its SQLite store lives); pass it to a restart. */
  readonly dir: string;
  output(): string;
  /** SIGKILL: no `shutdown` event, connections just drop. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export interface HubOptions {
  /** Port to listen on (0: any free one). */
  port?: number;
  /** Origins allowed by CORS (the test pages' server). */
  corsOrigins?: string[];
  /** Let `POST /demo/token` mint tokens (the demo app signs in with it). */
  demoTokens?: boolean;
  /** More configuration, as `HERALD_*` variables (`HERALD_BROKER`, `HERALD_NAMESPACES__CHAT__PRESENCE`, ...). */
  env?: Record<string, string>;
  /** Run in this directory (kept on stop), e.g. the `dir` of the hub this one replaces. */
  dir?: string;
}

export async function startHub(options: HubOptions = {}): Promise<Hub> {
  const ownDir = options.dir === undefined;
  const cwd = options.dir ?? mkdtempSync(path.join(tmpdir(), 'herald-client-e2e-'));
  const env = hubEnv({
    ...(options.corsOrigins ? { HERALD_HTTP__CORS_ORIGINS: JSON.stringify(options.corsOrigins) } : {}),
    ...(options.demoTokens ? { HERALD_DEMO__TOKENS: 'true' } : {}),
    ...options.env,
  });
  const proc = spawn(HERALD_BIN, ['serve', '--listen', `127.0.0.1:${options.port ?? 0}`], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  mkdirSync(PID_DIR, { recursive: true });
  const pidFile = path.join(PID_DIR, String(proc.pid));
  writeFileSync(pidFile, '');

  let captured = '';
  const capture = (chunk: Buffer): void => {
    captured = (captured + chunk.toString('utf8')).slice(-64 * 1024);
  };
  proc.stdout?.on('data', capture);
  proc.stderr?.on('data', capture);
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', () => {
      running.delete(proc);
      rmSync(pidFile, { force: true });
      resolve();
    });
  });
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  const stop = async (): Promise<void> => {
    await end('SIGTERM');
    if (ownDir) rmSync(cwd, { recursive: true, force: true });
  };

  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`herald did not start in time\n${captured}`)), STARTUP_TIMEOUT_MS);
      const check = (): void => {
        const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(captured);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      };
      proc.stdout?.on('data', check);
      proc.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`could not run ${HERALD_BIN}: ${error.message} (build it, or set HERALD_BIN)`));
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`herald exited early\n${captured}`));
      });
    });
    return { url, port: Number(new URL(url).port), dir: cwd, output: () => captured, kill: () => end('SIGKILL'), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

export interface Claims {
  sub: string;
  subscribe?: string[];
  publish?: string[];
  ttl?: number;
}

export function mintToken({ sub, subscribe = [], publish = [], ttl }: Claims): Promise<string> {
  const args = ['token', '--sub', sub];
  for (const p of subscribe) args.push('--subscribe', p);
  for (const p of publish) args.push('--publish', p);
  if (ttl !== undefined) args.push('--ttl', String(ttl));
  return new Promise((resolve, reject) => {
    execFile(HERALD_BIN, args, { env: hubEnv(), timeout: 10_000 }, (error, stdout, stderr) => {
      const token = stdout
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(line))
        .at(-1);
      if (error || !token) reject(new Error(`herald ${args.join(' ')} failed: ${error?.message ?? 'no token'}\n${stderr}`));
      else resolve(token);
    });
  });
}

/** A JSON request to the hub with a bearer token; rejects on anything but 2xx. */
export async function hubJson(hubUrl: string, token: string, method: string, pathname: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${hubUrl}${pathname}`, {
    method,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${pathname} -> ${response.status}: ${text}`);
  return text ? (JSON.parse(text) as unknown) : null;
}

export async function publish(
  hubUrl: string,
  token: string,
  event: { channel: string; type?: string; data: unknown; id?: string },
): Promise<string> {
  const response = await fetch(`${hubUrl}/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST /publish ${JSON.stringify(event)} -> ${response.status}: ${text}`);
  const { id } = JSON.parse(text) as { id: string };
  return id;
}
