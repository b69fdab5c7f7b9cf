/**
 * WebSocketSyncClient on Node (the `ws` package) against the real Python service: connect,
 * receive a published event, lose the server to SIGKILL, reconnect with exponential backoff once it
 * is back on the same port, and receive what is published after.
 */

import { afterEach, expect, it, onTestFailed } from 'vitest';
import WebSocket from 'ws';

import { nominalDelay } from '../src/backoff.js';
import type { TaskUpdateMessage } from '../src/protocol.js';
import { WebSocketSyncClient, type ConnectionStatus, type ResyncRequest } from '../src/sync-client.js';
import { TaskSyncService, waitFor } from './service.js';

interface Transition {
  status: ConnectionStatus;
  retryCount: number;
  atMs: number;
  /** How long the client was in the previous state; 0 for the first transition. */
  sincePreviousMs: number;
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Every distinct (status, retryCount) the client went through, with when it changed. */
function recordTransitions(client: WebSocketSyncClient): Transition[] {
  const transitions: Transition[] = [];
  client.subscribe(() => {
    const { status, retryCount } = client.getSnapshot();
    const last = transitions.at(-1);
    if (last?.status !== status || last.retryCount !== retryCount) {
      const atMs = performance.now();
      transitions.push({ status, retryCount, atMs, sincePreviousMs: last ? atMs - last.atMs : 0 });
    }
  });
  return transitions;
}

function collectUpdates(client: WebSocketSyncClient): TaskUpdateMessage[] {
  const updates: TaskUpdateMessage[] = [];
  client.addMessageListener((message) => {
    if (message.type === 'task_update') updates.push(message);
  });
  return updates;
}

it('receives events, survives a killed server with backoff, and receives events after its restart', async () => {
  const service = await TaskSyncService.start();
  cleanups.push(() => service.dispose());
  onTestFailed(() => console.log(service.output));

  const user = 'e2e-reconnect';
  const client = new WebSocketSyncClient(service.ws, user, { WebSocket });
  cleanups.push(() => client.disconnect());
  const transitions = recordTransitions(client);
  const updates = collectUpdates(client);
  const resyncs: ResyncRequest[] = [];
  client.onResyncRequired((request) => resyncs.push(request));

  client.connect();
  await waitFor(() => client.status === 'connected', { what: 'the first connection' });
  await service.publish({ id: 'before-kill', event: 'task.created', user_id: user, task: { id: 1, title: 'before' } });
  await waitFor(() => updates.length === 1, { what: 'the event published before the kill' });
  expect(updates[0]).toMatchObject({ id: 'before-kill', event: 'task.created', task: { title: 'before' }, seq: 1 });
  const firstEpoch = updates[0]?.epoch;

  await service.kill();
  // Restart only after at least one attempt has failed against the dead port, so the retries
  // and their growing delays are really exercised.
  await waitFor(() => client.retryCount >= 2, { timeoutMs: 10_000, what: 'a second reconnect attempt scheduled' });
  expect(client.status).toBe('connecting');
  await service.start();
  await waitFor(() => client.status === 'connected', { timeoutMs: 30_000, what: 'the reconnect after the restart' });

  // connected -> connecting (retry 1) -> (retry 2) -> ... -> connected, nothing else.
  const afterKill = transitions.slice(transitions.findIndex((t) => t.status === 'connecting' && t.retryCount === 1));
  const retries = afterKill.slice(0, -1);
  expect(retries.map((t) => [t.status, t.retryCount])).toEqual(retries.map((_, i) => ['connecting', i + 1]));
  expect(afterKill.at(-1)).toMatchObject({ status: 'connected', retryCount: 0 });
  expect(client.getSnapshot().lastCloseCode).toBe(1006);

  // Each wait is the backoff (1 s, 2 s, 4 s, ...) within the ±20 % jitter. The next state
  // change comes after the wait plus the failed or successful handshake, hence the slack above.
  const waits = afterKill.slice(1).map((t, i) => ({ retry: i + 1, ms: Math.round(t.sincePreviousMs) }));
  for (const { retry, ms } of waits) {
    expect(ms, `wait after retry ${retry}`).toBeGreaterThanOrEqual(0.8 * nominalDelay(retry));
    expect(ms, `wait after retry ${retry}`).toBeLessThanOrEqual(1.2 * nominalDelay(retry) + 1_000);
  }
  console.log(`reconnect: ${retries.length} retries, waits ${waits.map((w) => `${w.ms} ms`).join(', ')}`);

  // The handshake told the restarted server it was a reconnect after retries - 1 failed attempts.
  expect(await service.metric('tasksync_reconnects_total')).toBe(1);
  expect(await service.metric('tasksync_reconnect_failed_attempts_total')).toBe(retries.length - 1);

  // The restarted in-memory broker lost its history: the client is told to refetch, not misled.
  await waitFor(() => resyncs.length === 1, { what: 'resync_required after the restart' });
  expect(resyncs[0]).toMatchObject({ reason: 'epoch_changed' });

  await service.publish({ id: 'after-restart', event: 'task.updated', user_id: user, task: { id: 1, title: 'after' } });
  await waitFor(() => updates.length === 2, { what: 'the event published after the restart' });
  expect(updates[1]).toMatchObject({ id: 'after-restart', event: 'task.updated', task: { title: 'after' }, seq: 1 });
  expect(updates[1]?.epoch).not.toBe(firstEpoch);
  expect(client.stats.malformedFrames).toBe(0);
});
