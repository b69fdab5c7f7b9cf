/**
 * `@tasksync/web`: the framework-agnostic client. Nothing reachable from here imports React,
 * zustand or sonner; those live behind `@tasksync/web/react`, `/store` and `/toasts`.
 */

export { backoffDelay, nominalDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { DEFAULT_WEBSOCKET_URL, resolveWebSocketUrl, toAbsoluteWebSocketUrl } from './config.js';
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
  type MessageDelivery,
  type MessageListener,
  type ResumePosition,
  type ResyncRequest,
  type SharingMode,
  type StopReason,
  type SyncClientEvents,
  type SyncClientOptions,
  type SyncClientStats,
  type WebSocketConstructor,
  type WebSocketLike,
} from './sync-client.js';
export { type TokenProvider, type TokenRequestReason, type TokenValue } from './token.js';
