/**
 * The Zustand task store, fed by WebSocket events.
 *
 * Remote state wins (the rule of the original client specification), with two guards for a
 * transport that may replay and reorder: an event older than the state held for its task is
 * ignored (see ordering.ts for what "older" means), and an event id seen before is ignored.
 * Deleted tasks leave a tombstone so that a late event cannot bring them back.
 */

import { create, type StoreApi, type UseBoundStore } from 'zustand';

import { compareMarks, markOf, mergeMarks, type OrderMark } from './ordering.js';
import type { Task, TaskEventName, TaskId, WebSocketMessage } from './protocol.js';

/**
 * What handling a message did: `applied` changed the task list; `unchanged` was current but
 * identical to what is held; `stale` was older than the held state; `duplicate` carried an event
 * id already handled; `ignored` was not a task event (a ping).
 */
export type TaskEventOutcome = 'applied' | 'unchanged' | 'stale' | 'duplicate' | 'ignored';

export interface TaskStoreState {
  tasks: Task[];
  /** Whether real-time updates raise toasts. Default true. */
  wsEnabled: boolean;
  /** Replaces the list with a fetched snapshot, keeping any task the store already holds newer. */
  setTasks: (tasks: Task[]) => void;
  /** Applies a task the app got from its own API call (for example a create), under the same rule. */
  upsertTask: (task: Task) => TaskEventOutcome;
  /** Removes a task the app deleted through its own API call. */
  removeTask: (id: TaskId) => void;
  handleWebSocketMessage: (message: WebSocketMessage) => TaskEventOutcome;
  setWebSocketEnabled: (enabled: boolean) => void;
}

export type TaskStore = UseBoundStore<StoreApi<TaskStoreState>>;

// Bounds on the bookkeeping: replays are short (a reconnect's worth), so a few thousand entries
// cover them without letting a long-lived tab grow without limit.
const SEEN_EVENT_LIMIT = 2_000;
const TOMBSTONE_LIMIT = 2_000;

function rememberBounded<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) map.delete(map.keys().next().value as K);
}

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const aKeys = Object.keys(a);
  const bKeys = Object.keys(b);
  if (aKeys.length !== bKeys.length) return false;
  return aKeys.every((key) => jsonEqual((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}

interface IncomingEvent {
  event: TaskEventName;
  task: Task;
  seq?: number;
  epoch?: string;
}

export function createTaskStore(initialTasks: Task[] = []): TaskStore {
  /** Offset of the last event applied per task; combined with the task's own fields into its mark. */
  const offsets = new Map<TaskId, { seq?: number; epoch?: string }>();
  const tombstones = new Map<TaskId, OrderMark>();
  const seenEventIds = new Map<string, true>();

  const heldMark = (task: Task): OrderMark => markOf(task, offsets.get(task.id));

  return create<TaskStoreState>()((set, get) => {
    function apply({ event, task, seq, epoch }: IncomingEvent): TaskEventOutcome {
      const tasks = get().tasks;
      const index = tasks.findIndex((held) => held.id === task.id);
      const held = index >= 0 ? tasks[index] : undefined;
      const incoming = markOf(task, { seq, epoch });
      const tombstone = held ? undefined : tombstones.get(task.id);
      const reference = held ? heldMark(held) : tombstone;
      if (reference) {
        const order = compareMarks(incoming, reference);
        // An event as new as a deletion is not newer than it: only a later one may revive the task.
        if (order !== undefined && (order < 0 || (order === 0 && tombstone))) return 'stale';
      }
      if (seq !== undefined && epoch !== undefined) offsets.set(task.id, { seq, epoch });

      if (event === 'task.deleted') {
        rememberBounded(tombstones, task.id, mergeMarks(reference, incoming), TOMBSTONE_LIMIT);
        offsets.delete(task.id);
        if (!held) return 'unchanged';
        set({ tasks: tasks.filter((_, i) => i !== index) });
        return 'applied';
      }

      // A completion may carry only part of the task; what it does not say is kept.
      const next: Task = event === 'task.completed' ? { ...held, ...task, completed: true } : task;
      tombstones.delete(task.id);
      if (held && jsonEqual(held, next)) return 'unchanged';
      set({ tasks: held ? tasks.map((current, i) => (i === index ? next : current)) : [...tasks, next] });
      return 'applied';
    }

    return {
      tasks: initialTasks,
      wsEnabled: true,

      setTasks: (fetched) => {
        const held = new Map(get().tasks.map((task) => [task.id, task]));
        const tasks = fetched.map((task) => {
          const current = held.get(task.id);
          const order = current ? compareMarks(heldMark(current), markOf(task)) : undefined;
          return current && order !== undefined && order > 0 ? current : task;
        });
        for (const task of tasks) tombstones.delete(task.id);
        set({ tasks });
      },

      upsertTask: (task) => apply({ event: 'task.updated', task }),

      removeTask: (id) => {
        const task = get().tasks.find((held) => held.id === id);
        if (task) apply({ event: 'task.deleted', task });
      },

      handleWebSocketMessage: (message) => {
        if (message.type !== 'task_update') return 'ignored';
        if (message.id !== undefined) {
          if (seenEventIds.has(message.id)) return 'duplicate';
          rememberBounded(seenEventIds, message.id, true, SEEN_EVENT_LIMIT);
        }
        return apply(message);
      },

      setWebSocketEnabled: (enabled) => set({ wsEnabled: enabled }),
    };
  });
}

/** The app-wide store: `const { tasks } = useTaskStore()`. */
export const useTaskStore: TaskStore = createTaskStore();
