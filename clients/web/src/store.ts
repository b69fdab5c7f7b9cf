/**
 * `@tasksync/web/store`: the zustand task store and the ordering rule it applies. Needs zustand
 * and React (optional peers of the package, required by this entry only).
 */

export { compareMarks, markOf, type OrderMark } from './ordering.js';
export { createTaskStore, useTaskStore, type TaskEventOutcome, type TaskStore, type TaskStoreState } from './task-store.js';
