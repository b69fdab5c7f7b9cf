/** The page's view of its connection: the indicator in the top bar and the offline banner. */

import { RefreshCw, WifiOff } from 'lucide-react';
import { useCallback, useState, type ReactNode } from 'react';

import type { ConnectionStatus, StopReason } from '../../src/index.js';
import { ConnectionIndicator, useTaskSyncConnection, type ConnectionLabel } from '../../src/react.js';

export interface ConnectionState {
  status: ConnectionStatus;
  retryCount: number;
  error: StopReason | null;
  /** Live: changes made here reach the other tabs, and theirs reach this one. */
  live: boolean;
  /** The connection was lost (or refused) and is not back: what the banner shows. */
  offline: boolean;
  reconnectNow: () => void;
  /**
   * An id for one user action, sent with its write: the event comes back carrying it, and this
   * tab, which already shows the change, raises no toast for it. Undefined before the client exists.
   */
  newOperationId: () => string | undefined;
}

const IDLE = { status: 'disconnected', retryCount: 0, error: null, retry: () => undefined, client: null } as const;

/**
 * The provider's connection, plus whether this page counts as offline. A page that is still
 * making its first connection is not offline; one that had a connection and lost it is, until
 * the connection is back.
 */
export function useConnectionState(): ConnectionState {
  const { status, retryCount, error, retry, client } = useTaskSyncConnection() ?? IDLE;
  const [hadConnection, setHadConnection] = useState(false);
  // Adjusted while rendering, as React advises for state derived from a changing value.
  if (status === 'connected' && !hadConnection) setHadConnection(true);
  const live = status === 'connected';
  const newOperationId = useCallback(() => client?.createOperationId(), [client]);
  return {
    status,
    retryCount,
    error,
    live,
    offline: !live && (hadConnection || retryCount > 0 || status === 'error'),
    // The client's `retry()` starts an attempt at once, skipping what is left of a backoff wait,
    // and after the client has stopped (`error`) it starts over with a fresh attempt counter.
    reconnectNow: retry,
    newOperationId,
  };
}

const pillLabel: ConnectionLabel = ({ status, retryCount }) => {
  switch (status) {
    case 'connected':
      return 'Live';
    case 'connecting':
      return retryCount > 0 ? (
        <>
          Reconnecting <span data-testid="connection-retry">(retry {retryCount})</span>
        </>
      ) : (
        'Connecting…'
      );
    case 'disconnected':
      return 'Offline';
    case 'error':
      return 'Disconnected';
  }
};

/** The connection as a coloured dot and a word; `data-status` drives the colour. */
export function ConnectionPill(): ReactNode {
  return <ConnectionIndicator className="connection-pill" label={pillLabel} />;
}

const STOPPED: Record<StopReason, string> = {
  retries_exhausted: 'Automatic retries have stopped.',
  unauthenticated: 'TaskSync did not accept this session. Sign in again, then reconnect.',
  forbidden: 'TaskSync refused this user.',
  rejected: 'TaskSync refused this client.',
};

/** Says the page is offline, what that means for the user's changes, and offers to reconnect. */
export function OfflineBanner({ connection }: { connection: ConnectionState }): ReactNode {
  if (!connection.offline) return null;
  const { status, retryCount, error } = connection;
  const trying = status === 'connecting' && retryCount > 0 && (
    <>
      {' '}
      Trying again automatically<span className="retry-count"> (retry {retryCount})</span>.
    </>
  );
  const reason = error ? ` ${STOPPED[error]}` : trying;
  return (
    <div className="banner" data-testid="offline-banner" role="status">
      <WifiOff aria-hidden className="banner-icon" />
      <p>
        <strong>{error === 'forbidden' || error === 'rejected' ? 'Disconnected.' : "You're offline."}</strong>
        {reason} Changes are paused until TaskSync is back; nothing you type here is lost.
      </p>
      <button
        type="button"
        className="button button-secondary"
        data-testid="retry-connection"
        onClick={connection.reconnectNow}
      >
        <RefreshCw aria-hidden />
        Reconnect now
      </button>
    </div>
  );
}
