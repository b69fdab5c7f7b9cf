export { backoffDelay, nominalDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { DEFAULT_WEBSOCKET_URL, resolveWebSocketUrl, toAbsoluteWebSocketUrl } from './config.js';
export { ConnectionIndicator, type ConnectionIndicatorProps } from './connection-indicator.js';
export {
  DEFAULT_TASK_NOTIFICATIONS,
  TASK_TOAST_TEST_ID,
  describeTaskNotification,
  showTaskNotification,
  type TaskNotificationContent,
  type ToastKind,
} from './notifications.js';
export { compareMarks, markOf, type OrderMark } from './ordering.js';
export {
  TASK_EVENTS,
  parseServerFrame,
  type ClientFrame,
  type ConnectedMessage,
  type ParseResult,
  type PingMessage,
  type ResyncRequiredMessage,
  type ServerErrorMessage,
  type ServerFrame,
  type ServerNotification,
  type Task,
  type TaskEventName,
  type TaskId,
  type TaskUpdateMessage,
  type WebSocketMessage,
} from './protocol.js';
export {
  HEARTBEAT_TIMEOUT_CLOSE_CODE,
  SUBPROTOCOL,
  WebSocketSyncClient,
  closeAction,
  type CloseAction,
  type ConnectionSnapshot,
  type ConnectionStatus,
  type MessageListener,
  type ResumePosition,
  type ResyncRequest,
  type StopReason,
  type SyncClientEvents,
  type SyncClientOptions,
  type SyncClientStats,
  type WebSocketConstructor,
  type WebSocketLike,
} from './sync-client.js';
export {
  TaskSyncProvider,
  useTaskSyncConnection,
  type TaskSyncProviderProps,
} from './task-sync-provider.js';
export { createTaskStore, useTaskStore, type TaskEventOutcome, type TaskStore, type TaskStoreState } from './task-store.js';
export { type TokenProvider, type TokenRequestReason, type TokenValue } from './token.js';
export { useWebSocket, type UseWebSocketOptions, type UseWebSocketResult } from './use-websocket.js';
