import { useState, type ReactNode, type SubmitEvent } from 'react';

import { useTaskStore, type Task } from '../../src/index.js';
import { createTask, deleteTask, updateTask } from './api.js';

interface Props {
  userId: string;
  onError: (error: string | null) => void;
}

/**
 * The user's tasks as the store holds them. Writes go to the API and only the API's answer is
 * applied here; every other tab learns about them over the WebSocket.
 */
export function TaskList({ userId, onError }: Props): ReactNode {
  const tasks = useTaskStore((state) => state.tasks);
  const [title, setTitle] = useState('');

  /** Runs an API call, reporting its failure on the page instead of as an unhandled rejection. */
  const run = (action: () => Promise<void>) => {
    onError(null);
    action().catch((failure: unknown) => onError(String(failure)));
  };

  const add = (event: SubmitEvent<HTMLFormElement>) => {
    event.preventDefault();
    const text = title.trim();
    if (!text) return;
    run(async () => {
      useTaskStore.getState().upsertTask(await createTask(userId, text));
      setTitle('');
    });
  };

  return (
    <section>
      <form className="new-task" data-testid="new-task-form" onSubmit={add}>
        <input
          data-testid="new-task-input"
          value={title}
          placeholder="What needs doing?"
          aria-label="New task title"
          onChange={(event) => setTitle(event.target.value)}
        />
        <button type="submit" data-testid="add-task">
          Add
        </button>
      </form>
      {tasks.length === 0 ? (
        <p data-testid="empty-list">No tasks yet.</p>
      ) : (
        <ul className="tasks" data-testid="task-list">
          {tasks.map((task) => (
            <TaskRow key={String(task.id)} task={task} userId={userId} run={run} />
          ))}
        </ul>
      )}
    </section>
  );
}

interface RowProps {
  task: Task;
  userId: string;
  run: (action: () => Promise<void>) => void;
}

function TaskRow({ task, userId, run }: RowProps): ReactNode {
  const [draft, setDraft] = useState<string | null>(null);
  const title = typeof task.title === 'string' ? task.title : '';
  const completed = task.completed === true;
  // Tasks of the demo API have numeric ids; anything else came from another publisher and is
  // shown read-only.
  const id = typeof task.id === 'number' ? task.id : null;

  const save = (event: SubmitEvent<HTMLFormElement>) => {
    event.preventDefault();
    const text = draft?.trim();
    if (id === null || !text) return;
    run(async () => {
      useTaskStore.getState().upsertTask(await updateTask(userId, id, { title: text }));
      setDraft(null);
    });
  };

  const toggle = () => {
    if (id === null) return;
    run(async () => {
      useTaskStore.getState().upsertTask(await updateTask(userId, id, { completed: !completed }));
    });
  };

  const remove = () => {
    if (id === null) return;
    run(async () => {
      await deleteTask(userId, id);
      useTaskStore.getState().removeTask(id);
    });
  };

  return (
    <li className={completed ? 'task completed' : 'task'} data-testid="task-row" data-task-id={String(task.id)} data-completed={completed}>
      <input
        type="checkbox"
        data-testid="task-complete"
        aria-label={`Complete ${title}`}
        checked={completed}
        disabled={id === null}
        onChange={toggle}
      />
      {draft === null ? (
        <>
          <span className="title" data-testid="task-title">
            {title}
          </span>
          <button type="button" data-testid="task-edit" disabled={id === null} onClick={() => setDraft(title)}>
            Edit
          </button>
        </>
      ) : (
        <form className="edit" onSubmit={save}>
          <input
            data-testid="task-edit-input"
            aria-label="Task title"
            value={draft}
            autoFocus
            onChange={(event) => setDraft(event.target.value)}
          />
          <button type="submit" data-testid="task-save">
            Save
          </button>
          <button type="button" data-testid="task-cancel" onClick={() => setDraft(null)}>
            Cancel
          </button>
        </form>
      )}
      <button type="button" data-testid="task-delete" disabled={id === null} onClick={remove}>
        Delete
      </button>
    </li>
  );
}
