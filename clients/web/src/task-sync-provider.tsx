/**
 * TaskSyncProvider: the integration component. It owns the user's connection and feeds every
 * task event into a task store, raising a notification for each change the store applied: in
 * one tab only when the user's tabs share their connection, and never in the tab whose own
 * action caused the change (docs/web-client.md, "Notifications in one tab").
 *
 * The store and the notification are passed in, not imported, so that `@tasksync/web/react`
 * needs React alone: zustand (the store) and sonner (the toasts) stay behind their own entries.
 */

import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';

import type { TaskUpdateMessage, WebSocketMessage } from './protocol.js';
import type { MessageListener, ResyncRequest, SyncClientOptions } from './sync-client.js';
import type { TokenProvider } from './token.js';
import { useWebSocket, type UseWebSocketResult } from './use-websocket.js';

const TaskSyncContext = createContext<UseWebSocketResult | null>(null);

/** The provider's connection (status, retry, the client), or null outside a TaskSyncProvider. */
export function useTaskSyncConnection(): UseWebSocketResult | null {
  return useContext(TaskSyncContext);
}

/**
 * What the provider needs of a task store; `useTaskStore` (or any `createTaskStore()`) from
 * `@tasksync/web/store` fits. Declared here by shape so that this entry's types need no zustand.
 */
export interface TaskEventStore {
  getState(): {
    /** Applies the message; `'applied'` means it changed the task list. */
    handleWebSocketMessage(message: WebSocketMessage): string;
    /** Whether changes raise notifications. */
    wsEnabled: boolean;
  };
}

export interface NotificationOptions {
  /** Tells the tabs sharing the connection that the user dismissed this notification. */
  onDismiss: () => void;
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
  /** Fed with every task event; typically `useTaskStore` from `@tasksync/web/store`. */
  store?: TaskEventStore;
  /**
   * Called for each event that changed the store, while its `wsEnabled` is true, in the one tab
   * that shows it; typically `showTaskNotification` from `@tasksync/web/toasts`. Call
   * `options.onDismiss` when the user dismisses it, so the other tabs take it away too.
   */
  notify?: (message: TaskUpdateMessage, options: NotificationOptions) => void;
  /**
   * Takes notification `id` (the event id) away here, because it was dismissed in another tab;
   * typically `dismissTaskNotification` from `@tasksync/web/toasts`.
   */
  dismissNotification?: (id: string) => void;
  /** Backoff, heartbeat and transport settings; read when the connection is first created. */
  clientOptions?: Omit<SyncClientOptions, 'getToken'>;
  children?: ReactNode;
}

export function TaskSyncProvider({
  userId,
  url,
  getToken,
  onResyncRequired,
  store,
  notify,
  dismissNotification,
  clientOptions,
  children,
}: TaskSyncProviderProps): ReactNode {
  const connection = useWebSocket(userId, {
    ...clientOptions,
    ...(url !== undefined && { url }),
    ...(getToken && { getToken }),
    ...(onResyncRequired && { onResyncRequired }),
  });
  const { addListener, removeListener, client } = connection;
  // Notifications dismissed here or elsewhere: taking one away raises its dismissal again, which
  // must not travel back to the other tabs.
  const [dismissed] = useState(() => new Set<string>());

  useEffect(() => {
    if (!store) return undefined;
    const onMessage: MessageListener = (message, delivery) => {
      const outcome = store.getState().handleWebSocketMessage(message);
      // Only changes notify: a replayed or duplicate event, or the echo of this tab's own write
      // that the store already holds, would otherwise announce something the user already sees.
      if (message.type !== 'task_update' || outcome !== 'applied' || !store.getState().wsEnabled) return;
      // One tab of those sharing the connection shows it, and never the one that acted.
      if (!delivery.notify || !notify) return;
      const id = message.id;
      notify(message, {
        onDismiss: () => {
          if (id === undefined || dismissed.has(id)) return;
          dismissed.add(id);
          client?.dismissNotification(id);
        },
      });
    };
    addListener(onMessage);
    return () => removeListener(onMessage);
  }, [addListener, removeListener, store, notify, client, dismissed]);

  useEffect(
    () =>
      client?.on('notification_dismissed', (id) => {
        dismissed.add(id);
        dismissNotification?.(id);
      }),
    [client, dismissNotification, dismissed],
  );

  return <TaskSyncContext.Provider value={connection}>{children}</TaskSyncContext.Provider>;
}
