/** Toasts for real-time task events, shown with Sonner. */

import type { ReactNode } from 'react';
import { toast, type ExternalToast } from 'sonner';

import type { TaskEventName, TaskUpdateMessage } from './protocol.js';
import { TASK_EVENT_ICONS } from './toast-icons.js';

export type ToastKind = 'success' | 'info' | 'warning' | 'error' | 'default';

export interface TaskNotificationContent {
  title: string;
  description?: string;
  /** An inline SVG of the event (toast-icons.tsx). */
  icon: ReactNode;
  kind: ToastKind;
}

/**
 * The four notifications of the original client specification, used when the server sends no
 * text of its own.
 */
export const DEFAULT_TASK_NOTIFICATIONS: Readonly<Record<TaskEventName, Omit<TaskNotificationContent, 'description'>>> = {
  'task.created': { icon: TASK_EVENT_ICONS['task.created'], title: 'Task created', kind: 'success' },
  'task.updated': { icon: TASK_EVENT_ICONS['task.updated'], title: 'Task updated', kind: 'info' },
  'task.completed': { icon: TASK_EVENT_ICONS['task.completed'], title: 'Task completed', kind: 'success' },
  'task.deleted': { icon: TASK_EVENT_ICONS['task.deleted'], title: 'Task deleted', kind: 'info' },
};

/** `data-testid` of every task toast, for browser tests. */
export const TASK_TOAST_TEST_ID = 'task-toast';

function toastKind(kind: string | undefined, fallback: ToastKind): ToastKind {
  switch (kind) {
    case 'success':
    case 'info':
    case 'warning':
    case 'error':
      return kind;
    case undefined:
      return fallback;
    default:
      return 'default';
  }
}

/**
 * The toast for `message`: the server's `notification` text when it sent one (its hooks know the
 * product's wording), otherwise the default title with the task title as description.
 * The event's icon is kept either way so the four kinds stay recognisable at a glance.
 */
export function describeTaskNotification(message: TaskUpdateMessage): TaskNotificationContent {
  const defaults = DEFAULT_TASK_NOTIFICATIONS[message.event];
  const server = message.notification;
  if (server) {
    return {
      icon: defaults.icon,
      title: server.title,
      kind: toastKind(server.kind, defaults.kind),
      ...(server.body !== undefined && { description: server.body }),
    };
  }
  const taskTitle = message.task.title;
  return { ...defaults, ...(typeof taskTitle === 'string' && { description: taskTitle }) };
}

/**
 * Shows the toast for a task event. The event id doubles as the toast id, so an event delivered
 * twice updates one toast instead of stacking two. `onDismiss` runs when the toast is dismissed
 * (close button, swipe, or `dismissTaskNotification`); TaskSyncProvider passes the function that
 * dismisses it in the user's other tabs as well.
 */
export function showTaskNotification(message: TaskUpdateMessage, { onDismiss }: { onDismiss?: () => void } = {}): void {
  const content = describeTaskNotification(message);
  const options: ExternalToast = {
    icon: content.icon,
    testId: TASK_TOAST_TEST_ID,
    ...(content.description !== undefined && { description: content.description }),
    ...(message.id !== undefined && { id: message.id }),
    ...(onDismiss && { onDismiss }),
  };
  const show = content.kind === 'default' ? toast : toast[content.kind];
  show(content.title, options);
}

/** Takes away the toast of event `id`: TaskSyncProvider's `dismissNotification`. */
export function dismissTaskNotification(id: string): void {
  toast.dismiss(id);
}
