/**
 * The page the connection-sharing browser tests open in many tabs: the real provider, store and
 * Sonner toasts around a bare task list, writing through the demo tasks API with an operation id
 * per action, as an app would. It shows what the tests look at (`data-testid`s) and keeps, in
 * `window.received`, every task event the page's client delivered, to count losses and repeats.
 */

import { StrictMode, useEffect, useState, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { Toaster } from 'sonner';

import { ConnectionIndicator, TaskSyncProvider, useTaskSyncConnection } from '../../src/react.js';
import { createTaskStore } from '../../src/store.js';
import type { MessageListener, Task } from '../../src/index.js';
import { dismissTaskNotification, showTaskNotification } from '../../src/toasts.js';

/** A task event as the page's client delivered it, and when (epoch ms, the page's clock). */
export interface Received {
  id: string | undefined;
  seq: number | undefined;
  event: string;
  notify: boolean;
  at: number;
}

declare global {
  interface Window {
    received: Received[];
  }
}
window.received = [];

const store = createTaskStore();
const userId = new URLSearchParams(window.location.search).get('user_id') ?? '';

function useApi(): (method: string, path: string, body?: unknown) => Promise<Task | undefined> {
  const client = useTaskSyncConnection()?.client ?? null;
  return async (method, path, body) => {
    const response = await fetch(`/demo/api/tasks${path}?user_id=${encodeURIComponent(userId)}`, {
      method,
      headers: {
        ...(body !== undefined && { 'Content-Type': 'application/json' }),
        ...(client && { 'X-Operation-Id': client.createOperationId() }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status}`);
    return response.status === 204 ? undefined : ((await response.json()) as Task);
  };
}

function Recorder(): ReactNode {
  const connection = useTaskSyncConnection();
  const addListener = connection?.addListener;
  const removeListener = connection?.removeListener;
  useEffect(() => {
    if (!addListener || !removeListener) return undefined;
    const record: MessageListener = (message, delivery) => {
      if (message.type === 'task_update') {
        const at = performance.timeOrigin + performance.now();
        window.received.push({ id: message.id, seq: message.seq, event: message.event, notify: delivery.notify, at });
      }
    };
    addListener(record);
    return () => removeListener(record);
  }, [addListener, removeListener]);
  const client = connection?.client;
  return <output data-testid="sharing">{client && connection.status === 'connected' ? client.sharing : ''}</output>;
}

function Tasks(): ReactNode {
  const [tasks, setTasks] = useState(store.getState().tasks);
  useEffect(() => store.subscribe((state) => setTasks(state.tasks)), []);
  const [title, setTitle] = useState('');
  const api = useApi();
  const write = async (method: string, task: Task, body?: unknown) => {
    const answer = await api(method, `/${String(task.id)}`, body);
    if (answer) store.getState().upsertTask(answer);
    else store.getState().removeTask(task.id);
  };
  return (
    <main>
      <input data-testid="new-task-input" value={title} onChange={(event) => setTitle(event.target.value)} />
      <button
        type="button"
        data-testid="add-task"
        onClick={() => void api('POST', '', { title }).then((task) => task && store.getState().upsertTask(task))}
      >
        Add
      </button>
      <ul>
        {tasks.map((task) => (
          <li key={String(task.id)} data-testid="task-row" data-task-id={String(task.id)} data-completed={task.completed === true}>
            <span data-testid="task-title">{String(task.title)}</span>
            <button type="button" data-testid="task-rename" onClick={() => void write('PATCH', task, { title: `${String(task.title)}!` })}>
              Rename
            </button>
            <button type="button" data-testid="task-complete" onClick={() => void write('PATCH', task, { completed: true })}>
              Complete
            </button>
            <button type="button" data-testid="task-delete" onClick={() => void write('DELETE', task)}>
              Delete
            </button>
          </li>
        ))}
      </ul>
    </main>
  );
}

const root = document.getElementById('root');
if (!root) throw new Error('index.html has no #root element');
createRoot(root).render(
  <StrictMode>
    <TaskSyncProvider
      userId={userId}
      url="/ws"
      store={store}
      notify={showTaskNotification}
      dismissNotification={dismissTaskNotification}
    >
      <ConnectionIndicator />
      <Recorder />
      <Tasks />
    </TaskSyncProvider>
    <Toaster closeButton />
  </StrictMode>,
);
