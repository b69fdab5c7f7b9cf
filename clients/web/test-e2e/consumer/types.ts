// The types of every entry point. The test checks this file twice: as an ES module (esm/, the
// "import" conditions) and as CommonJS (cjs/, the "require" conditions).
import { WebSocketSyncClient, type ConnectionStatus } from '@tasksync/web';
import { ConnectionIndicator, TaskSyncProvider, useWebSocket } from '@tasksync/web/react';
import { createTaskStore, type TaskEventOutcome } from '@tasksync/web/store';
import { showTaskNotification } from '@tasksync/web/toasts';

const client: WebSocketSyncClient = new WebSocketSyncClient('ws://localhost:8005/ws', 'alice');
const status: ConnectionStatus = client.status;
const outcome: TaskEventOutcome = createTaskStore().getState().handleWebSocketMessage({
  type: 'ping',
  timestamp: '2025-12-31T12:00:00Z',
});
export const used = [status, outcome, ConnectionIndicator, TaskSyncProvider, useWebSocket, showTaskNotification];
