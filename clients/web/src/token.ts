/** Bearer tokens: how the app supplies them and how the client learns when they expire. */

/**
 * Why the client asks for a token: `connect` before each handshake, `refresh` shortly before the
 * current token expires (or on `refreshToken()`), `rejected` after the server closed with 4001,
 * meaning a cached token must not be returned again.
 */
export type TokenRequestReason = 'connect' | 'refresh' | 'rejected';

/**
 * A token, optionally with its expiry (milliseconds since the epoch, or a Date). Without an
 * explicit expiry the `exp` claim is read when the token is a JWT. `null`/`undefined` means "no
 * token": the handshake then relies on whatever else the server accepts (development `user_id`).
 */
export type TokenValue = string | { token: string; expiresAt?: number | Date } | null | undefined;

export type TokenProvider = (request: { reason: TokenRequestReason }) => TokenValue | Promise<TokenValue>;

export interface ResolvedToken {
  token: string;
  /** Milliseconds since the epoch, when known. */
  expiresAt: number | undefined;
}

export function normalizeToken(value: TokenValue): ResolvedToken | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') {
    return value === '' ? null : { token: value, expiresAt: jwtExpiry(value) };
  }
  if (value.token === '') return null;
  const explicit = value.expiresAt instanceof Date ? value.expiresAt.getTime() : value.expiresAt;
  return { token: value.token, expiresAt: explicit ?? jwtExpiry(value.token) };
}

/** The `exp` claim of a JWT in milliseconds, or undefined for anything that is not a JWT with one. */
export function jwtExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (token.split('.').length !== 3 || payload === undefined) return undefined;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const claims: unknown = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')));
    if (typeof claims === 'object' && claims !== null && 'exp' in claims && typeof claims.exp === 'number') {
      return claims.exp * 1000;
    }
  } catch {
    // Not base64 or not JSON: an opaque token whose expiry only the server knows.
  }
  return undefined;
}

// RFC 7230 `token` characters: anything else makes the browser's WebSocket constructor throw.
const SUBPROTOCOL_SAFE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Whether the token can travel as the `bearer.<token>` subprotocol entry. */
export function fitsInSubprotocol(token: string): boolean {
  return SUBPROTOCOL_SAFE.test(token);
}

/**
 * When to refresh a token that expires at `expiresAt`: `leadMs` before expiry, but never before
 * halfway through its remaining life (so a short-lived token is not refreshed at once) and never
 * sooner than one second from now (so a provider that keeps returning a nearly expired token
 * cannot cause a busy loop).
 * Undefined when the token has no known expiry or has already expired.
 */
export function refreshDelay(expiresAt: number | undefined, now: number, leadMs: number): number | undefined {
  if (expiresAt === undefined) return undefined;
  const remaining = expiresAt - now;
  if (remaining <= 0) return undefined;
  return Math.max(remaining - leadMs, remaining / 2, 1_000);
}
