/** useWebSocket: the React hook for a connection, on top of a shared WebSocketSyncClient. */

import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';

import { acquireClient } from './client-registry.js';
import { resolveWebSocketUrl } from './config.js';
import { callSafely } from './listeners.js';
import {
  WebSocketSyncClient,
  type ConnectionSnapshot,
  type ConnectionStatus,
  type MessageListener,
  type ResyncRequest,
  type StopReason,
  type SyncClientOptions,
} from './sync-client.js';
import type { TokenProvider } from './token.js';

export interface UseWebSocketOptions extends Omit<SyncClientOptions, 'getToken'> {
  /** Service URL; default `resolveWebSocketUrl()` (NEXT_PUBLIC_WEBSOCKET_URL and friends). */
  url?: string;
  /** Always called through the latest render's function, so an inline arrow is fine. */
  getToken?: TokenProvider;
  /** Called when the app must refetch its task list; the latest render's function is used. */
  onResyncRequired?: (request: ResyncRequest) => void;
}

export interface UseWebSocketResult {
  /** The shared client, once the effect has acquired it; null without a user. */
  client: WebSocketSyncClient | null;
  status: ConnectionStatus;
  isConnected: boolean;
  retryCount: number;
  error: StopReason | null;
  /**
   * Stable; listeners receive task_update and ping messages, and whether this tab shows the
   * message's notification.
   */
  addListener: (listener: MessageListener) => void;
  removeListener: (listener: MessageListener) => void;
  /**
   * "Reconnect now": connects at once with a fresh attempt counter, during a backoff wait or after
   * the client gave up (`error`).
   */
  retry: () => void;
}

const IDLE: ConnectionSnapshot = { status: 'disconnected', retryCount: 0, error: null, lastCloseCode: null };
// What a component with a user shows before its effect has acquired the client, and on the
// server: the connection is about to start, so "connecting" is the truthful state.
const STARTING: ConnectionSnapshot = { status: 'connecting', retryCount: 0, error: null, lastCloseCode: null };

const unsubscribeNothing = (): void => {
  // Without a client there was nothing to subscribe to.
};

/**
 * Connects on mount and disconnects on unmount. Every component that calls this for the same
 * (url, user) shares one client and one socket, StrictMode's double mount included.
 *
 * Client options other than `getToken` and `onResyncRequired` are read when the shared client is
 * created, i.e. by its first holder; later holders share that client as it is.
 */
export function useWebSocket(userId: string | null | undefined, options: UseWebSocketOptions = {}): UseWebSocketResult {
  const { url: urlOption, getToken, onResyncRequired, ...clientOptions } = options;
  // Resolved to an absolute URL only inside the effect: a relative `/ws` has no base during
  // server-side rendering.
  const url = urlOption ?? resolveWebSocketUrl();

  const latest = useRef({ getToken, onResyncRequired, clientOptions });
  useEffect(() => {
    latest.current = { getToken, onResyncRequired, clientOptions };
  });

  const [listeners] = useState(() => new Set<MessageListener>());
  const [held, setHeld] = useState<{ client: WebSocketSyncClient; url: string } | null>(null);

  useEffect(() => {
    if (!userId) return undefined;
    const lease = acquireClient(url, userId, () => {
      const { getToken: initialGetToken, clientOptions: initialOptions } = latest.current;
      return new WebSocketSyncClient(url, userId, {
        ...initialOptions,
        ...(initialGetToken && { getToken: (request) => (latest.current.getToken ?? initialGetToken)(request) }),
      });
    });
    // Registered here, in the same effect that connects, so no frame can arrive before the
    // component's listeners are in place.
    const offMessage = lease.client.addMessageListener((message, delivery) => {
      for (const listener of [...listeners]) callSafely((payload) => listener(payload, delivery), message);
    });
    const offResync = lease.client.onResyncRequired((request) => latest.current.onResyncRequired?.(request));
    setHeld({ client: lease.client, url });
    return () => {
      offMessage();
      offResync();
      lease.release();
    };
  }, [url, userId, listeners]);

  // The state may still hold the previous user's client for one render after `userId` changes.
  const current = held !== null && held.client.userId === userId && held.url === url ? held.client : null;
  const fallback = userId ? STARTING : IDLE;
  const subscribe = useCallback(
    (onChange: () => void) => (current ? current.subscribe(onChange) : unsubscribeNothing),
    [current],
  );
  const getSnapshot = useCallback(() => (current ? current.getSnapshot() : fallback), [current, fallback]);
  const snapshot = useSyncExternalStore(subscribe, getSnapshot, () => fallback);

  const addListener = useCallback((listener: MessageListener) => void listeners.add(listener), [listeners]);
  const removeListener = useCallback((listener: MessageListener) => void listeners.delete(listener), [listeners]);
  const retry = useCallback(() => current?.retry(), [current]);

  return useMemo(
    () => ({
      client: current,
      status: snapshot.status,
      isConnected: snapshot.status === 'connected',
      retryCount: snapshot.retryCount,
      error: snapshot.error,
      addListener,
      removeListener,
      retry,
    }),
    [current, snapshot, addListener, removeListener, retry],
  );
}
