import { act, render, screen } from '@testing-library/react';
import { StrictMode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const toast = vi.hoisted(() =>
  Object.assign(vi.fn(), { success: vi.fn(), info: vi.fn(), warning: vi.fn(), error: vi.fn() }),
);
vi.mock('sonner', () => ({ toast }));

import { ConnectionIndicator } from '../src/connection-indicator.js';
import { showTaskNotification } from '../src/notifications.js';
import type { TaskUpdateMessage } from '../src/protocol.js';
import type { SyncClientOptions, WebSocketSyncClient } from '../src/sync-client.js';
import { TaskSyncProvider, useTaskSyncConnection, type NotificationOptions } from '../src/task-sync-provider.js';
import { createTaskStore, type TaskStore } from '../src/task-store.js';
import { TASK_EVENT_ICONS } from '../src/toast-icons.js';
import { fakeWebSocketClass, lastSocket, type FakeWebSocket } from './fake-websocket.js';

const URL_ = 'ws://provider.test/ws';
let userCounter = 0;

function freshUser(): string {
  userCounter += 1;
  return `provider-user-${userCounter}`;
}

function update(seq: number, event: string, task: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { type: 'task_update', event, task, timestamp: '2025-12-31T12:00:00Z', id: `evt-${seq}`, seq, epoch: 'e1', ...extra };
}

let sockets: FakeWebSocket[];
let clientOptions: SyncClientOptions;
let store: TaskStore;

beforeEach(() => {
  const fake = fakeWebSocketClass();
  sockets = fake.sockets;
  clientOptions = { WebSocket: fake.WebSocket, random: () => 0.5 };
  store = createTaskStore();
  for (const fn of [toast, toast.success, toast.info, toast.warning, toast.error]) fn.mockClear();
});

afterEach(() => {
  vi.useRealTimers();
});

function renderProvider(props: { onResyncRequired?: () => void; strict?: boolean } = {}) {
  const tree = (
    <TaskSyncProvider
      userId={freshUser()}
      url={URL_}
      store={store}
      notify={showTaskNotification}
      clientOptions={clientOptions}
      {...(props.onResyncRequired && { onResyncRequired: props.onResyncRequired })}
    >
      <ConnectionIndicator />
    </TaskSyncProvider>
  );
  return render(props.strict ? <StrictMode>{tree}</StrictMode> : tree);
}

describe('TaskSyncProvider', () => {
  it('feeds task events into the store and toasts each change once', () => {
    renderProvider();
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).receive(update(1, 'task.created', { id: 1, title: 'Buy milk', version: 1 })));
    expect(store.getState().tasks).toEqual([{ id: 1, title: 'Buy milk', version: 1 }]);
    expect(toast.success).toHaveBeenCalledExactlyOnceWith('Task created', expect.objectContaining({ description: 'Buy milk', id: 'evt-1' }));

    // The same event again (a replay) and an older version change nothing and raise no toast.
    act(() => lastSocket(sockets).receive(update(1, 'task.created', { id: 1, title: 'Buy milk', version: 1 })));
    act(() => lastSocket(sockets).receive(update(0, 'task.updated', { id: 1, title: 'Old', version: 0 }, { id: 'evt-old' })));
    expect(toast.success).toHaveBeenCalledTimes(1);
    expect(toast.info).not.toHaveBeenCalled();

    act(() => lastSocket(sockets).receive(update(2, 'task.deleted', { id: 1, version: 2 })));
    expect(store.getState().tasks).toEqual([]);
    expect(toast.info).toHaveBeenCalledExactlyOnceWith('Task deleted', expect.objectContaining({ icon: TASK_EVENT_ICONS['task.deleted'] }));
  });

  it('updates the store but raises no toast while wsEnabled is false', () => {
    store.getState().setWebSocketEnabled(false);
    renderProvider();
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).receive(update(1, 'task.created', { id: 1, title: 'Quiet' })));
    expect(store.getState().tasks).toHaveLength(1);
    expect(toast.success).not.toHaveBeenCalled();
  });

  it("notifies nothing of a change this tab's own action caused, and passes a dismissal to the other tabs once", () => {
    const notify = vi.fn<(message: TaskUpdateMessage, options: NotificationOptions) => void>();
    const dismissNotification = vi.fn<(id: string) => void>();
    let client: WebSocketSyncClient | null = null;
    function Actor(): null {
      client = useTaskSyncConnection()?.client ?? null;
      return null;
    }
    render(
      <TaskSyncProvider userId={freshUser()} url={URL_} store={store} notify={notify} dismissNotification={dismissNotification} clientOptions={clientOptions}>
        <Actor />
      </TaskSyncProvider>,
    );
    act(() => lastSocket(sockets).accept());
    const mine = (client as WebSocketSyncClient | null)?.createOperationId();
    act(() => lastSocket(sockets).receive(update(1, 'task.created', { id: 1, title: 'Mine' }, { op_id: mine })));
    act(() => lastSocket(sockets).receive(update(2, 'task.created', { id: 2, title: 'Theirs' })));
    expect(store.getState().tasks.map((task) => task.title)).toEqual(['Mine', 'Theirs']);
    expect(notify).toHaveBeenCalledTimes(1);
    const [message, options] = notify.mock.calls[0] ?? [];
    expect(message).toMatchObject({ id: 'evt-2' });
    // The user dismisses it; taking it away then raises the dismissal again, which goes nowhere.
    act(() => options?.onDismiss());
    act(() => options?.onDismiss());
    expect(dismissNotification).toHaveBeenCalledExactlyOnceWith('evt-2');
  });

  it('asks the app to refetch on resync_required', () => {
    const onResyncRequired = vi.fn();
    renderProvider({ onResyncRequired });
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).receive({ type: 'resync_required', reason: 'history_gap', seq: 40, epoch: 'e1' }));
    expect(onResyncRequired).toHaveBeenCalledExactlyOnceWith(expect.objectContaining({ reason: 'history_gap', seq: 40 }));
  });

  it('under StrictMode keeps one socket and applies each event once', async () => {
    renderProvider({ strict: true });
    await act(async () => {
      await Promise.resolve();
    });
    expect(sockets).toHaveLength(1);
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).receive(update(1, 'task.created', { id: 1, title: 'Once' })));
    expect(toast.success).toHaveBeenCalledTimes(1);
  });
});

describe('ConnectionIndicator', () => {
  it("shows the provider's status, with the retry count while reconnecting", () => {
    vi.useFakeTimers();
    renderProvider();
    const indicator = screen.getByTestId('connection-status');
    expect(indicator).toHaveProperty('dataset.status', 'connecting');
    expect(indicator.textContent).toBe('Status: connecting');
    act(() => lastSocket(sockets).accept());
    expect(indicator.textContent).toBe('Status: connected');
    expect(indicator.dataset).toMatchObject({ status: 'connected', retryCount: '0' });

    act(() => lastSocket(sockets).fail());
    act(() => {
      vi.advanceTimersByTime(1000);
    });
    act(() => lastSocket(sockets).fail());
    expect(indicator.textContent).toBe('Status: connecting (retry 2)');
    expect(indicator.dataset).toMatchObject({ status: 'connecting', retryCount: '2' });
    expect(screen.getByTestId('connection-retry').textContent).toBe(' (retry 2)');
  });

  it('holds its own shared connection outside a provider', async () => {
    const global = fakeWebSocketClass();
    vi.stubGlobal('WebSocket', global.WebSocket);
    const user = freshUser();
    const { unmount } = render(
      <>
        <ConnectionIndicator userId={user} url={URL_} />
        <ConnectionIndicator userId={user} url={URL_} />
      </>,
    );
    const indicators = screen.getAllByTestId('connection-status');
    expect(indicators.map((element) => element.dataset.status)).toEqual(['connecting', 'connecting']);
    expect(global.sockets).toHaveLength(1);
    act(() => lastSocket(global.sockets).accept());
    expect(indicators.map((element) => element.dataset.status)).toEqual(['connected', 'connected']);
    unmount();
    await act(async () => {
      await Promise.resolve();
    });
    vi.unstubAllGlobals();
  });

  it('shows disconnected without a user', () => {
    render(<ConnectionIndicator userId={null} />);
    expect(screen.getByTestId('connection-status').textContent).toBe('Status: disconnected');
  });
});
