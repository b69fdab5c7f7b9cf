// The package's CommonJS build ("require" condition).
const { WebSocketSyncClient } = require('@tasksync/web');

require('./exercise.cjs').exercise(WebSocketSyncClient);
