/**
 * TaskSyncProvider: the integration component. It owns the user's connection and feeds
 * every task event into the task store, raising a toast for each change the store applied.
 */

import { createContext, useContext, useEffect, type ReactNode } from 'react';

import { showTaskNotification } from './notifications.js';
import type { MessageListener, ResyncRequest, SyncClientOptions } from './sync-client.js';
import { useTaskStore, type TaskStore } from './task-store.js';
import type { TokenProvider } from './token.js';
import { useWebSocket, type UseWebSocketResult } from './use-websocket.js';

const TaskSyncContext = createContext<UseWebSocketResult | null>(null);

/** The provider's connection (status, retry, the client), or null outside a TaskSyncProvider. */
export function useTaskSyncConnection(): UseWebSocketResult | null {
  return useContext(TaskSyncContext);
}

export interface TaskSyncProviderProps {
  /** Who to sync for; null (signed out) keeps the provider idle. */
  userId: string | null | undefined;
  /** Service URL; default `resolveWebSocketUrl()`. Relative URLs such as `/ws` use the page's host. */
  url?: string;
  getToken?: TokenProvider;
  /**
   * The app refetches its task list here and hands it to `setTasks`: called when the server
   * could not replay what this tab missed.
   */
  onResyncRequired?: (request: ResyncRequest) => void;
  /** Default: the app-wide `useTaskStore`. */
  store?: TaskStore;
  /** Backoff, heartbeat and transport settings; read when the connection is first created. */
  clientOptions?: Omit<SyncClientOptions, 'getToken'>;
  children?: ReactNode;
}

export function TaskSyncProvider({
  userId,
  url,
  getToken,
  onResyncRequired,
  store = useTaskStore,
  clientOptions,
  children,
}: TaskSyncProviderProps): ReactNode {
  const connection = useWebSocket(userId, {
    ...clientOptions,
    ...(url !== undefined && { url }),
    ...(getToken && { getToken }),
    ...(onResyncRequired && { onResyncRequired }),
  });
  const { addListener, removeListener } = connection;

  useEffect(() => {
    const onMessage: MessageListener = (message) => {
      const outcome = store.getState().handleWebSocketMessage(message);
      // Only changes toast: a replayed or duplicate event, or the echo of this tab's own write
      // that the store already holds, would otherwise announce something the user already sees.
      if (message.type === 'task_update' && outcome === 'applied' && store.getState().wsEnabled) {
        showTaskNotification(message);
      }
    };
    addListener(onMessage);
    return () => removeListener(onMessage);
  }, [addListener, removeListener, store]);

  return <TaskSyncContext.Provider value={connection}>{children}</TaskSyncContext.Provider>;
}
