/**
 * The task events' toast icons as inline SVG. An emoji renders as an empty box on a system
 * without an emoji font; an SVG draws the same everywhere, in the toast's own colour
 * (`currentColor`), so a Toaster with `richColors` tints it by the toast's kind.
 */

import type { ReactElement, ReactNode } from 'react';

import type { TaskEventName } from './protocol.js';

const SHAPES: Readonly<Record<TaskEventName, ReactNode>> = {
  // A circle with a plus.
  'task.created': (
    <>
      <circle cx="10" cy="10" r="7.25" />
      <path d="M10 6.75v6.5M6.75 10h6.5" />
    </>
  ),
  // A pencil.
  'task.updated': <path d="M12.75 4.25l3 3L7.5 15.5H4.5v-3z M11 6l3 3" />,
  // A circle with a check.
  'task.completed': (
    <>
      <circle cx="10" cy="10" r="7.25" />
      <path d="M6.75 10.25l2.25 2.25 4.25-4.75" />
    </>
  ),
  // A bin.
  'task.deleted': <path d="M4 6h12M8 6V4.25h4V6M5.75 6l.75 9.75h7l.75-9.75" />,
};

export function TaskEventIcon({ event }: { event: TaskEventName }): ReactElement {
  return (
    <svg
      viewBox="0 0 20 20"
      width="20"
      height="20"
      fill="none"
      stroke="currentColor"
      strokeWidth="1.75"
      strokeLinecap="round"
      strokeLinejoin="round"
      aria-hidden="true"
      data-task-event={event}
    >
      {SHAPES[event]}
    </svg>
  );
}

/** One icon element per event, made once: a toast's `icon` option takes an element. */
export const TASK_EVENT_ICONS: Readonly<Record<TaskEventName, ReactElement>> = {
  'task.created': <TaskEventIcon event="task.created" />,
  'task.updated': <TaskEventIcon event="task.updated" />,
  'task.completed': <TaskEventIcon event="task.completed" />,
  'task.deleted': <TaskEventIcon event="task.deleted" />,
};
