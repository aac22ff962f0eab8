import assert from 'node:assert/strict';
import FakeTimers from '@sinonjs/fake-timers';

export type Clock = ReturnType<typeof FakeTimers.install>;

/** Fakes `setTimeout`, `clearTimeout` and `Date` (microtasks stay real). */
export function installClock(now = Date.parse('2026-11-23T09:00:00.000Z')): Clock {
  return FakeTimers.install({ now, toFake: ['setTimeout', 'clearTimeout', 'Date'] });
}

/** Asserts that `actual` has at least the properties of `expected`, each deeply equal. */
export function assertIncludes(actual: unknown, expected: Record<string, unknown>): void {
  assert.ok(typeof actual === 'object' && actual !== null, `expected an object, got ${String(actual)}`);
  const subset = Object.fromEntries(Object.keys(expected).map((key) => [key, (actual as Record<string, unknown>)[key]]));
  assert.deepEqual(subset, expected);
}

/** Sets a global for the duration of a test; returns the function that removes it. */
export function stubGlobal(name: string, value: unknown): () => void {
  const had = Object.getOwnPropertyDescriptor(globalThis, name);
  Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
  return () => {
    if (had) Object.defineProperty(globalThis, name, had);
    else Reflect.deleteProperty(globalThis, name);
  };
}
