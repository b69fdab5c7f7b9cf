import { Bell, BellOff, CircleAlert, X } from 'lucide-react';
import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';
import { Toaster } from 'sonner';

import { TaskSyncProvider } from '../../src/react.js';
import { useTaskStore } from '../../src/store.js';
import { dismissTaskNotification, showTaskNotification } from '../../src/toasts.js';
import { describeFailure, listTasks } from './api.js';
import { ConnectionPill, OfflineBanner, useConnectionState } from './connection.js';
import { Logo } from './Logo.js';
import { TaskList, type RunWrite } from './TaskList.js';
import { SAMPLE_USERS, UserSwitcher } from './UserSwitcher.js';

function userFromQuery(): string {
  return new URLSearchParams(window.location.search).get('user_id')?.trim() ?? '';
}

type Load = { state: 'loading' } | { state: 'loaded' } | { state: 'failed'; message: string };

/**
 * Loads the user's tasks into the store: at once when the user changes (starting from an empty
 * list, so one user's tasks never show under another's name) and again on `reload()`, which the
 * provider calls when the server asks for a resync.
 */
function useTaskLoader(userId: string): { load: Load; reload: () => void; retry: () => void } {
  const [load, setLoad] = useState<Load>({ state: 'loading' });
  // A new user starts from "loading", not from the previous user's outcome. Reset while
  // rendering rather than in the effect, as React advises for state tied to a prop.
  const [loadUser, setLoadUser] = useState(userId);
  if (loadUser !== userId) {
    setLoadUser(userId);
    setLoad({ state: 'loading' });
  }
  const currentUser = useRef(userId);

  const fetchTasks = useCallback((user: string) => {
    listTasks(user).then(
      (tasks) => {
        // A slow response for a user the page has since left must not overwrite the new list.
        if (currentUser.current !== user) return;
        useTaskStore.getState().setTasks(tasks);
        setLoad({ state: 'loaded' });
      },
      (failure: unknown) => {
        if (currentUser.current !== user) return;
        console.warn('TaskSync demo: loading tasks failed', failure);
        setLoad({ state: 'failed', message: describeFailure(failure, 'load your tasks', { write: false }) });
      },
    );
  }, []);

  useEffect(() => {
    currentUser.current = userId;
    useTaskStore.getState().setTasks([]);
    if (userId) fetchTasks(userId);
  }, [userId, fetchTasks]);

  const reload = useCallback(() => fetchTasks(currentUser.current), [fetchTasks]);
  /** After a failed load: shows "loading" again while it tries. */
  const retry = useCallback(() => {
    setLoad({ state: 'loading' });
    fetchTasks(currentUser.current);
  }, [fetchTasks]);
  return { load, reload, retry };
}

function NotificationsToggle(): ReactNode {
  const wsEnabled = useTaskStore((state) => state.wsEnabled);
  const setWebSocketEnabled = useTaskStore((state) => state.setWebSocketEnabled);
  return (
    <label className="switch" title="Show a notification for changes made elsewhere">
      <input
        type="checkbox"
        role="switch"
        data-testid="toasts-enabled"
        checked={wsEnabled}
        onChange={(event) => setWebSocketEnabled(event.target.checked)}
      />
      {wsEnabled ? <Bell aria-hidden /> : <BellOff aria-hidden />}
      <span>Notifications</span>
    </label>
  );
}

/** A failed write or load, in words, until the user dismisses it or the next write starts. */
function FailureNotice({ message, onDismiss }: { message: string; onDismiss?: () => void }): ReactNode {
  return (
    <div className="notice" role="alert" data-testid="api-error">
      <CircleAlert aria-hidden className="notice-icon" />
      <p>{message}</p>
      {onDismiss && (
        <button type="button" className="icon-button" aria-label="Dismiss" onClick={onDismiss}>
          <X aria-hidden />
        </button>
      )}
    </div>
  );
}

interface WorkspaceProps {
  userId: string;
  load: Load;
  retryLoad: () => void;
  onPick: (user: string) => void;
}

/** A signed-in user's page: inside the provider, so everything here sees the connection. */
function Workspace({ userId, load, retryLoad, onPick }: WorkspaceProps): ReactNode {
  const connection = useConnectionState();
  // A list that could not be loaded while the service was away is loaded once it is back.
  const reachable = connection.live;
  const loadFailed = load.state === 'failed';
  useEffect(() => {
    if (reachable && loadFailed) retryLoad();
  }, [reachable, loadFailed, retryLoad]);
  const tasks = useTaskStore((state) => state.tasks);
  const [failure, setFailure] = useState<string | null>(null);
  const done = tasks.filter((task) => task.completed === true).length;

  const { newOperationId } = connection;
  const run = useCallback<RunWrite>(
    async (action, write) => {
      setFailure(null);
      try {
        await write(newOperationId());
        return true;
      } catch (error) {
        console.warn(`TaskSync demo: could not ${action}`, error);
        setFailure(describeFailure(error, action, { write: true }));
        return false;
      }
    },
    [newOperationId],
  );

  return (
    <>
      <Header userId={userId} onPick={onPick}>
        <ConnectionPill />
      </Header>
      <OfflineBanner connection={connection} />
      <main className="content">
        <section className="card" aria-labelledby="tasks-heading">
          <div className="card-header">
            <div>
              <h1 id="tasks-heading">Tasks</h1>
              <p className="muted">
                <span data-testid="current-user">{userId}</span>
                {load.state === 'loaded' && ` · ${tasks.length - done} open, ${done} done`}
              </p>
            </div>
            <NotificationsToggle />
          </div>
          {failure && <FailureNotice message={failure} onDismiss={() => setFailure(null)} />}
          {load.state === 'failed' ? (
            <div className="empty">
              <FailureNotice message={load.message} />
              <button type="button" className="button button-secondary" data-testid="reload-tasks" onClick={retryLoad}>
                Try again
              </button>
            </div>
          ) : load.state === 'loading' ? (
            <p className="loading" data-testid="loading-tasks" aria-busy>
              Loading tasks…
            </p>
          ) : (
            <TaskList userId={userId} live={connection.live} run={run} />
          )}
        </section>
        <p className="footnote">
          Open this page as {userId} in another tab or device: every change shows there within a second.
        </p>
      </main>
    </>
  );
}

function Header({ userId, onPick, children }: { userId: string; onPick: (user: string) => void; children?: ReactNode }): ReactNode {
  return (
    <header className="topbar">
      <div className="brand">
        <Logo />
        <span className="brand-name">TaskSync</span>
        <span className="brand-tag">demo</span>
      </div>
      <div className="topbar-end">
        {children}
        <UserSwitcher userId={userId} onPick={onPick} />
      </div>
    </header>
  );
}

function Welcome({ onPick }: { onPick: (user: string) => void }): ReactNode {
  return (
    <>
      <Header userId="" onPick={onPick} />
      <main className="content">
        <section className="card empty" data-testid="no-user">
          <h1>Real-time tasks, in every tab</h1>
          <p>Pick a user to see their tasks. Open the same user in two tabs and watch changes sync live.</p>
          <div className="user-choices">
            {SAMPLE_USERS.map((user) => (
              <button key={user} type="button" className="button button-secondary" onClick={() => onPick(user)}>
                Open as {user}
              </button>
            ))}
          </div>
        </section>
      </main>
    </>
  );
}

export function App(): ReactNode {
  const [userId, setUserId] = useState(userFromQuery);
  const { load, reload, retry } = useTaskLoader(userId);

  useEffect(() => {
    document.title = userId ? `${userId} · TaskSync demo` : 'TaskSync demo';
  }, [userId]);

  const pick = (user: string) => {
    const url = new URL(window.location.href);
    if (user) url.searchParams.set('user_id', user);
    else url.searchParams.delete('user_id');
    window.history.replaceState(null, '', url);
    setUserId(user);
  };

  return (
    <div className="app">
      {userId ? (
        <TaskSyncProvider
          userId={userId}
          url="/ws"
          store={useTaskStore}
          notify={showTaskNotification}
          dismissNotification={dismissTaskNotification}
          onResyncRequired={reload}
        >
          {/* Keyed by user: whether "the connection was lost" starts afresh for each user. */}
          <Workspace key={userId} userId={userId} load={load} retryLoad={retry} onPick={pick} />
        </TaskSyncProvider>
      ) : (
        <Welcome onPick={pick} />
      )}
      <div data-testid="toasts">
        <Toaster position="bottom-right" theme="system" richColors closeButton />
      </div>
    </div>
  );
}
