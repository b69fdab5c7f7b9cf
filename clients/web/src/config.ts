/**
 * Where the client connects, following the `NEXT_PUBLIC_WEBSOCKET_URL` convention of the original
 * client specification.
 */

export const DEFAULT_WEBSOCKET_URL = 'ws://localhost:8005/ws';

// Declared locally rather than through @types/node: the package must compile for browsers, where
// `process` usually does not exist at run time.
declare const process: { env: Record<string, string | undefined> };

/**
 * Reads the service URL from the build-time environment: `NEXT_PUBLIC_WEBSOCKET_URL` (Next.js,
 * the original client specification's setting), then `VITE_WEBSOCKET_URL` (Vite), then
 * `ws://localhost:8005/ws`.
 *
 * Both variables are spelled out literally because Next.js and Vite inline them by text
 * substitution at build time; a computed lookup would never see them in a browser bundle.
 */
export function resolveWebSocketUrl(fallback: string = DEFAULT_WEBSOCKET_URL): string {
  let nextUrl: string | undefined;
  try {
    nextUrl = process.env.NEXT_PUBLIC_WEBSOCKET_URL;
  } catch {
    // No `process` (a browser bundle that was not built by Next.js).
  }
  // `env` exists only where a Vite-style bundler provides it, although vite/client types it as
  // always there; hence the cast and the optional chaining.
  const viteUrl = (import.meta.env as { VITE_WEBSOCKET_URL?: string } | undefined)?.VITE_WEBSOCKET_URL;
  // eslint-disable-next-line @typescript-eslint/prefer-nullish-coalescing -- an empty variable counts as unset
  return nextUrl || viteUrl || fallback;
}

/** The page's location: lib.dom declares it always present, but Node and server rendering have none. */
function pageLocation(): Location | undefined {
  return (globalThis as { location?: Location }).location;
}

/**
 * Makes `url` absolute. A relative URL such as `/ws` is resolved against the page's location with
 * the matching WebSocket scheme (`https:` pages get `wss:`), so an app served by the TaskSync
 * service itself needs no configuration.
 */
export function toAbsoluteWebSocketUrl(url: string, base: string | undefined = pageLocation()?.href): URL {
  const resolved = base === undefined ? new URL(url) : new URL(url, base);
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
  else if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
  if (resolved.protocol !== 'ws:' && resolved.protocol !== 'wss:') {
    throw new TypeError(`TaskSync: unsupported WebSocket URL ${JSON.stringify(url)}`);
  }
  return resolved;
}
