// Services some end-to-end tests need: skipped with a visible reason when absent,
// a failure when HERALD_REQUIRE_SERVICES=1 (as CI runs them).
import { connect } from 'node:net';

/** Whether something accepts TCP connections at `host:port`. */
export function reachable(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * `null` when Redis is reachable on 127.0.0.1:6379; otherwise the reason to skip.
 * Throws when services are required.
 */
export async function redisMissing(): Promise<string | null> {
  if (await reachable('127.0.0.1', 6379)) return null;
  const reason = 'Redis not reachable at 127.0.0.1:6379';
  if (process.env.HERALD_REQUIRE_SERVICES === '1') throw new Error(`${reason} (HERALD_REQUIRE_SERVICES=1)`);
  console.log(`SKIP ${reason}; set HERALD_REQUIRE_SERVICES=1 to make this a failure`);
  return reason;
}
