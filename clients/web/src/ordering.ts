/**
 * The version rule of the task store: how to tell whether an event about a task is older than
 * the state already held for it.
 *
 * Two marks are compared on the first criterion that both of them carry:
 *   1. `task.version` (a publisher-side counter: the most reliable),
 *   2. `task.updated_at` (a timestamp: fine unless two writes share a tick),
 *   3. the event's `seq`, only when both offsets belong to the same `epoch` (offsets restart
 *      with a new epoch, so across epochs they say nothing).
 * When no criterion applies the marks are incomparable and the remote state wins (the rule of
 * the original client specification).
 */

import type { Task } from './protocol.js';

export interface OrderMark {
  readonly version?: number;
  /** `updated_at` in milliseconds. */
  readonly updatedAt?: number;
  readonly seq?: number;
  readonly epoch?: string;
}

/** The mark of `task`, plus the offset of the event that carried it, when known. */
export function markOf(task: Task, offset?: { seq?: number; epoch?: string }): OrderMark {
  const updatedAt = typeof task.updated_at === 'string' ? Date.parse(task.updated_at) : Number.NaN;
  return {
    ...(typeof task.version === 'number' && Number.isFinite(task.version) && { version: task.version }),
    ...(Number.isFinite(updatedAt) && { updatedAt }),
    ...(offset?.seq !== undefined && offset.epoch !== undefined && { seq: offset.seq, epoch: offset.epoch }),
  };
}

/** Negative when `a` is older than `b`, positive when newer, 0 when equal, undefined when incomparable. */
export function compareMarks(a: OrderMark, b: OrderMark): number | undefined {
  if (a.version !== undefined && b.version !== undefined) return a.version - b.version;
  if (a.updatedAt !== undefined && b.updatedAt !== undefined) return a.updatedAt - b.updatedAt;
  if (a.seq !== undefined && b.seq !== undefined && a.epoch === b.epoch) return a.seq - b.seq;
  return undefined;
}

/** `newer`'s fields, falling back to `older`'s where `newer` lacks one. */
export function mergeMarks(older: OrderMark | undefined, newer: OrderMark): OrderMark {
  return { ...older, ...newer };
}
