import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package folder (clients/js), found from this file whether it runs from source or compiled. */
function findPackageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) || !existsSync(path.join(dir, 'tsconfig.build.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the package folder');
    dir = parent;
  }
  return dir;
}

export const PACKAGE_ROOT = findPackageRoot();
export const REPO_ROOT = path.resolve(PACKAGE_ROOT, '..', '..');
/** Screenshots and other leftovers of failed tests (git-ignored). */
export const ARTIFACTS = path.join(PACKAGE_ROOT, 'test-results');
/** Where the pids of running hubs are noted, so that the runner can kill any left behind. */
export const PID_DIR = path.join(ARTIFACTS, 'hub-pids');
