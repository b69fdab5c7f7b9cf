import { ClipboardList, Pencil, Plus, Trash2 } from 'lucide-react';
import { useRef, useState, type ReactNode, type RefObject, type SubmitEvent } from 'react';

import type { Task } from '../../src/index.js';
import { useTaskStore } from '../../src/store.js';
import { createTask, deleteTask, updateTask, type OperationId } from './api.js';

/**
 * Runs one API write, under a new operation id. Resolves true when it succeeded; on failure the
 * page shows why and the caller keeps what the user typed, so a failed write is never a silent loss.
 */
export type RunWrite = (action: string, write: (operationId: OperationId) => Promise<void>) => Promise<boolean>;

interface Props {
  userId: string;
  /** Writes are refused while the connection is down: the banner says why. */
  live: boolean;
  run: RunWrite;
}

/**
 * The user's tasks as the store holds them. Writes go to the API and only the API's answer is
 * applied here; every other tab learns about them over the WebSocket.
 */
export function TaskList({ userId, live, run }: Props): ReactNode {
  const tasks = useTaskStore((state) => state.tasks);
  const newTaskInput = useRef<HTMLInputElement>(null);
  return (
    <>
      <NewTaskForm userId={userId} live={live} run={run} input={newTaskInput} />
      {tasks.length === 0 ? (
        <div className="empty" data-testid="empty-list">
          <ClipboardList aria-hidden className="empty-icon" />
          <p className="empty-title">No tasks yet</p>
          <p>Add one above: it shows up at once in every tab where {userId} is signed in.</p>
        </div>
      ) : (
        <ul className="tasks" data-testid="task-list" aria-label={`${userId}'s tasks`}>
          {tasks.map((task) => (
            <TaskRow
              key={String(task.id)}
              task={task}
              userId={userId}
              live={live}
              run={run}
              onDeleted={() => newTaskInput.current?.focus()}
            />
          ))}
        </ul>
      )}
    </>
  );
}

function NewTaskForm({ userId, live, run, input }: Props & { input: RefObject<HTMLInputElement | null> }): ReactNode {
  const [title, setTitle] = useState('');
  const [saving, setSaving] = useState(false);
  const add = (event: SubmitEvent<HTMLFormElement>) => {
    event.preventDefault();
    const text = title.trim();
    if (!text || !live || saving) return;
    setSaving(true);
    void run('add the task', async (operationId) => {
      useTaskStore.getState().upsertTask(await createTask(userId, text, operationId));
      setTitle('');
    }).finally(() => setSaving(false));
  };
  return (
    <form className="new-task" data-testid="new-task-form" onSubmit={add}>
      <input
        ref={input}
        data-testid="new-task-input"
        value={title}
        placeholder="What needs doing?"
        aria-label="New task title"
        maxLength={500}
        onChange={(event) => setTitle(event.target.value)}
      />
      <button type="submit" className="button button-primary" data-testid="add-task" disabled={!live || saving}>
        <Plus aria-hidden />
        Add
      </button>
    </form>
  );
}

interface RowProps {
  task: Task;
  userId: string;
  live: boolean;
  run: RunWrite;
  onDeleted: () => void;
}

function TaskRow({ task, userId, live, run, onDeleted }: RowProps): ReactNode {
  const [draft, setDraft] = useState<string | null>(null);
  // Set when editing ends: the rename button, rendered again, takes the keyboard focus back.
  const refocusRename = useRef(false);
  const renameButton = (button: HTMLButtonElement | null) => {
    if (button && refocusRename.current) {
      refocusRename.current = false;
      button.focus();
    }
  };
  const title = typeof task.title === 'string' ? task.title : '';
  const completed = task.completed === true;
  // Tasks of the demo API have numeric ids; anything else came from another publisher and is
  // shown read-only.
  const id = typeof task.id === 'number' ? task.id : null;
  const writable = id !== null && live;

  const stopEditing = () => {
    refocusRename.current = true;
    setDraft(null);
  };

  const save = (event: SubmitEvent<HTMLFormElement>) => {
    event.preventDefault();
    const text = draft?.trim();
    if (id === null || !text || !live) return;
    void run('rename the task', async (operationId) => {
      useTaskStore.getState().upsertTask(await updateTask(userId, id, { title: text }, operationId));
    }).then((saved) => saved && stopEditing());
  };

  const toggle = () => {
    if (id === null) return;
    void run(completed ? 'reopen the task' : 'complete the task', async (operationId) => {
      useTaskStore.getState().upsertTask(await updateTask(userId, id, { completed: !completed }, operationId));
    });
  };

  const remove = () => {
    if (id === null) return;
    void run('delete the task', async (operationId) => {
      await deleteTask(userId, id, operationId);
      useTaskStore.getState().removeTask(id);
      onDeleted();
    });
  };

  return (
    <li
      className={completed ? 'task completed' : 'task'}
      data-testid="task-row"
      data-task-id={String(task.id)}
      data-completed={completed}
    >
      <input
        type="checkbox"
        className="check"
        data-testid="task-complete"
        aria-label={completed ? `Reopen "${title}"` : `Complete "${title}"`}
        checked={completed}
        disabled={!writable}
        onChange={toggle}
      />
      {draft === null ? (
        <>
          <span className="title" data-testid="task-title">
            {title}
          </span>
          <button
            ref={renameButton}
            type="button"
            className="icon-button"
            data-testid="task-edit"
            aria-label={`Rename "${title}"`}
            title="Rename"
            disabled={!writable}
            onClick={() => setDraft(title)}
          >
            <Pencil aria-hidden />
          </button>
        </>
      ) : (
        <form className="edit" onSubmit={save}>
          <input
            data-testid="task-edit-input"
            aria-label="Task title"
            value={draft}
            maxLength={500}
            autoFocus
            onChange={(event) => setDraft(event.target.value)}
            onKeyDown={(event) => {
              if (event.key === 'Escape') stopEditing();
            }}
          />
          <button type="submit" className="button button-primary" data-testid="task-save" disabled={!live}>
            Save
          </button>
          <button type="button" className="button button-ghost" data-testid="task-cancel" onClick={stopEditing}>
            Cancel
          </button>
        </form>
      )}
      <button
        type="button"
        className="icon-button icon-button-danger"
        data-testid="task-delete"
        aria-label={`Delete "${title}"`}
        title="Delete"
        disabled={!writable}
        onClick={remove}
      >
        <Trash2 aria-hidden />
      </button>
    </li>
  );
}
