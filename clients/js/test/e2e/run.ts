// Runs the end-to-end test files one after the other (each starts its own hub
// and browser), then kills any hub a file failed to stop.
//
//   node run.js                 every file
//   node run.js demo            the files whose name starts with `demo`
//   node run.js --skip demo     all but those
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PID_DIR } from './support/paths.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const skip = args[0] === '--skip';
const prefixes = skip ? args.slice(1) : args;
const chosen = (name: string): boolean =>
  prefixes.length === 0 || prefixes.some((prefix) => name.startsWith(prefix)) !== skip;
const files = readdirSync(here)
  .filter((name) => name.endsWith('.e2e.test.js') && chosen(name))
  .sort()
  .map((name) => path.join(here, name));

const result = spawnSync(
  process.execPath,
  ['--test', '--test-reporter=spec', '--test-concurrency=1', '--enable-source-maps', ...files],
  { stdio: 'inherit' },
);

let leftovers: string[] = [];
try {
  leftovers = readdirSync(PID_DIR);
} catch {
  /* no hub was started */
}
for (const pid of leftovers) {
  rmSync(path.join(PID_DIR, pid), { force: true });
  let command = '';
  try {
    command = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    continue; // gone (or no /proc to confirm it is ours)
  }
  if (!command.includes('herald')) continue;
  process.kill(Number(pid), 'SIGKILL');
  console.error(`killed a hub left running (pid ${pid})`);
}

process.exit(result.status ?? 1);
