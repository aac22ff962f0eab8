import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_BACKOFF, backoffDelay, retryAfterDelay } from '../../src/backoff.js';

describe('backoffDelay', () => {
  const options = { initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2, jitter: 0.5 };

  it('grows exponentially up to the maximum, with jitter in [ceiling*(1-jitter), ceiling]', () => {
    const ceilings = [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
    ceilings.forEach((ceiling, attempt) => {
      assert.equal(backoffDelay(attempt, options, () => 0), ceiling);
      assert.equal(backoffDelay(attempt, options, () => 1), ceiling / 2);
      for (let i = 0; i < 200; i++) {
        const delay = backoffDelay(attempt, options);
        assert.ok(delay >= ceiling / 2 && delay <= ceiling, `attempt ${attempt}: ${delay} outside [${ceiling / 2}, ${ceiling}]`);
      }
    });
  });

  it('spreads delays over the jitter range', () => {
    const delays = Array.from({ length: 500 }, () => backoffDelay(3, options));
    assert.ok(Math.min(...delays) < 4000 + 400);
    assert.ok(Math.max(...delays) > 8000 - 400);
  });

  it('honours jitter 0 and 1 and survives absurd attempts', () => {
    assert.equal(backoffDelay(2, { ...options, jitter: 0 }), 4000);
    assert.equal(backoffDelay(2, { ...options, jitter: 1 }, () => 0.5), 2000);
    assert.equal(backoffDelay(5000, options, () => 0), 30_000);
    assert.equal(backoffDelay(-3, options, () => 0), 1000);
  });

  it('has sane defaults', () => {
    assert.deepEqual({ ...DEFAULT_BACKOFF }, options);
  });
});

describe('retryAfterDelay', () => {
  it('waits at least Retry-After, plus up to a fifth, or the backoff if longer', () => {
    assert.equal(retryAfterDelay(5000, 1000, () => 0), 5000);
    assert.equal(retryAfterDelay(5000, 1000, () => 1), 6000);
    assert.equal(retryAfterDelay(1000, 8000, () => 0.5), 8000);
  });
});
