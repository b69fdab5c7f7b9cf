/**
 * The real TaskSync service for end-to-end tests: `tasksync serve --dev` from the repository's
 * virtualenv on a free loopback port, killed and restarted on that same port by the tests.
 *
 * `TASKSYNC_PYTHON=/path/to/python` runs `python -m tasksync.cli` instead of `.venv/bin/tasksync`,
 * for a checkout whose virtualenv lives elsewhere.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Named in the failure message. */
  what?: string;
}

/**
 * Calls `probe` until it returns a truthy value; fails naming `what` after `timeoutMs`. A probe
 * that throws ends the wait at once with its error: it knows the condition can no longer come.
 */
export async function waitFor<T>(
  probe: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 20, what = 'condition' }: WaitOptions = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await probe();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${String(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}

function serveCommand(): { file: string; args: string[] } {
  const python = process.env.TASKSYNC_PYTHON;
  return python
    ? { file: python, args: ['-m', 'tasksync.cli', 'serve'] }
    : { file: join(REPO_ROOT, '.venv', 'bin', 'tasksync'), args: ['serve'] };
}

export interface TaskEventBody {
  id?: string;
  event: 'task.created' | 'task.updated' | 'task.completed' | 'task.deleted';
  user_id: string;
  task: Record<string, unknown>;
}

export class TaskSyncService {
  /** The process's output, kept across restarts, for a failing test to show. */
  output = '';

  #process: ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  readonly #workdir: string;

  private constructor(
    readonly port: number,
    readonly extraArgs: string[],
  ) {
    this.#workdir = mkdtempSync(join(tmpdir(), 'tasksync-e2e-'));
  }

  /** Starts a development-mode service on a free port, with its own demo database. */
  static async start(extraArgs: string[] = []): Promise<TaskSyncService> {
    const service = new TaskSyncService(await freePort(), extraArgs);
    await service.start();
    return service;
  }

  get http(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** (Re)starts the process on the same port and demo database; resolves once /health answers. */
  async start(): Promise<void> {
    if (this.#process) throw new Error('the service is already running');
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('TASKSYNC_')) env[key] = value;
    // The same file across restarts: the demo's tasks outlive the process, as a backend's would.
    env.TASKSYNC_DEMO_DB = join(this.#workdir, 'demo.sqlite3');
    const { file, args } = serveCommand();
    const child = spawn(file, [...args, '--dev', '--port', String(this.port), ...this.extraArgs], {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#process = child;
    this.output += `--- ${file} ${args.join(' ')} on port ${this.port} ---\n`;
    child.stdout.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    let exitedEarly: Error | null = null;
    this.#exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        exitedEarly = new Error(`tasksync exited (code ${String(code)}, signal ${String(signal)}):\n${this.output}`);
        if (this.#process === child) this.#process = null;
        resolve();
      });
      child.once('error', (error) => {
        exitedEarly = new Error(`cannot run ${file}: ${error.message} (set TASKSYNC_PYTHON, or run make venv)`);
        if (this.#process === child) this.#process = null;
        resolve();
      });
    });
    await waitFor(
      async () => {
        if (exitedEarly) throw exitedEarly;
        const response = await fetch(`${this.http}/health`).catch(() => null);
        return response?.ok;
      },
      { timeoutMs: 30_000, intervalMs: 50, what: `tasksync on port ${this.port}` },
    );
  }

  /** SIGKILL: the process dies without a close frame or a drain, as in a crash. */
  async kill(): Promise<void> {
    this.#process?.kill('SIGKILL');
    await this.#exited;
  }

  /**
   * SIGTERM: the service's own shutdown, which closes every socket with 1012 (at once in
   * development mode, whose drain window is 0) before it exits, as in a deploy.
   */
  async stop(): Promise<void> {
    this.#process?.kill('SIGTERM');
    await this.#exited;
  }

  /** Stops the process and removes its demo database. */
  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.#workdir, { recursive: true, force: true });
  }

  /** POST /v1/events (open in development mode). */
  async publish(event: TaskEventBody): Promise<void> {
    const response = await fetch(`${this.http}/v1/events`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(event),
    });
    if (response.status !== 202) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
  }

  /** The value of a counter in /metrics (0 when it has no sample yet). */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.http}/metrics`)).text();
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
    return line ? Number(line.slice(name.length + 1)) : 0;
  }

  /** Calls the demo tasks API as `userId`; returns the parsed answer, failing on an error status. */
  async demoApi(method: string, path: string, userId: string, body?: unknown): Promise<unknown> {
    const response = await fetch(`${this.http}/demo/api/tasks${path}?user_id=${encodeURIComponent(userId)}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${await response.text()}`);
    return response.status === 204 ? undefined : response.json();
  }
}
