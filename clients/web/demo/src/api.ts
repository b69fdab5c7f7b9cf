/**
 * The demo tasks API the TaskSync service serves in development mode. Every write publishes a
 * task event through the service's ingest path, which is how other tabs hear about it.
 */

export interface DemoTask {
  id: number;
  title: string;
  completed: boolean;
  version: number;
  updated_at: string;
  [field: string]: unknown;
}

/** An answer of the API that is not a success: its status and the `error` reason it gave. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string | null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function isDemoTask(value: unknown): value is DemoTask {
  if (typeof value !== 'object' || value === null) return false;
  const task = value as Record<string, unknown>;
  return (
    typeof task.id === 'number' &&
    typeof task.title === 'string' &&
    typeof task.completed === 'boolean' &&
    typeof task.version === 'number' &&
    typeof task.updated_at === 'string'
  );
}

function url(path: string, userId: string): string {
  return `/demo/api/tasks${path}?user_id=${encodeURIComponent(userId)}`;
}

/** The `error` reason of a refusal, which the API answers as `{"error", "message"}`. */
function refusalReason(body: string): string | null {
  try {
    const parsed: unknown = JSON.parse(body);
    const reason = (parsed as { error?: unknown } | null)?.error;
    return typeof reason === 'string' ? reason : null;
  } catch {
    return null;
  }
}

/**
 * The user action a write belongs to (the client's `createOperationId()`): the API publishes it
 * with the event as its `op_id`, by which the acting tab knows not to toast its own change.
 */
export type OperationId = string | undefined;

async function request(method: string, path: string, userId: string, body?: unknown, operationId?: OperationId): Promise<unknown> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (operationId !== undefined) headers['X-Operation-Id'] = operationId;
  const response = await fetch(url(path, userId), {
    method,
    headers,
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  if (!response.ok) {
    const detail = await response.text();
    const message = `${method} ${path || '/'} failed: ${response.status} ${detail}`.trim();
    throw new ApiError(message, response.status, refusalReason(detail));
  }
  return response.status === 204 ? undefined : response.json();
}

function expectTask(value: unknown): DemoTask {
  if (!isDemoTask(value)) throw new ApiError('the tasks API returned something that is not a task', 502, null);
  return value;
}

export async function listTasks(userId: string): Promise<DemoTask[]> {
  const value = await request('GET', '', userId);
  if (!Array.isArray(value)) throw new ApiError('the tasks API returned something that is not a list', 502, null);
  return value.map(expectTask);
}

export async function createTask(userId: string, title: string, operationId?: OperationId): Promise<DemoTask> {
  return expectTask(await request('POST', '', userId, { title }, operationId));
}

export async function updateTask(
  userId: string,
  id: number,
  changes: { title?: string; completed?: boolean },
  operationId?: OperationId,
): Promise<DemoTask> {
  return expectTask(await request('PATCH', `/${id}`, userId, changes, operationId));
}

export async function deleteTask(userId: string, id: number, operationId?: OperationId): Promise<void> {
  await request('DELETE', `/${id}`, userId, undefined, operationId);
}

/**
 * What the page says when a call fails: what did not happen, why in the user's terms, and what
 * to do. `action` completes "Couldn't …" ("add the task"); a write also says that nothing was
 * saved, since the API commits nothing it cannot publish.
 */
export function describeFailure(failure: unknown, action: string, { write }: { write: boolean }): string {
  const unsaved = write ? ' Nothing was saved.' : '';
  // fetch rejects with a TypeError when no answer came at all: the service or the network is down.
  if (!(failure instanceof ApiError)) {
    return `Couldn't ${action}: TaskSync can't be reached.${unsaved} Try again once you're back online.`;
  }
  switch (failure.reason) {
    case 'broker_unavailable':
      return `Couldn't ${action}: TaskSync can't deliver changes right now.${unsaved} Try again in a few seconds.`;
    case 'not_found':
      return `Couldn't ${action}: this task no longer exists. It may have been deleted in another tab.`;
    case 'invalid_title':
    case 'too_large':
      return `Couldn't ${action}: a title needs 1 to 500 characters.`;
    default:
      return `Couldn't ${action}: the server answered ${failure.status}.${unsaved} Please try again.`;
  }
}
