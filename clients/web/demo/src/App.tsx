import { useCallback, useEffect, useRef, useState, type ReactNode, type SubmitEvent } from 'react';
import { Toaster } from 'sonner';

import { ConnectionIndicator, TaskSyncProvider, useTaskStore, useTaskSyncConnection } from '../../src/index.js';
import { listTasks } from './api.js';
import { TaskList } from './TaskList.js';

function userFromQuery(): string {
  return new URLSearchParams(window.location.search).get('user_id')?.trim() ?? '';
}

/**
 * Loads the user's tasks into the store: at once when the user changes (starting from an empty
 * list, so one user's tasks never show under another's name) and again on `reload()`, which the
 * provider calls when the server asks for a resync.
 */
function useTaskLoader(userId: string): { reload: () => void; error: string | null; setError: (error: string | null) => void } {
  const [error, setError] = useState<string | null>(null);
  // A new user starts without the previous one's error. Reset while rendering rather than in the
  // effect, as React advises for state tied to a prop, so no render shows the stale error.
  const [errorUser, setErrorUser] = useState(userId);
  if (errorUser !== userId) {
    setErrorUser(userId);
    setError(null);
  }
  const currentUser = useRef(userId);

  const load = useCallback(async (user: string) => {
    try {
      const tasks = await listTasks(user);
      // A slow response for a user the page has since left must not overwrite the new list.
      if (currentUser.current === user) useTaskStore.getState().setTasks(tasks);
    } catch (failure) {
      if (currentUser.current === user) setError(String(failure));
    }
  }, []);

  useEffect(() => {
    currentUser.current = userId;
    useTaskStore.getState().setTasks([]);
    if (userId) void load(userId);
  }, [userId, load]);

  const reload = useCallback(() => void load(currentUser.current), [load]);
  return { reload, error, setError };
}

function UserPicker({ userId, onPick }: { userId: string; onPick: (user: string) => void }): ReactNode {
  const [draft, setDraft] = useState(userId);
  const submit = (event: SubmitEvent<HTMLFormElement>) => {
    event.preventDefault();
    onPick(draft.trim());
  };
  return (
    <form className="user-picker" data-testid="user-form" onSubmit={submit}>
      <label>
        User{' '}
        <input
          data-testid="user-input"
          value={draft}
          placeholder="alice"
          onChange={(event) => setDraft(event.target.value)}
        />
      </label>
      <button type="submit" data-testid="user-submit">
        Open
      </button>
    </form>
  );
}

function ConnectionBar(): ReactNode {
  const connection = useTaskSyncConnection();
  const wsEnabled = useTaskStore((state) => state.wsEnabled);
  const setWebSocketEnabled = useTaskStore((state) => state.setWebSocketEnabled);
  return (
    <div className="connection-bar">
      <ConnectionIndicator className="connection-indicator" />
      {connection?.status === 'error' && (
        <button type="button" data-testid="retry-connection" onClick={connection.retry}>
          Retry
        </button>
      )}
      <label>
        <input
          type="checkbox"
          data-testid="toasts-enabled"
          checked={wsEnabled}
          onChange={(event) => setWebSocketEnabled(event.target.checked)}
        />{' '}
        Notifications
      </label>
    </div>
  );
}

export function App(): ReactNode {
  const [userId, setUserId] = useState(userFromQuery);
  const { reload, error, setError } = useTaskLoader(userId);

  const pick = (user: string) => {
    const url = new URL(window.location.href);
    if (user) url.searchParams.set('user_id', user);
    else url.searchParams.delete('user_id');
    window.history.replaceState(null, '', url);
    setUserId(user);
  };

  return (
    <main>
      <header>
        <h1>TaskSync demo</h1>
        <UserPicker userId={userId} onPick={pick} />
      </header>
      {userId ? (
        <TaskSyncProvider userId={userId} url="/ws" onResyncRequired={reload}>
          <p>
            Signed in as <strong data-testid="current-user">{userId}</strong>
          </p>
          <ConnectionBar />
          {error && (
            <p role="alert" className="error" data-testid="api-error">
              {error}
            </p>
          )}
          <TaskList userId={userId} onError={setError} />
        </TaskSyncProvider>
      ) : (
        <p data-testid="no-user">Pick a user to see their tasks.</p>
      )}
      <div data-testid="toasts">
        <Toaster position="bottom-right" closeButton />
      </div>
    </main>
  );
}
