// A React app built with Vite from the installed package: every entry point, as the docs use them.
import { createRoot } from 'react-dom/client';
import { Toaster } from 'sonner';

import { resolveWebSocketUrl } from '@tasksync/web';
import { ConnectionIndicator, TaskSyncProvider } from '@tasksync/web/react';
import { useTaskStore } from '@tasksync/web/store';
import { showTaskNotification } from '@tasksync/web/toasts';

function Tasks() {
  const tasks = useTaskStore((state) => state.tasks);
  return (
    <ul>
      {tasks.map((task) => (
        <li key={String(task.id)}>{String(task.title)}</li>
      ))}
    </ul>
  );
}

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <TaskSyncProvider userId="alice" url={resolveWebSocketUrl()} store={useTaskStore} notify={showTaskNotification}>
      <ConnectionIndicator />
      <Tasks />
      <Toaster richColors />
    </TaskSyncProvider>,
  );
}
