/** An optional connection status display, with hooks for styling and browser tests. */

import type { ReactNode } from 'react';

import type { ConnectionStatus } from './sync-client.js';
import { useTaskSyncConnection } from './task-sync-provider.js';
import { useWebSocket } from './use-websocket.js';

/** What the indicator's text is made from; `retryCount` as in the client's snapshot. */
export type ConnectionLabel = (state: { status: ConnectionStatus; retryCount: number }) => ReactNode;

export interface ConnectionIndicatorProps {
  /**
   * Inside a TaskSyncProvider the provider's connection is shown and these are ignored; outside
   * one the indicator holds its own (shared) connection for this user.
   */
  userId?: string | null;
  url?: string;
  className?: string;
  /** The text; default `Status: <status>`, plus ` (retry N)` while reconnecting. */
  label?: ConnectionLabel;
}

/** The original client specification's wording. */
const specificationLabel: ConnectionLabel = ({ status, retryCount }) => (
  <>
    Status: {status}
    {status === 'connecting' && retryCount > 0 && <span data-testid="connection-retry"> (retry {retryCount})</span>}
  </>
);

/**
 * Renders the connection's state as text (`label`). `data-status` and `data-retry-count` carry
 * the same facts for stylesheets and tests, whatever the wording.
 */
export function ConnectionIndicator({
  userId = null,
  url,
  className,
  label = specificationLabel,
}: ConnectionIndicatorProps): ReactNode {
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
      {label({ status, retryCount })}
    </div>
  );
}
