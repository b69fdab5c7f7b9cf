import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { WebSocketMessage } from '../src/protocol.js';
import {
  HEARTBEAT_TIMEOUT_CLOSE_CODE,
  WebSocketSyncClient,
  closeAction,
  type ConnectionStatus,
  type SyncClientOptions,
} from '../src/sync-client.js';
import { fakeWebSocketClass, lastSocket, type FakeWebSocket } from './fake-websocket.js';

const URL_ = 'ws://sync.test/ws';
const clients: WebSocketSyncClient[] = [];

function setup(options: SyncClientOptions = {}) {
  const { WebSocket, sockets } = fakeWebSocketClass();
  // random 0.5 puts the jitter at its midpoint: delays are exactly nominal unless a test says otherwise.
  const client = new WebSocketSyncClient(URL_, 'alice', { WebSocket, random: () => 0.5, ...options });
  clients.push(client);
  const statuses: ConnectionStatus[] = [];
  client.subscribe(() => {
    if (statuses.at(-1) !== client.status) statuses.push(client.status);
  });
  return { client, sockets, statuses, socket: () => lastSocket(sockets) };
}

/** Advances fake time by `ms` and lets promise callbacks run. */
async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

function taskUpdate(seq: number, extra: Record<string, unknown> = {}) {
  return {
    type: 'task_update',
    event: 'task.updated',
    task: { id: 1, title: `v${seq}` },
    timestamp: '2025-12-31T12:00:00Z',
    id: `evt-${seq}`,
    seq,
    epoch: 'e1',
    ...extra,
  };
}

function setVisibility(state: DocumentVisibilityState): void {
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
  document.dispatchEvent(new Event('visibilitychange'));
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
  vi.useRealTimers();
  Reflect.deleteProperty(document, 'visibilityState');
});

describe('connecting', () => {
  it('starts disconnected and goes connecting -> connected on the connected frame', () => {
    const { client, socket, statuses } = setup();
    expect(client.status).toBe('disconnected');
    client.connect();
    expect(client.status).toBe('connecting');
    socket().open();
    expect(client.status).toBe('connecting');
    socket().receive({ type: 'connected', user_id: 'alice', seq: 0, epoch: 'e1', heartbeat_interval: 25, resumed: false });
    expect(client.status).toBe('connected');
    expect(statuses).toEqual(['connecting', 'connected']);
  });

  it('identifies the user and offers the tasksync.v1 subprotocol', () => {
    const { client, socket } = setup();
    client.connect();
    expect(socket().url.origin + socket().url.pathname).toBe(URL_);
    expect(socket().query).toEqual({ user_id: 'alice' });
    expect(socket().protocols).toEqual(['tasksync.v1']);
  });

  it('keeps query parameters already in the URL', () => {
    const { WebSocket, sockets } = fakeWebSocketClass();
    const client = new WebSocketSyncClient('ws://sync.test/ws?tenant=t1', 'alice', { WebSocket });
    clients.push(client);
    client.connect();
    expect(lastSocket(sockets).query).toEqual({ tenant: 't1', user_id: 'alice' });
  });

  it('opens a single socket however often connect() is called', () => {
    const { client, sockets, socket } = setup();
    client.connect();
    client.connect();
    socket().accept();
    client.connect();
    expect(sockets).toHaveLength(1);
  });

  it('uses the global WebSocket by default and explains how to supply one where there is none', () => {
    const { WebSocket, sockets } = fakeWebSocketClass();
    vi.stubGlobal('WebSocket', WebSocket);
    const client = new WebSocketSyncClient(URL_, 'alice');
    clients.push(client);
    client.connect();
    expect(sockets).toHaveLength(1);
    vi.stubGlobal('WebSocket', undefined);
    expect(() => new WebSocketSyncClient(URL_, 'alice')).toThrow(/options\.WebSocket/);
    vi.unstubAllGlobals();
  });
});

describe('reconnecting with backoff', () => {
  /** Fails the current socket and returns how long the client waited before the next one. */
  async function failAndMeasure(sockets: FakeWebSocket[]): Promise<number> {
    const before = sockets.length;
    lastSocket(sockets).fail();
    let waited = 0;
    while (sockets.length === before) {
      await advance(100);
      waited += 100;
      if (waited > 60_000) throw new Error('no reconnect within 60 s');
    }
    return waited;
  }

  it('waits exactly 1, 2, 4, 8, 16, 30, 30, ... seconds, then gives up after 10 attempts', async () => {
    const { client, sockets } = setup();
    client.connect();
    lastSocket(sockets).accept();
    const delays: number[] = [];
    const retryCounts: number[] = [];
    for (let attempt = 1; attempt <= 10; attempt += 1) {
      delays.push(await failAndMeasure(sockets));
      retryCounts.push(client.retryCount);
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]);
    expect(retryCounts).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(client.status).toBe('connecting');

    lastSocket(sockets).fail();
    expect(client.status).toBe('error');
    expect(client.getSnapshot()).toMatchObject({ error: 'retries_exhausted', retryCount: 10 });
    await advance(10 * 60_000);
    expect(sockets).toHaveLength(11);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('waits the exact nominal delay, not a moment less', async () => {
    const { client, sockets } = setup();
    client.connect();
    lastSocket(sockets).accept();
    lastSocket(sockets).fail();
    await advance(999);
    expect(sockets).toHaveLength(1);
    await advance(1);
    expect(sockets).toHaveLength(2);
  });

  it('honours custom delays, cap and attempt limit', async () => {
    const { client, sockets } = setup({ initialDelayMs: 500, maxDelayMs: 3000, maxAttempts: 4 });
    client.connect();
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 4; attempt += 1) delays.push(await failAndMeasure(sockets));
    expect(delays).toEqual([500, 1000, 2000, 3000]);
    lastSocket(sockets).fail();
    expect(client.getSnapshot()).toMatchObject({ status: 'error', error: 'retries_exhausted' });
  });

  it('jitters each delay within ±20% by default', async () => {
    const { client, sockets } = setup({ random: () => 0 });
    client.connect();
    expect([await failAndMeasure(sockets), await failAndMeasure(sockets)]).toEqual([800, 1600]);
    const high = setup({ random: () => 0.99 });
    high.client.connect();
    expect(await failAndMeasure(high.sockets)).toBe(1200);
  });

  it('applies a custom jitter', async () => {
    const { client, sockets } = setup({ random: () => 0, jitter: 0.5 });
    client.connect();
    expect(await failAndMeasure(sockets)).toBe(500);
  });

  it('starts counting again after a successful reconnect', async () => {
    const { client, sockets } = setup();
    client.connect();
    lastSocket(sockets).accept();
    expect([await failAndMeasure(sockets), await failAndMeasure(sockets), await failAndMeasure(sockets)]).toEqual([1000, 2000, 4000]);
    lastSocket(sockets).accept();
    expect(client.getSnapshot()).toMatchObject({ status: 'connected', retryCount: 0 });
    expect(await failAndMeasure(sockets)).toBe(1000);
  });

  it('counts a socket that opened but never got its connected frame as a failed attempt', async () => {
    const { client, sockets } = setup();
    client.connect();
    lastSocket(sockets).accept();
    await failAndMeasure(sockets);
    lastSocket(sockets).open();
    lastSocket(sockets).serverClose(1011);
    await advance(2000);
    expect(lastSocket(sockets).query).toMatchObject({ reconnect: '1', attempts: '1' });
  });

  it('retry() after giving up reconnects at once with a fresh counter', async () => {
    const { client, sockets, socket } = setup({ maxAttempts: 2 });
    client.connect();
    socket().accept();
    await failAndMeasure(sockets);
    await failAndMeasure(sockets);
    socket().fail();
    expect(client.status).toBe('error');

    client.retry();
    expect(client.getSnapshot()).toMatchObject({ status: 'connecting', retryCount: 0, error: null });
    expect(sockets).toHaveLength(4);
    expect(socket().query).toMatchObject({ reconnect: '1', attempts: '0' });
    expect(await failAndMeasure(sockets)).toBe(1000);
    socket().accept();
    expect(client.status).toBe('connected');
  });

  it('retry() during a backoff wait connects now', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().fail();
    client.retry();
    expect(sockets).toHaveLength(2);
    // Long enough for any forgotten backoff timer, shorter than the 50 s handshake watchdog.
    await advance(30_000);
    expect(sockets).toHaveLength(2);
  });

  it('retry() is a no-op while a socket is open or opening', () => {
    const { client, sockets, socket } = setup();
    client.connect();
    client.retry();
    socket().accept();
    client.retry();
    expect(sockets).toHaveLength(1);
    expect(client.status).toBe('connected');
  });
});

describe('handshake parameters', () => {
  it('reports failed attempts of a first connection without claiming a reconnect', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().fail();
    await advance(1000);
    expect(socket().query).toEqual({ user_id: 'alice', attempts: '1' });
    socket().fail();
    await advance(2000);
    expect(socket().query).toEqual({ user_id: 'alice', attempts: '2' });
    expect(sockets).toHaveLength(3);
  });

  it('marks handshakes that replace a lost connection with reconnect=1 and the failed attempts before them', async () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept({ seq: 3, epoch: 'e1' });
    socket().fail();
    await advance(1000);
    expect(socket().query).toEqual({ user_id: 'alice', since: '3', epoch: 'e1', reconnect: '1', attempts: '0' });
    socket().fail();
    await advance(2000);
    expect(socket().query).toMatchObject({ reconnect: '1', attempts: '1' });
    socket().fail();
    await advance(4000);
    expect(socket().query).toMatchObject({ reconnect: '1', attempts: '2' });
  });

  it('does not claim a reconnect after disconnect() and connect()', () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept();
    client.disconnect();
    client.connect();
    expect(socket().query).not.toHaveProperty('reconnect');
  });
});

describe('state transitions', () => {
  it('goes through connecting, connected, connecting (lost), connected, error', async () => {
    const { client, socket, statuses } = setup({ maxAttempts: 1 });
    client.connect();
    socket().accept();
    socket().serverClose(1011);
    await advance(1000);
    socket().accept();
    socket().serverClose(1013);
    await advance(1000);
    socket().fail();
    expect(statuses).toEqual(['connecting', 'connected', 'connecting', 'connected', 'connecting', 'error']);
  });

  it('disconnect() closes the socket with 1000 and leaves nothing scheduled', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    const open = socket();
    client.disconnect();
    expect(open.closedByClient).toEqual([{ code: 1000, reason: 'client disconnect' }]);
    expect(client.status).toBe('disconnected');
    expect(vi.getTimerCount()).toBe(0);
    await advance(120_000);
    expect(sockets).toHaveLength(1);
  });

  it('disconnect() during a backoff wait cancels the retry', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().fail();
    client.disconnect();
    await advance(60_000);
    expect(sockets).toHaveLength(1);
    expect(client.getSnapshot()).toMatchObject({ status: 'disconnected', retryCount: 0 });
  });

  it('ignores events of a socket it let go', () => {
    const { client, socket } = setup();
    const listener = vi.fn();
    client.addMessageListener(listener);
    client.connect();
    const first = socket();
    first.accept();
    client.disconnect();
    first.receive(taskUpdate(1));
    first.serverClose(1011);
    expect(listener).not.toHaveBeenCalled();
    expect(client.status).toBe('disconnected');
  });

  it('notifies state subscribers only on changes and lets them unsubscribe', () => {
    const { client, socket } = setup();
    const onChange = vi.fn();
    const unsubscribe = client.subscribe(onChange);
    client.connect();
    const snapshot = client.getSnapshot();
    socket().open();
    expect(client.getSnapshot()).toBe(snapshot);
    expect(onChange).toHaveBeenCalledTimes(1);
    unsubscribe();
    socket().receive({ type: 'connected', user_id: 'alice' });
    expect(onChange).toHaveBeenCalledTimes(1);
  });
});

describe('one tab among several', () => {
  it('delivers each event once, dropping what a takeover replays that the tab already has', () => {
    const { client, socket } = setup();
    const seqs: (number | undefined)[] = [];
    client.addMessageListener((message) => {
      if (message.type === 'task_update') seqs.push(message.seq);
    });
    client.connect();
    socket().accept({ seq: 0 });
    for (const seq of [1, 2, 3, 2, 3, 4]) socket().receive(taskUpdate(seq));
    expect(seqs).toEqual([1, 2, 3, 4]);
  });

  it('asks for a refetch when offsets skip some events, and delivers the event all the same', () => {
    const { client, socket } = setup();
    const onResync = vi.fn();
    const seqs: (number | undefined)[] = [];
    client.onResyncRequired(onResync);
    client.addMessageListener((message) => {
      if (message.type === 'task_update') seqs.push(message.seq);
    });
    client.connect();
    socket().accept({ seq: 4 });
    socket().receive(taskUpdate(7));
    expect(onResync).toHaveBeenCalledExactlyOnceWith({ reason: 'missed_events', seq: 6, epoch: 'e1' });
    expect(seqs).toEqual([7]);
    expect(client.resumePosition).toEqual({ seq: 7, epoch: 'e1' });
  });

  it("makes operation ids of its own and does not notify for an event its own operation caused", () => {
    const { client, socket } = setup();
    const deliveries: [string | undefined, boolean][] = [];
    client.addMessageListener((message, { notify }) => {
      if (message.type === 'task_update') deliveries.push([message.op_id, notify]);
    });
    const mine = client.createOperationId();
    expect(client.createOperationId()).not.toBe(mine);
    expect(mine).toMatch(/^[0-9a-z]{8}\.\d+$/);
    client.connect();
    socket().accept();
    socket().receive(taskUpdate(1, { op_id: mine }));
    socket().receive(taskUpdate(2));
    socket().receive(taskUpdate(3, { op_id: 'another-tab.1' }));
    expect(deliveries).toEqual([
      [mine, false],
      [undefined, true],
      ['another-tab.1', true],
    ]);
  });

  it('keeps a socket of its own with a WebSocket class of the app, or shareConnection: false', () => {
    expect(setup().client.sharing).toBe('off');
    const { WebSocket } = fakeWebSocketClass();
    vi.stubGlobal('WebSocket', WebSocket);
    const unshared = new WebSocketSyncClient(URL_, 'alice', { shareConnection: false });
    clients.push(unshared);
    unshared.connect();
    expect(unshared.sharing).toBe('off');
    vi.unstubAllGlobals();
  });
});

describe('frames', () => {
  it('delivers task_update and ping to message listeners', () => {
    const { client, socket } = setup();
    const received: WebSocketMessage[] = [];
    client.addMessageListener((message) => received.push(message));
    client.connect();
    socket().accept();
    socket().receive(taskUpdate(1));
    socket().receive({ type: 'ping', timestamp: '2025-12-31T12:00:25Z' });
    expect(received).toEqual([
      expect.objectContaining({ type: 'task_update', event: 'task.updated', seq: 1, id: 'evt-1' }),
      { type: 'ping', timestamp: '2025-12-31T12:00:25Z' },
    ]);
  });

  it('answers ping with pong', () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept();
    socket().receive({ type: 'ping', timestamp: null });
    expect(socket().sent).toEqual([{ type: 'pong' }]);
  });

  it('does not pass connected, resync_required or error frames to message listeners', () => {
    const { client, socket } = setup();
    const listener = vi.fn();
    const onConnected = vi.fn();
    const onServerError = vi.fn();
    client.addMessageListener(listener);
    client.on('connected', onConnected);
    client.on('server_error', onServerError);
    client.connect();
    socket().accept();
    socket().receive({ type: 'resync_required', reason: 'history_gap', seq: 5, epoch: 'e1' });
    socket().receive({ type: 'error', code: 'unknown_type', message: 'nope' });
    expect(listener).not.toHaveBeenCalled();
    expect(onConnected).toHaveBeenCalledWith(expect.objectContaining({ type: 'connected', user_id: 'alice' }));
    expect(onServerError).toHaveBeenCalledWith({ type: 'error', code: 'unknown_type', message: 'nope' });
    expect(client.status).toBe('connected');
  });

  it('counts and drops malformed frames without throwing or disconnecting', () => {
    const { client, socket } = setup();
    const listener = vi.fn();
    client.addMessageListener(listener);
    client.connect();
    socket().accept();
    const garbage = [
      '{not json',
      JSON.stringify({ type: 'task_update', event: 'task.created', task: 'nope', timestamp: 'x' }),
      JSON.stringify({ type: 'task_update', event: 'task.exploded', task: { id: 1 }, timestamp: 'x' }),
      JSON.stringify({ type: 'hello' }),
      JSON.stringify([1, 2, 3]),
      new ArrayBuffer(8),
    ];
    for (const frame of garbage) expect(() => socket().receive(frame)).not.toThrow();
    expect(client.stats).toEqual({ framesReceived: 7, malformedFrames: 6 });
    expect(listener).not.toHaveBeenCalled();
    expect(client.status).toBe('connected');
    socket().receive(taskUpdate(1));
    expect(listener).toHaveBeenCalledTimes(1);
  });

  it('stops calling a listener once removed, by either API', () => {
    const { client, socket } = setup();
    const removed = vi.fn();
    const unsubscribed = vi.fn();
    const kept = vi.fn();
    client.addMessageListener(removed);
    const unsubscribe = client.addMessageListener(unsubscribed);
    client.addMessageListener(kept);
    client.connect();
    socket().accept();
    socket().receive(taskUpdate(1));
    client.removeMessageListener(removed);
    unsubscribe();
    socket().receive(taskUpdate(2));
    expect(removed).toHaveBeenCalledTimes(1);
    expect(unsubscribed).toHaveBeenCalledTimes(1);
    expect(kept).toHaveBeenCalledTimes(2);
  });

  it('keeps delivering to other listeners when one throws, and surfaces the error asynchronously', () => {
    const rethrown: (() => void)[] = [];
    vi.spyOn(globalThis, 'queueMicrotask').mockImplementation((callback) => void rethrown.push(callback));
    const { client, socket } = setup();
    const failure = new Error('listener bug');
    const after = vi.fn();
    client.addMessageListener(() => {
      throw failure;
    });
    client.addMessageListener(after);
    client.connect();
    socket().accept();
    socket().receive(taskUpdate(1));
    expect(after).toHaveBeenCalledTimes(1);
    expect(rethrown).toHaveLength(1);
    expect(() => rethrown[0]?.()).toThrow(failure);
  });
});

describe('heartbeat watchdog', () => {
  it('declares the socket dead after twice the announced interval without a frame', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept({ heartbeat_interval: 10 });
    const first = socket();
    await advance(15_000);
    first.receive({ type: 'ping', timestamp: null });
    await advance(19_999);
    expect(first.closedByClient).toEqual([]);
    await advance(1);
    expect(first.closedByClient).toEqual([{ code: HEARTBEAT_TIMEOUT_CLOSE_CODE, reason: 'heartbeat timeout' }]);
    expect(client.getSnapshot()).toMatchObject({ status: 'connecting', retryCount: 1 });
    await advance(1000);
    expect(sockets).toHaveLength(2);
    expect(socket().query).toMatchObject({ reconnect: '1' });
  });

  it('resets on any frame, even a malformed one', async () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept({ heartbeat_interval: 5 });
    for (let i = 0; i < 5; i += 1) {
      await advance(9_000);
      socket().receive('garbage');
    }
    expect(socket().closedByClient).toEqual([]);
    expect(client.status).toBe('connected');
  });

  it('gives frames queued behind a late watchdog (a throttled tab) a second before giving up', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept({ heartbeat_interval: 10 });
    const first = socket();
    // The tab's timers were held back: when the watchdog finally runs, a minute has passed.
    vi.setSystemTime(Date.now() + 60_000);
    await advance(20_000);
    expect(first.closedByClient).toEqual([]);
    first.receive({ type: 'ping', timestamp: null });
    await advance(19_999);
    expect(first.closedByClient).toEqual([]);
    expect(client.status).toBe('connected');
    // On time this time: no frame for twice the interval is a dead socket.
    await advance(1);
    expect(first.closedByClient).toEqual([{ code: HEARTBEAT_TIMEOUT_CLOSE_CODE, reason: 'heartbeat timeout' }]);
    expect(sockets).toHaveLength(1);
  });

  it('declares a late watchdog dead after the grace when no frame was waiting', async () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept({ heartbeat_interval: 10 });
    vi.setSystemTime(Date.now() + 60_000);
    await advance(20_000);
    expect(socket().closedByClient).toEqual([]);
    await advance(1_000);
    expect(socket().closedByClient).toEqual([{ code: HEARTBEAT_TIMEOUT_CLOSE_CODE, reason: 'heartbeat timeout' }]);
    expect(client.status).toBe('connecting');
  });

  it('uses the configured default before the server announces an interval', async () => {
    const { client, sockets, socket } = setup({ heartbeatIntervalMs: 1_000 });
    client.connect();
    socket().open();
    await advance(1_999);
    expect(sockets).toHaveLength(1);
    await advance(1);
    expect(socket().closedByClient).toHaveLength(1);
    await advance(1_000);
    expect(sockets).toHaveLength(2);
    expect(socket().query).toMatchObject({ attempts: '1' });
  });
});

describe('resume', () => {
  it('remembers the last seq/epoch and resumes from it', async () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept({ seq: 5, epoch: 'e1' });
    expect(client.resumePosition).toEqual({ seq: 5, epoch: 'e1' });
    socket().receive(taskUpdate(6));
    socket().receive(taskUpdate(7));
    expect(client.resumePosition).toEqual({ seq: 7, epoch: 'e1' });
    socket().serverClose(1006);
    await advance(1000);
    expect(socket().query).toMatchObject({ since: '7', epoch: 'e1' });
  });

  it('keeps its own position on a successful resume until the replay arrives', () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept({ seq: 7, epoch: 'e1' });
    socket().serverClose(1012);
    vi.advanceTimersByTime(1000);
    socket().accept({ seq: 10, epoch: 'e1', resumed: true });
    expect(client.resumePosition).toEqual({ seq: 7, epoch: 'e1' });
    socket().receive(taskUpdate(8));
    expect(client.resumePosition).toEqual({ seq: 8, epoch: 'e1' });
  });

  it('never moves backwards within an epoch, but follows a new epoch', () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept({ seq: 0, epoch: 'e1' });
    socket().receive(taskUpdate(9));
    socket().receive(taskUpdate(4));
    expect(client.resumePosition).toEqual({ seq: 9, epoch: 'e1' });
    socket().receive(taskUpdate(2, { epoch: 'e2' }));
    expect(client.resumePosition).toEqual({ seq: 2, epoch: 'e2' });
  });

  it('on resync_required asks the app to refetch and continues from the given offset', async () => {
    const { client, socket } = setup();
    const onResync = vi.fn();
    client.onResyncRequired(onResync);
    client.connect();
    socket().accept({ seq: 3, epoch: 'e1' });
    socket().serverClose(1006);
    await advance(1000);
    socket().accept({ seq: 97, epoch: 'e2', resumed: false });
    socket().receive({ type: 'resync_required', reason: 'epoch_changed', seq: 97, epoch: 'e2' });
    expect(onResync).toHaveBeenCalledExactlyOnceWith({ type: 'resync_required', reason: 'epoch_changed', seq: 97, epoch: 'e2' });
    expect(client.resumePosition).toEqual({ seq: 97, epoch: 'e2' });
  });

  it('asks for a refetch after reconnecting to a server that does not announce resume', async () => {
    const { client, socket } = setup();
    const onResync = vi.fn();
    client.onResyncRequired(onResync);
    client.connect();
    socket().receive({ type: 'connected', user_id: 'alice' });
    expect(onResync).not.toHaveBeenCalled();
    socket().serverClose(1006);
    await advance(1000);
    socket().open();
    socket().receive({ type: 'connected', user_id: 'alice' });
    expect(onResync).toHaveBeenCalledExactlyOnceWith({ reason: 'resume_unsupported' });
  });

  it('does not ask for a refetch when the server resumed', async () => {
    const { client, socket } = setup();
    const onResync = vi.fn();
    client.onResyncRequired(onResync);
    client.connect();
    socket().accept({ seq: 1 });
    socket().serverClose(1006);
    await advance(1000);
    socket().accept({ seq: 1, resumed: true });
    expect(onResync).not.toHaveBeenCalled();
  });
});

describe('close codes', () => {
  it.each([
    [1000, 'done'],
    [1003, 'stop'],
    [1006, 'backoff'],
    [1008, 'stop'],
    [1009, 'stop'],
    [1011, 'backoff'],
    [1012, 'restart'],
    [1013, 'backoff'],
    [4001, 'reauthenticate'],
    [4003, 'stop'],
    [4029, 'backoff'],
  ])('maps %i to %s', (code, action) => {
    expect(closeAction(code)).toBe(action);
  });

  it('1000: stays disconnected', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    socket().serverClose(1000);
    expect(client.getSnapshot()).toMatchObject({ status: 'disconnected', error: null, lastCloseCode: 1000 });
    await advance(120_000);
    expect(sockets).toHaveLength(1);
  });

  it.each([
    [4003, 'forbidden'],
    [1008, 'rejected'],
    [1003, 'rejected'],
    [1009, 'rejected'],
  ])('%i: stops with error %s and never retries by itself', async (code, reason) => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    socket().serverClose(code);
    expect(client.getSnapshot()).toMatchObject({ status: 'error', error: reason, lastCloseCode: code });
    window.dispatchEvent(new Event('online'));
    setVisibility('visible');
    await advance(120_000);
    expect(sockets).toHaveLength(1);
  });

  it.each([1006, 1011, 1013, 4029, 1001])('%i: reconnects with backoff', async (code) => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    socket().serverClose(code);
    expect(client.getSnapshot()).toMatchObject({ status: 'connecting', retryCount: 1 });
    await advance(999);
    expect(sockets).toHaveLength(1);
    await advance(1);
    expect(sockets).toHaveLength(2);
  });

  it('1012: reconnects at once with up to a second of jitter and resumes', async () => {
    const { client, sockets, socket } = setup({ random: () => 0.3 });
    client.connect();
    socket().accept({ seq: 12, epoch: 'e1' });
    socket().serverClose(1012);
    expect(client.getSnapshot()).toMatchObject({ status: 'connecting', retryCount: 0 });
    await advance(299);
    expect(sockets).toHaveLength(1);
    await advance(1);
    expect(sockets).toHaveLength(2);
    expect(socket().query).toMatchObject({ since: '12', epoch: 'e1', reconnect: '1', attempts: '0' });
  });

  it('1012 with a custom restart jitter', async () => {
    const { client, sockets, socket } = setup({ random: () => 0.5, restartJitterMs: 200 });
    client.connect();
    socket().accept();
    socket().serverClose(1012);
    await advance(100);
    expect(sockets).toHaveLength(2);
  });

  it('1012: while the service restarts, retries at a short pace that does not use up the attempts, then backs off', async () => {
    const { client, sockets, socket } = setup({ random: () => 0.5, maxAttempts: 2, restartWindowMs: 10_000 });
    client.connect();
    socket().accept({ seq: 3, epoch: 'e1' });
    socket().serverClose(1012);
    await advance(500);
    expect(sockets).toHaveLength(2);
    // The service is not listening yet: a retry every second (0.5 to 1.5 s), far past maxAttempts.
    for (let retry = 1; retry <= 8; retry += 1) {
      socket().fail();
      expect(client.getSnapshot()).toMatchObject({ status: 'connecting', retryCount: retry });
      await advance(1_000);
      expect(sockets).toHaveLength(retry + 2);
    }
    // Past the restart window the backoff takes over where it stands: 1 s, 2 s, then it stops.
    vi.setSystemTime(Date.now() + 10_000);
    socket().fail();
    await advance(1_000);
    socket().fail();
    await advance(1_999);
    expect(sockets).toHaveLength(11);
    await advance(1);
    socket().fail();
    expect(client.getSnapshot()).toMatchObject({ status: 'error', error: 'retries_exhausted' });
  });

  it('1012: the service, back after many short retries, is resumed from', async () => {
    const { client, sockets, socket } = setup({ random: () => 0.9 });
    client.connect();
    socket().accept({ seq: 3, epoch: 'e1' });
    socket().serverClose(1012);
    for (let retry = 0; retry < 20; retry += 1) {
      await advance(1_400);
      socket().fail();
    }
    await advance(1_400);
    socket().accept({ seq: 3, epoch: 'e1', resumed: true });
    expect(client.getSnapshot()).toMatchObject({ status: 'connected', retryCount: 0 });
    expect(socket().query).toMatchObject({ since: '3', epoch: 'e1', reconnect: '1', attempts: '20' });
    expect(sockets).toHaveLength(22);
  });

  it('1012 on a handshake that never completed is a failure, not a restart', () => {
    const { client, socket } = setup();
    client.connect();
    socket().open();
    socket().serverClose(1012);
    expect(client.retryCount).toBe(1);
  });

  it('4001: fetches a new token once and reconnects at once; a second 4001 stops', async () => {
    const getToken = vi.fn().mockReturnValueOnce('old').mockReturnValueOnce('new').mockReturnValue('newer');
    const { client, sockets, socket } = setup({ getToken });
    client.connect();
    expect(socket().protocols).toEqual(['tasksync.v1', 'bearer.old']);
    socket().open();
    socket().serverClose(4001);
    expect(getToken).toHaveBeenLastCalledWith({ reason: 'rejected' });
    expect(sockets).toHaveLength(2);
    expect(socket().protocols).toEqual(['tasksync.v1', 'bearer.new']);
    socket().open();
    socket().serverClose(4001);
    expect(client.getSnapshot()).toMatchObject({ status: 'error', error: 'unauthenticated', lastCloseCode: 4001 });
    await advance(120_000);
    expect(sockets).toHaveLength(2);
  });

  it('4001 after a successful reconnect with a new token is handled afresh', () => {
    const getToken = vi.fn(() => 'token');
    const { client, sockets, socket } = setup({ getToken });
    client.connect();
    socket().accept();
    socket().serverClose(4001);
    socket().accept();
    socket().serverClose(4001);
    expect(sockets).toHaveLength(3);
    expect(client.status).toBe('connecting');
  });

  it('4001 without getToken stops at once', () => {
    const { client, socket } = setup();
    client.connect();
    socket().accept();
    socket().serverClose(4001);
    expect(client.getSnapshot()).toMatchObject({ status: 'error', error: 'unauthenticated' });
  });
});

describe('tokens', () => {
  it('waits for an asynchronous getToken before opening the socket', async () => {
    // Assigned when the client asks for its token; calling it before then fails the test.
    let resolve!: (token: string) => void;
    const { client, sockets, socket } = setup({ getToken: () => new Promise<string>((r) => (resolve = r)) });
    client.connect();
    expect(client.status).toBe('connecting');
    expect(sockets).toHaveLength(0);
    resolve('abc.def-ghi_jkl');
    await advance(0);
    expect(socket().protocols).toEqual(['tasksync.v1', 'bearer.abc.def-ghi_jkl']);
  });

  it('asks with reason "connect" before each handshake', async () => {
    const getToken = vi.fn(() => 't');
    const { client, socket } = setup({ getToken });
    client.connect();
    socket().accept();
    socket().serverClose(1006);
    await advance(1000);
    expect(getToken.mock.calls).toEqual([[{ reason: 'connect' }], [{ reason: 'connect' }]]);
  });

  it('connects without a token when getToken returns none', () => {
    const { client, socket } = setup({ getToken: () => null });
    client.connect();
    expect(socket().protocols).toEqual(['tasksync.v1']);
  });

  it('sends a token that is no valid subprotocol value in the first frame instead', () => {
    const { client, socket } = setup({ getToken: () => 'b64/with+slash==' });
    client.connect();
    expect(socket().protocols).toEqual(['tasksync.v1']);
    socket().open();
    expect(socket().sent).toEqual([{ type: 'auth', token: 'b64/with+slash==' }]);
  });

  it('backs off when getToken fails, synchronously or not', async () => {
    const getToken = vi
      .fn()
      .mockImplementationOnce(() => {
        throw new Error('signed out');
      })
      .mockRejectedValueOnce(new Error('token service down'))
      .mockReturnValue('t');
    const { client, sockets, socket } = setup({ getToken });
    client.connect();
    expect(client.getSnapshot()).toMatchObject({ status: 'connecting', retryCount: 1 });
    await advance(1000);
    expect(client.retryCount).toBe(2);
    await advance(2000);
    expect(sockets).toHaveLength(1);
    expect(socket().query).toMatchObject({ attempts: '2' });
  });

  it('does not open a socket when disconnected while the token was pending', async () => {
    // Assigned when the client asks for its token; calling it before then fails the test.
    let resolve!: (token: string) => void;
    const { client, sockets } = setup({ getToken: () => new Promise<string>((r) => (resolve = r)) });
    client.connect();
    client.disconnect();
    resolve('t');
    await advance(0);
    expect(sockets).toHaveLength(0);
    expect(client.status).toBe('disconnected');
  });

  it('refreshes in-band before the token expires', async () => {
    const now = Date.now();
    const getToken = vi
      .fn()
      .mockReturnValueOnce({ token: 'first', expiresAt: now + 120_000 })
      .mockReturnValueOnce({ token: 'second', expiresAt: new Date(now + 240_000) });
    const { client, socket } = setup({ getToken });
    client.connect();
    socket().accept({ heartbeat_interval: 3600 });
    await advance(89_999);
    expect(socket().sent).toEqual([]);
    await advance(1);
    expect(getToken).toHaveBeenLastCalledWith({ reason: 'refresh' });
    expect(socket().sent).toEqual([{ type: 'auth', token: 'second' }]);
    expect(getToken).toHaveBeenCalledTimes(2);
  });

  it("reads the expiry of a JWT from its exp claim", async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const payload = btoa(JSON.stringify({ sub: 'alice', exp })).replace(/=+$/, '');
    const jwt = `eyJhbGciOiJIUzI1NiJ9.${payload}.c2ln`;
    const getToken = vi.fn(() => jwt);
    const { client, socket } = setup({ getToken, tokenRefreshLeadMs: 60_000 });
    client.connect();
    socket().accept({ heartbeat_interval: 3600 });
    await advance(539_000);
    expect(getToken).toHaveBeenCalledTimes(1);
    await advance(1_000);
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(socket().sent).toEqual([{ type: 'auth', token: jwt }]);
  });

  it('refreshToken() sends a new token on the live connection at once', async () => {
    const getToken = vi.fn().mockReturnValueOnce('a').mockResolvedValueOnce('b');
    const { client, socket } = setup({ getToken });
    client.connect();
    socket().accept();
    await client.refreshToken();
    expect(socket().sent).toEqual([{ type: 'auth', token: 'b' }]);
  });

  it('refreshToken() without a live connection sends nothing', async () => {
    const getToken = vi.fn(() => 'a');
    const { client, socket } = setup({ getToken });
    client.connect();
    await client.refreshToken();
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(socket().sent).toEqual([]);
  });
});

describe('browser signals', () => {
  it('reconnects at once when the browser comes back online during a backoff wait', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    socket().fail();
    await advance(500);
    expect(sockets).toHaveLength(1);
    window.dispatchEvent(new Event('online'));
    expect(sockets).toHaveLength(2);
    await advance(30_000);
    expect(sockets).toHaveLength(2);
  });

  it('starts over when the browser comes back online after the client gave up', () => {
    const { client, sockets, socket } = setup({ maxAttempts: 0 });
    client.connect();
    socket().fail();
    expect(client.getSnapshot()).toMatchObject({ status: 'error', error: 'retries_exhausted' });
    window.dispatchEvent(new Event('online'));
    expect(sockets).toHaveLength(2);
    expect(client.status).toBe('connecting');
  });

  it('reconnects when a hidden tab becomes visible after its socket died', () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    setVisibility('hidden');
    socket().fail();
    setVisibility('hidden');
    expect(sockets).toHaveLength(1);
    setVisibility('visible');
    expect(sockets).toHaveLength(2);
  });

  it('replaces a socket that went silent while the tab was hidden, after a grace for queued frames', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept({ heartbeat_interval: 10 });
    const silent = socket();
    // The watchdog timer never fired: background tabs get their timers throttled.
    vi.setSystemTime(Date.now() + 60_000);
    setVisibility('visible');
    await advance(999);
    expect(silent.closedByClient).toEqual([]);
    await advance(1);
    expect(silent.closedByClient).toEqual([{ code: HEARTBEAT_TIMEOUT_CLOSE_CODE, reason: 'heartbeat timeout' }]);
    await advance(1_000);
    expect(sockets).toHaveLength(2);
  });

  it('keeps a socket whose frames were only waiting behind the wake-up of a frozen tab', async () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept({ heartbeat_interval: 10 });
    vi.setSystemTime(Date.now() + 60_000);
    setVisibility('visible');
    socket().receive({ type: 'ping', timestamp: null });
    await advance(5_000);
    expect(sockets).toHaveLength(1);
    expect(client.status).toBe('connected');
  });

  it('leaves a healthy connection alone', () => {
    const { client, sockets, socket } = setup();
    client.connect();
    socket().accept();
    window.dispatchEvent(new Event('online'));
    setVisibility('visible');
    expect(sockets).toHaveLength(1);
    expect(client.status).toBe('connected');
  });

  it('stops listening after disconnect()', () => {
    const { client, sockets, socket } = setup({ maxAttempts: 0 });
    client.connect();
    socket().fail();
    client.disconnect();
    window.dispatchEvent(new Event('online'));
    expect(sockets).toHaveLength(1);
  });
});
