import { describe, expect, it } from 'vitest';

import { compareMarks, markOf } from '../src/ordering.js';
import type { Task, TaskEventName, TaskUpdateMessage } from '../src/protocol.js';
import { createTaskStore } from '../src/task-store.js';

let nextEventId = 0;

function event(name: TaskEventName, task: Task, extra: Partial<TaskUpdateMessage> = {}): TaskUpdateMessage {
  nextEventId += 1;
  return { type: 'task_update', event: name, task, timestamp: '2025-12-31T12:00:00Z', id: `evt-${nextEventId}`, ...extra };
}

const task = (id: number, version: number, fields: Partial<Task> = {}): Task => ({
  id,
  title: `task ${id} v${version}`,
  completed: false,
  version,
  updated_at: `2025-12-31T12:00:0${version}Z`,
  ...fields,
});

describe('task events', () => {
  it('task.created adds the task at the end of the list', () => {
    const store = createTaskStore([task(1, 1)]);
    expect(store.getState().handleWebSocketMessage(event('task.created', task(2, 1)))).toBe('applied');
    expect(store.getState().tasks.map((t) => t.id)).toEqual([1, 2]);
  });

  it('task.updated replaces the held task in place', () => {
    const store = createTaskStore([task(1, 1), task(2, 1)]);
    const updated = task(1, 2, { title: 'renamed', extra: 'kept' });
    expect(store.getState().handleWebSocketMessage(event('task.updated', updated))).toBe('applied');
    expect(store.getState().tasks).toEqual([updated, task(2, 1)]);
  });

  it('task.updated for an unknown task adds it: remote state wins', () => {
    const store = createTaskStore();
    store.getState().handleWebSocketMessage(event('task.updated', task(5, 3)));
    expect(store.getState().tasks).toEqual([task(5, 3)]);
  });

  it('task.completed marks the task complete, keeping fields the event omits', () => {
    const store = createTaskStore([task(1, 1, { description: 'details' })]);
    expect(store.getState().handleWebSocketMessage(event('task.completed', { id: 1, version: 2 }))).toBe('applied');
    expect(store.getState().tasks).toEqual([{ ...task(1, 1, { description: 'details' }), version: 2, completed: true }]);
  });

  it('task.completed is complete even if the payload says otherwise', () => {
    const store = createTaskStore([task(1, 1)]);
    store.getState().handleWebSocketMessage(event('task.completed', task(1, 2, { completed: false })));
    expect(store.getState().tasks[0]?.completed).toBe(true);
  });

  it('task.deleted removes the task', () => {
    const store = createTaskStore([task(1, 1), task(2, 1)]);
    expect(store.getState().handleWebSocketMessage(event('task.deleted', task(1, 2)))).toBe('applied');
    expect(store.getState().tasks.map((t) => t.id)).toEqual([2]);
  });

  it('task.deleted of a task not held changes nothing', () => {
    const store = createTaskStore([task(2, 1)]);
    const before = store.getState().tasks;
    expect(store.getState().handleWebSocketMessage(event('task.deleted', task(1, 2)))).toBe('unchanged');
    expect(store.getState().tasks).toBe(before);
  });

  it('pings leave the store alone', () => {
    const store = createTaskStore([task(1, 1)]);
    expect(store.getState().handleWebSocketMessage({ type: 'ping', timestamp: null })).toBe('ignored');
  });

  it('accepts string task ids', () => {
    const store = createTaskStore();
    store.getState().handleWebSocketMessage(event('task.created', { id: 'a-1', title: 'x' }));
    store.getState().handleWebSocketMessage(event('task.deleted', { id: 'a-1' }));
    expect(store.getState().tasks).toEqual([]);
  });
});

describe('duplicates', () => {
  it('ignores an event id seen before', () => {
    const store = createTaskStore();
    const created = event('task.created', task(1, 1));
    expect(store.getState().handleWebSocketMessage(created)).toBe('applied');
    const before = store.getState().tasks;
    expect(store.getState().handleWebSocketMessage(created)).toBe('duplicate');
    expect(store.getState().tasks).toBe(before);
  });

  it('a replayed delete after a re-create does not delete again', () => {
    const store = createTaskStore();
    const deleted = event('task.deleted', { id: 1 }, { seq: 2, epoch: 'e' });
    store.getState().handleWebSocketMessage(event('task.created', { id: 1, title: 'a' }, { seq: 1, epoch: 'e' }));
    store.getState().handleWebSocketMessage(deleted);
    store.getState().handleWebSocketMessage(event('task.created', { id: 1, title: 'again' }, { seq: 3, epoch: 'e' }));
    expect(store.getState().handleWebSocketMessage(deleted)).toBe('duplicate');
    expect(store.getState().tasks).toEqual([{ id: 1, title: 'again' }]);
  });

  it('an event equal to the held state is unchanged, and does not replace the array', () => {
    const store = createTaskStore([task(1, 2)]);
    const before = store.getState().tasks;
    expect(store.getState().handleWebSocketMessage(event('task.updated', task(1, 2)))).toBe('unchanged');
    expect(store.getState().tasks).toBe(before);
  });
});

describe('out-of-order events', () => {
  it('ignores an update older than the held version', () => {
    const store = createTaskStore();
    store.getState().handleWebSocketMessage(event('task.updated', task(1, 3, { title: 'newest' })));
    expect(store.getState().handleWebSocketMessage(event('task.updated', task(1, 2, { title: 'older' })))).toBe('stale');
    expect(store.getState().tasks[0]?.title).toBe('newest');
  });

  it('compares updated_at when there is no version', () => {
    const store = createTaskStore([{ id: 1, title: 'late', updated_at: '2025-12-31T12:00:05Z' }]);
    const early = { id: 1, title: 'early', updated_at: '2025-12-31T12:00:01Z' };
    expect(store.getState().handleWebSocketMessage(event('task.updated', early))).toBe('stale');
    const later = { id: 1, title: 'later', updated_at: '2025-12-31T12:00:09Z' };
    expect(store.getState().handleWebSocketMessage(event('task.updated', later))).toBe('applied');
    expect(store.getState().tasks[0]?.title).toBe('later');
  });

  it('compares seq within one epoch when the task carries neither version nor updated_at', () => {
    const store = createTaskStore();
    store.getState().handleWebSocketMessage(event('task.updated', { id: 1, title: 'seq 8' }, { seq: 8, epoch: 'e1' }));
    const older = event('task.updated', { id: 1, title: 'seq 7' }, { seq: 7, epoch: 'e1' });
    expect(store.getState().handleWebSocketMessage(older)).toBe('stale');
    // Offsets of another epoch say nothing about order: the remote state wins.
    const otherEpoch = event('task.updated', { id: 1, title: 'new epoch' }, { seq: 1, epoch: 'e2' });
    expect(store.getState().handleWebSocketMessage(otherEpoch)).toBe('applied');
    expect(store.getState().tasks[0]?.title).toBe('new epoch');
  });

  it('a late update cannot revive a deleted task', () => {
    const store = createTaskStore([task(1, 1)]);
    store.getState().handleWebSocketMessage(event('task.deleted', task(1, 3)));
    expect(store.getState().handleWebSocketMessage(event('task.updated', task(1, 2)))).toBe('stale');
    expect(store.getState().handleWebSocketMessage(event('task.completed', task(1, 3)))).toBe('stale');
    expect(store.getState().tasks).toEqual([]);
  });

  it('a delete without a version is ordered by the version held before it', () => {
    const store = createTaskStore([task(1, 4)]);
    store.getState().handleWebSocketMessage(event('task.deleted', { id: 1 }));
    expect(store.getState().handleWebSocketMessage(event('task.updated', task(1, 4)))).toBe('stale');
  });

  it('a newer event revives a deleted task (restored on the server)', () => {
    const store = createTaskStore([task(1, 1)]);
    store.getState().handleWebSocketMessage(event('task.deleted', task(1, 2)));
    expect(store.getState().handleWebSocketMessage(event('task.created', task(1, 3)))).toBe('applied');
    expect(store.getState().tasks).toEqual([task(1, 3)]);
  });

  it('a stale delete does not remove a newer task', () => {
    const store = createTaskStore([task(1, 5)]);
    expect(store.getState().handleWebSocketMessage(event('task.deleted', task(1, 4)))).toBe('stale');
    expect(store.getState().tasks).toHaveLength(1);
  });

  it('converges whatever order a burst of events arrives in', () => {
    const created = event('task.created', task(1, 1), { seq: 1, epoch: 'e' });
    const updated = event('task.updated', task(1, 2, { title: 'two' }), { seq: 2, epoch: 'e' });
    const completed = event('task.completed', task(1, 3, { title: 'two', completed: true }), { seq: 3, epoch: 'e' });
    const otherCreated = event('task.created', task(2, 1), { seq: 4, epoch: 'e' });
    const otherDeleted = event('task.deleted', task(2, 2), { seq: 5, epoch: 'e' });
    const orders = [
      [created, updated, completed, otherCreated, otherDeleted],
      [otherDeleted, otherCreated, completed, updated, created],
      [completed, created, otherDeleted, updated, otherCreated],
      [updated, otherCreated, created, otherDeleted, completed, completed, created],
    ];
    for (const order of orders) {
      const store = createTaskStore();
      for (const message of order) store.getState().handleWebSocketMessage(message);
      expect(store.getState().tasks).toEqual([task(1, 3, { title: 'two', completed: true })]);
    }
  });
});

describe('local writes and snapshots', () => {
  it('upsertTask applies an API response under the same rule', () => {
    const store = createTaskStore();
    expect(store.getState().upsertTask(task(1, 1))).toBe('applied');
    store.getState().handleWebSocketMessage(event('task.updated', task(1, 3)));
    expect(store.getState().upsertTask(task(1, 2))).toBe('stale');
    expect(store.getState().tasks).toEqual([task(1, 3)]);
  });

  it("the event echoing this tab's own write is unchanged", () => {
    const store = createTaskStore();
    store.getState().upsertTask(task(1, 1));
    expect(store.getState().handleWebSocketMessage(event('task.created', task(1, 1)))).toBe('unchanged');
  });

  it('removeTask removes and keeps the late event of the same write out', () => {
    const store = createTaskStore([task(1, 2)]);
    store.getState().removeTask(1);
    expect(store.getState().tasks).toEqual([]);
    expect(store.getState().handleWebSocketMessage(event('task.updated', task(1, 2)))).toBe('stale');
    expect(store.getState().handleWebSocketMessage(event('task.deleted', task(1, 2)))).toBe('stale');
    expect(store.getState().tasks).toEqual([]);
  });

  it('setTasks replaces the list', () => {
    const store = createTaskStore([task(1, 1), task(2, 1)]);
    store.getState().setTasks([task(3, 1)]);
    expect(store.getState().tasks).toEqual([task(3, 1)]);
  });

  it('setTasks keeps a held task that is newer than the snapshot', () => {
    const store = createTaskStore();
    store.getState().handleWebSocketMessage(event('task.updated', task(1, 5)));
    store.getState().setTasks([task(1, 4), task(2, 1)]);
    expect(store.getState().tasks).toEqual([task(1, 5), task(2, 1)]);
  });

  it('setTasks lifts the tombstone of a task the snapshot has again', () => {
    const store = createTaskStore([task(1, 2)]);
    store.getState().handleWebSocketMessage(event('task.deleted', task(1, 3)));
    store.getState().setTasks([task(1, 1)]);
    expect(store.getState().handleWebSocketMessage(event('task.updated', task(1, 2)))).toBe('applied');
  });
});

describe('wsEnabled', () => {
  it('defaults to true and follows setWebSocketEnabled', () => {
    const store = createTaskStore();
    expect(store.getState().wsEnabled).toBe(true);
    store.getState().setWebSocketEnabled(false);
    expect(store.getState().wsEnabled).toBe(false);
  });
});

describe('compareMarks', () => {
  it('uses version, then updated_at, then seq of the same epoch', () => {
    expect(compareMarks(markOf(task(1, 2)), markOf(task(1, 1)))).toBeGreaterThan(0);
    expect(compareMarks(markOf({ id: 1, version: 1, updated_at: '2030-01-01T00:00:00Z' }), markOf({ id: 1, version: 2 }))).toBeLessThan(0);
    expect(compareMarks(markOf({ id: 1, updated_at: '2025-01-02T00:00:00Z' }), markOf({ id: 1, updated_at: '2025-01-01T00:00:00Z' }))).toBeGreaterThan(0);
    expect(compareMarks(markOf({ id: 1 }, { seq: 3, epoch: 'e' }), markOf({ id: 1 }, { seq: 4, epoch: 'e' }))).toBeLessThan(0);
  });

  it('is undefined when nothing is comparable', () => {
    expect(compareMarks(markOf({ id: 1, version: 1 }), markOf({ id: 1, updated_at: '2025-01-01T00:00:00Z' }))).toBeUndefined();
    expect(compareMarks(markOf({ id: 1 }, { seq: 3, epoch: 'a' }), markOf({ id: 1 }, { seq: 4, epoch: 'b' }))).toBeUndefined();
    expect(compareMarks(markOf({ id: 1, updated_at: 'not a date' }), markOf({ id: 1, updated_at: '2025-01-01T00:00:00Z' }))).toBeUndefined();
  });
});
