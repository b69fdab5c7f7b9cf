import { beforeEach, describe, expect, it, vi } from 'vitest';

const toast = vi.hoisted(() =>
  Object.assign(vi.fn(), { success: vi.fn(), info: vi.fn(), warning: vi.fn(), error: vi.fn() }),
);
vi.mock('sonner', () => ({ toast }));

import { describeTaskNotification, showTaskNotification } from '../src/notifications.js';
import type { TaskEventName, TaskUpdateMessage } from '../src/protocol.js';
import { TASK_EVENT_ICONS } from '../src/toast-icons.js';

function message(event: TaskEventName, extra: Partial<TaskUpdateMessage> = {}): TaskUpdateMessage {
  return { type: 'task_update', event, task: { id: 7, title: 'Write report' }, timestamp: '2025-12-31T12:00:00Z', ...extra };
}

beforeEach(() => {
  for (const fn of [toast, toast.success, toast.info, toast.warning, toast.error]) fn.mockClear();
});

describe('describeTaskNotification', () => {
  it.each([
    ['task.created', 'Task created', 'success'],
    ['task.updated', 'Task updated', 'info'],
    ['task.completed', 'Task completed', 'success'],
    ['task.deleted', 'Task deleted', 'info'],
  ] as const)('%s: the default text %s, with the task title and the event icon', (event, title, kind) => {
    const icon = TASK_EVENT_ICONS[event];
    expect(describeTaskNotification(message(event))).toEqual({ icon, title, kind, description: 'Write report' });
  });

  it("prefers the server's notification text and kind", () => {
    const content = describeTaskNotification(
      message('task.updated', { notification: { title: 'Bob renamed a task', body: '“Write report”', kind: 'warning' } }),
    );
    expect(content).toEqual({
      icon: TASK_EVENT_ICONS['task.updated'],
      title: 'Bob renamed a task',
      description: '“Write report”',
      kind: 'warning',
    });
  });

  it('keeps the event kind when the server sends none, and shows a plain toast for unknown kinds', () => {
    expect(describeTaskNotification(message('task.created', { notification: { title: 'New' } }))).toEqual({
      icon: TASK_EVENT_ICONS['task.created'],
      title: 'New',
      kind: 'success',
    });
    expect(describeTaskNotification(message('task.created', { notification: { title: 'New', kind: 'celebrate' } })).kind).toBe(
      'default',
    );
  });

  it('omits the description when the task has no title', () => {
    expect(describeTaskNotification(message('task.deleted', { task: { id: 7 } }))).not.toHaveProperty('description');
  });
});

describe('showTaskNotification', () => {
  it('shows a Sonner toast of the right kind, keyed by the event id', () => {
    showTaskNotification(message('task.created', { id: 'evt-1' }));
    expect(toast.success).toHaveBeenCalledExactlyOnceWith('Task created', {
      icon: TASK_EVENT_ICONS['task.created'],
      description: 'Write report',
      id: 'evt-1',
      testId: 'task-toast',
    });
  });

  it('uses the plain toast for kinds Sonner has no style for', () => {
    showTaskNotification(message('task.updated', { notification: { title: 'Heads up', kind: 'custom' } }));
    expect(toast).toHaveBeenCalledExactlyOnceWith('Heads up', { icon: TASK_EVENT_ICONS['task.updated'], testId: 'task-toast' });
    expect(toast.info).not.toHaveBeenCalled();
  });
});
