import { describe, expect, it } from 'vitest';

import { backoffDelay, DEFAULT_BACKOFF, nominalDelay } from '../src/backoff.js';

describe('nominalDelay', () => {
  it('doubles from 1 s and caps at 30 s', () => {
    const delays = Array.from({ length: 12 }, (_, i) => nominalDelay(i + 1));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000, 30000, 30000]);
  });

  it('follows custom bounds', () => {
    const options = { initialDelayMs: 500, maxDelayMs: 5000, jitter: 0 };
    expect([1, 2, 3, 4, 5, 6].map((retry) => nominalDelay(retry, options))).toEqual([500, 1000, 2000, 4000, 5000, 5000]);
  });
});

describe('backoffDelay', () => {
  const randoms = [0, 0.001, 0.25, 0.5, 0.75, 0.999999];

  it('is exact at the midpoint of the random range', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((retry) => backoffDelay(retry, DEFAULT_BACKOFF, () => 0.5))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000,
    ]);
  });

  it('spreads each delay by at most ±20% by default', () => {
    for (let retry = 1; retry <= 8; retry += 1) {
      const nominal = nominalDelay(retry);
      for (const r of randoms) {
        const delay = backoffDelay(retry, DEFAULT_BACKOFF, () => r);
        expect(delay).toBeGreaterThanOrEqual(nominal * 0.8);
        expect(delay).toBeLessThanOrEqual(nominal * 1.2);
      }
    }
    expect(backoffDelay(1, DEFAULT_BACKOFF, () => 0)).toBe(800);
    expect(backoffDelay(6, DEFAULT_BACKOFF, () => 0)).toBe(24000);
    expect(backoffDelay(6, DEFAULT_BACKOFF, () => 0.999999)).toBe(36000);
  });

  it('honours a custom jitter', () => {
    const options = { ...DEFAULT_BACKOFF, jitter: 0.5 };
    for (const r of randoms) {
      const delay = backoffDelay(3, options, () => r);
      expect(delay).toBeGreaterThanOrEqual(2000);
      expect(delay).toBeLessThanOrEqual(6000);
    }
    expect(backoffDelay(3, options, () => 0)).toBe(2000);
  });

  it('is exactly nominal with jitter disabled', () => {
    const options = { ...DEFAULT_BACKOFF, jitter: 0 };
    for (const r of randoms) expect(backoffDelay(4, options, () => r)).toBe(8000);
  });

  it('uses different delays for different random draws (clients do not reconnect in lockstep)', () => {
    const delays = new Set(randoms.map((r) => backoffDelay(5, DEFAULT_BACKOFF, () => r)));
    expect(delays.size).toBe(randoms.length);
  });
});
