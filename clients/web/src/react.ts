/**
 * `@tasksync/web/react`: the hook, the provider and the connection indicator. Needs React (an
 * optional peer of the package, required by this entry only).
 */

export { ConnectionIndicator, type ConnectionIndicatorProps, type ConnectionLabel } from './connection-indicator.js';
export {
  TaskSyncProvider,
  useTaskSyncConnection,
  type NotificationOptions,
  type TaskEventStore,
  type TaskSyncProviderProps,
} from './task-sync-provider.js';
export { useWebSocket, type UseWebSocketOptions, type UseWebSocketResult } from './use-websocket.js';
