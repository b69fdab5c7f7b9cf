/**
 * `@tasksync/web/toasts`: Sonner toasts for task events. Needs sonner and React (optional peers
 * of the package, required by this entry only); render Sonner's `<Toaster />` in the layout.
 */

export {
  DEFAULT_TASK_NOTIFICATIONS,
  TASK_TOAST_TEST_ID,
  describeTaskNotification,
  dismissTaskNotification,
  showTaskNotification,
  type TaskNotificationContent,
  type ToastKind,
} from './notifications.js';
