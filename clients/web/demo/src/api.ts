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

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
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

async function request(method: string, path: string, userId: string, body?: unknown): Promise<unknown> {
  const response = await fetch(url(path, userId), {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  if (!response.ok) {
    const detail = await response.text();
    throw new ApiError(`${method} ${path || '/'} failed: ${response.status} ${detail}`.trim(), response.status);
  }
  return response.status === 204 ? undefined : response.json();
}

function expectTask(value: unknown): DemoTask {
  if (!isDemoTask(value)) throw new ApiError('the tasks API returned something that is not a task', 502);
  return value;
}

export async function listTasks(userId: string): Promise<DemoTask[]> {
  const value = await request('GET', '', userId);
  if (!Array.isArray(value)) throw new ApiError('the tasks API returned something that is not a list', 502);
  return value.map(expectTask);
}

export async function createTask(userId: string, title: string): Promise<DemoTask> {
  return expectTask(await request('POST', '', userId, { title }));
}

export async function updateTask(
  userId: string,
  id: number,
  changes: { title?: string; completed?: boolean },
): Promise<DemoTask> {
  return expectTask(await request('PATCH', `/${id}`, userId, changes));
}

export async function deleteTask(userId: string, id: number): Promise<void> {
  await request('DELETE', `/${id}`, userId);
}
