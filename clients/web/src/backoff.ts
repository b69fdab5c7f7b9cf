/** Reconnect timing: exponential backoff plus jitter. */

export interface BackoffOptions {
  /** Delay before the first retry. Default 1000 ms. */
  initialDelayMs: number;
  /** Cap on the nominal delay. Default 30 000 ms. */
  maxDelayMs: number;
  /**
   * Spread applied to every delay, as a fraction: 0.2 turns a nominal 4 s into a uniform pick in
   * [3.2 s, 4.8 s]. Without it every client dropped by the same deploy would come back in the
   * same millisecond. 0 disables it.
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialDelayMs: 1_000,
  maxDelayMs: 30_000,
  jitter: 0.2,
};

/**
 * Nominal delay before retry number `retry` (1-based), without jitter: 1 s, 2 s, 4 s, 8 s, 16 s,
 * then the 30 s cap with the defaults.
 */
export function nominalDelay(retry: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const exponent = Math.max(0, retry - 1);
  return Math.min(options.initialDelayMs * 2 ** exponent, options.maxDelayMs);
}

/**
 * Delay before retry number `retry`, jittered. `random` returns a number in [0, 1), like
 * `Math.random`; 0.5 yields the nominal delay exactly. The cap applies to the nominal delay, so
 * with the defaults a capped retry waits between 24 s and 36 s.
 */
export function backoffDelay(
  retry: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const spread = 1 + options.jitter * (2 * random() - 1);
  return Math.round(nominalDelay(retry, options) * spread);
}
