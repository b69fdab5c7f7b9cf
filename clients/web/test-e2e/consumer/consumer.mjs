// The package's ES module build ("import" condition).
import { WebSocketSyncClient } from '@tasksync/web';

import runner from './exercise.cjs';

runner.exercise(WebSocketSyncClient);
