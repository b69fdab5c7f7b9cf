/**
 * One shared WebSocketSyncClient per (url, user) for all React consumers.
 *
 * React StrictMode mounts every effect twice in development (mount, unmount, mount). Tearing the
 * socket down on that first unmount and opening a second one would double the connections the
 * server sees and drop frames in between. Clients are therefore reference counted, and the last
 * release only tears down after the current task's synchronous work (a microtask later): the
 * StrictMode remount re-acquires the same, still-open client before that happens.
 */

import { toAbsoluteWebSocketUrl } from './config.js';
import type { WebSocketSyncClient } from './sync-client.js';

interface Entry {
  client: WebSocketSyncClient;
  refs: number;
}

export interface ClientLease {
  readonly client: WebSocketSyncClient;
  /** Gives the client back; idempotent. */
  release(): void;
}

const entries = new Map<string, Entry>();

/**
 * Returns the shared client for (`url`, `userId`), created with `create` if there is none, and
 * connects it when this is its first holder.
 */
export function acquireClient(url: string, userId: string, create: () => WebSocketSyncClient): ClientLease {
  const key = JSON.stringify([toAbsoluteWebSocketUrl(url).href, userId]);
  let entry = entries.get(key);
  if (!entry) {
    entry = { client: create(), refs: 0 };
    entries.set(key, entry);
  }
  const held = entry;
  held.refs += 1;
  // Only the first holder connects: a later consumer mounting must not undo a deliberate stop
  // (4003, exhausted retries) that the app is showing to the user.
  if (held.refs === 1) held.client.connect();
  let released = false;
  return {
    client: held.client,
    release() {
      if (released) return;
      released = true;
      held.refs -= 1;
      if (held.refs > 0) return;
      queueMicrotask(() => {
        if (held.refs > 0 || entries.get(key) !== held) return;
        entries.delete(key);
        held.client.disconnect();
      });
    },
  };
}
