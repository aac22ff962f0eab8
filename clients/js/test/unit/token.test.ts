import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenSource, tokenExpiry } from '../../src/token.js';

const jwt = (claims: object) =>
  `${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

describe('tokenExpiry', () => {
  it('reads exp from a JWT and tolerates anything else', () => {
    assert.equal(tokenExpiry(jwt({ sub: 'ü', exp: 1_900_000_000 })), 1_900_000_000_000);
    assert.equal(tokenExpiry(jwt({ sub: 'a' })), null);
    assert.equal(tokenExpiry('opaque'), null);
    assert.equal(tokenExpiry('a.%%%.c'), null);
  });
});

describe('TokenSource', () => {
  it('plans the refresh a margin before exp, at most a third of the life early', async () => {
    let now = 1_000_000;
    let exp = 0;
    const source = new TokenSource(() => jwt({ exp }), 30_000, undefined, () => now);
    exp = now / 1000 + 3600;
    await source.refresh();
    assert.equal(source.refreshAt, now + 3_600_000 - 30_000);
    exp = now / 1000 + 3;
    await source.refresh();
    assert.equal(source.refreshAt, now + 2000);
    assert.equal(source.needed, false);
    now += 2000;
    assert.deepEqual([source.needed, source.reason], [true, 'expiring']);
    now += 1000;
    assert.equal(source.needed, true);
    assert.equal(source.reason, 'expired');
  });

  it('shares one provider call between concurrent requests', async () => {
    let calls = 0;
    const source = new TokenSource(async () => `t${++calls}`, 30_000);
    const [a, b] = await Promise.all([source.refresh(), source.refresh()]);
    assert.deepEqual([a, b, calls], ['t1', 't1', 1]);
    source.invalidate('rejected');
    assert.equal(source.reason, 'rejected');
    assert.equal(await source.refresh(), 't2');
  });

  it('uses a static token as it is', () => {
    const source = new TokenSource('static', 30_000);
    assert.equal(source.current, 'static');
    assert.equal(source.needed, false);
    source.invalidate('expired');
    assert.equal(source.needed, false);
    assert.equal(source.refreshAt, null);
  });
});
