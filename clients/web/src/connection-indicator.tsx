/** An optional connection status display, with hooks for styling and browser tests. */

import type { ReactNode } from 'react';

import { useTaskSyncConnection } from './task-sync-provider.js';
import { useWebSocket } from './use-websocket.js';

export interface ConnectionIndicatorProps {
  /**
   * Inside a TaskSyncProvider the provider's connection is shown and these are ignored; outside
   * one the indicator holds its own (shared) connection for this user.
   */
  userId?: string | null;
  url?: string;
  className?: string;
}

/**
 * Renders `Status: <status>`, plus ` (retry N)` while a reconnect is scheduled or running.
 * `data-status` and `data-retry-count` carry the same facts for stylesheets and tests.
 */
export function ConnectionIndicator({ userId = null, url, className }: ConnectionIndicatorProps): ReactNode {
  const provided = useTaskSyncConnection();
  const standalone = useWebSocket(provided ? null : userId, url !== undefined ? { url } : {});
  const { status, retryCount } = provided ?? standalone;
  return (
    <div
      className={className}
      data-testid="connection-status"
      data-status={status}
      data-retry-count={retryCount}
      role="status"
      aria-live="polite"
    >
      Status: {status}
      {status === 'connecting' && retryCount > 0 && (
        <span data-testid="connection-retry"> (retry {retryCount})</span>
      )}
    </div>
  );
}
