/**
 * ConnectionHost, the socket the tabs of a user share, with tabs played by the test: what each tab
 * is sent, which tab shows a notification, where a takeover resumes, and which token the socket
 * gets when several tabs can supply one.
 */

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { ConnectionHost, type HostMessage, type TabMessage } from '../src/connection-host.js';
import { connectionTimings, type ResumePosition } from '../src/socket-connection.js';
import type { ResolvedToken } from '../src/token.js';
import { fakeWebSocketClass, lastSocket } from './fake-websocket.js';

const CONFIG = { url: 'ws://sync.test/ws', userId: 'alice', timings: connectionTimings({}) };

function taskUpdate(seq: number, extra: Record<string, unknown> = {}) {
  return { type: 'task_update', event: 'task.created', task: { id: seq }, timestamp: 't', id: `evt-${seq}`, seq, epoch: 'e1', ...extra };
}

function setup() {
  const { WebSocket, sockets } = fakeWebSocketClass();
  const inbox = new Map<string, HostMessage[]>();
  const gone = new Map<string, () => void>();
  const deliver = (tabId: string, message: HostMessage): void => {
    const messages = inbox.get(tabId) ?? [];
    messages.push(message);
    inbox.set(tabId, messages);
  };
  const host = new ConnectionHost(
    CONFIG,
    {
      toTab: deliver,
      toAll: (message) => {
        for (const tabId of inbox.keys()) deliver(tabId, message);
      },
    },
    {
      id: 'host-1',
      WebSocket,
      watchTab: (tabId, onGone) => {
        gone.set(tabId, onGone);
        return () => gone.delete(tabId);
      },
    },
  );
  // Every tab leaves at the end of the test, and the host closes its socket.
  cleanups.push(() => {
    for (const tab of inbox.keys()) host.receive({ t: 'detach', tab });
  });
  function attach(tab: string, extra: Partial<Extract<TabMessage, { t: 'attach' }>> = {}): void {
    inbox.set(tab, inbox.get(tab) ?? []);
    host.receive({ t: 'attach', tab, config: CONFIG, position: null, focusedAt: 0, tokens: false, ...extra });
  }
  /** The messages of type `type` tab `tab` was sent, in order. */
  function sent<T extends HostMessage['t']>(tab: string, type: T): Extract<HostMessage, { t: T }>[] {
    return (inbox.get(tab) ?? []).filter((message): message is Extract<HostMessage, { t: T }> => message.t === type);
  }
  return { host, sockets, socket: () => lastSocket(sockets), attach, sent, gone };
}

const cleanups: (() => void)[] = [];

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  vi.useRealTimers();
});

describe('tabs', () => {
  it('opens one socket for every tab that attaches and relays each frame to all of them', () => {
    const { sockets, socket, attach, sent } = setup();
    attach('a');
    attach('b');
    socket().accept();
    socket().receive(taskUpdate(1));
    expect(sockets).toHaveLength(1);
    for (const tab of ['a', 'b']) {
      expect(sent(tab, 'frame').map(({ frame }) => frame.type)).toEqual(['connected', 'task_update']);
      expect(sent(tab, 'state').at(-1)?.snapshot.status).toBe('connected');
    }
  });

  it("welcomes a tab that joins a live socket with its state, its connected frame and the socket's position", () => {
    const { socket, attach, sent } = setup();
    attach('a');
    socket().accept({ seq: 4 });
    socket().receive(taskUpdate(5));
    attach('late');
    expect(sent('late', 'welcome')).toEqual([
      {
        t: 'welcome',
        host: 'host-1',
        snapshot: expect.objectContaining({ status: 'connected' }) as unknown,
        connected: expect.objectContaining({ type: 'connected', seq: 4 }) as unknown,
        position: { seq: 5, epoch: 'e1' },
      },
    ]);
  });

  it('closes the socket when the last tab detaches or is gone, and opens one again for the next', () => {
    const { sockets, socket, attach, gone, host } = setup();
    attach('a');
    attach('b');
    socket().accept();
    host.receive({ t: 'detach', tab: 'a' });
    expect(socket().closedByClient).toEqual([]);
    gone.get('b')?.();
    expect(socket().closedByClient).toEqual([{ code: 1000, reason: 'client disconnect' }]);
    attach('c');
    expect(sockets).toHaveLength(2);
  });

  it('resumes a takeover from the oldest position the tabs offer in its epoch before the socket opens', async () => {
    const { socket, sockets, attach, sent, host } = setup();
    const at = (seq: number): ResumePosition => ({ seq, epoch: 'e1' });
    // A tab with a token provider: the socket opens once it has answered.
    attach('a', { position: at(9), tokens: true });
    attach('b', { position: at(7) });
    // A tab still on an older epoch needs a refetch whatever happens; it does not pull the others back.
    attach('c', { position: { seq: 3, epoch: 'e0' } });
    expect(sockets).toHaveLength(0);
    host.receive({ t: 'token', tab: 'a', request: sent('a', 'token?')[0]?.request ?? 0, token: null, failed: false });
    await vi.advanceTimersByTimeAsync(0);
    expect(socket().query).toMatchObject({ since: '7', epoch: 'e1' });
    // The replay moves it forward, and a tab that joins later starts from there.
    socket().accept({ resumed: true });
    socket().receive(taskUpdate(8));
    attach('d');
    expect(sent('d', 'welcome')[0]?.position).toEqual(at(8));
  });

  it('passes a dismissal on to every tab', () => {
    const { attach, sent, host } = setup();
    attach('a');
    attach('b');
    host.receive({ t: 'dismiss', id: 'evt-1' });
    expect(sent('a', 'dismiss')).toEqual([{ t: 'dismiss', id: 'evt-1' }]);
    expect(sent('b', 'dismiss')).toEqual([{ t: 'dismiss', id: 'evt-1' }]);
  });
});

describe('which tab shows a notification', () => {
  it('the most recently focused tab, never the one whose operation caused the event', () => {
    const { socket, attach, sent, host } = setup();
    attach('a', { focusedAt: 100 });
    attach('b', { focusedAt: 300 });
    attach('c', { focusedAt: 200 });
    socket().accept();
    socket().receive(taskUpdate(1));
    host.receive({ t: 'focus', tab: 'a', at: 400 });
    socket().receive(taskUpdate(2));
    socket().receive(taskUpdate(3, { op_id: 'a.1' }));
    socket().receive(taskUpdate(4, { op_id: 'someone-else' }));
    const notified = sent('c', 'frame').filter(({ frame }) => frame.type === 'task_update').map(({ notify }) => notify);
    expect(notified).toEqual(['b', 'a', 'b', 'a']);
    // Every tab is told the same: exactly one of them shows it.
    expect(sent('a', 'frame').map(({ notify }) => notify)).toEqual(sent('c', 'frame').map(({ notify }) => notify));
  });

  it('nobody, when the acting tab is the only one', () => {
    const { socket, attach, sent } = setup();
    attach('a');
    socket().accept();
    socket().receive(taskUpdate(1, { op_id: 'a.7' }));
    expect(sent('a', 'frame').at(-1)?.notify).toBeNull();
  });
});

describe('tokens', () => {
  function token(value: string, expiresAt?: number): ResolvedToken {
    return { token: value, expiresAt };
  }

  /** Two tabs with providers on a live socket that the server then refuses with 4001. */
  async function refusedWithTwoTabs() {
    const tabs = setup();
    const { socket, attach, sent, host } = tabs;
    attach('a', { tokens: true });
    host.receive({ t: 'token', tab: 'a', request: sent('a', 'token?')[0]?.request ?? 0, token: token('first'), failed: false });
    await vi.advanceTimersByTimeAsync(0);
    socket().accept();
    attach('b', { tokens: true });
    attach('c');
    socket().serverClose(4001);
    const ask = (tab: string) => sent(tab, 'token?').at(-1);
    return { ...tabs, ask };
  }

  it('asks every tab with a provider and opens the socket with the token that expires last', async () => {
    const { socket, sockets, sent, host, ask } = await refusedWithTwoTabs();
    expect(ask('a')).toMatchObject({ reason: 'rejected' });
    expect(ask('b')).toMatchObject({ reason: 'rejected', request: ask('a')?.request });
    expect(sent('c', 'token?')).toEqual([]);
    host.receive({ t: 'token', tab: 'b', request: ask('b')?.request ?? 0, token: token('fresher', 2_000), failed: false });
    host.receive({ t: 'token', tab: 'a', request: ask('a')?.request ?? 0, token: token('older', 1_000), failed: false });
    await vi.advanceTimersByTimeAsync(0);
    expect(sockets).toHaveLength(2);
    expect(socket().protocols).toEqual(['tasksync.v1', 'bearer.fresher']);
  });

  it('does not wait long for a tab that does not answer once another has', async () => {
    const { sockets, socket, host, ask } = await refusedWithTwoTabs();
    host.receive({ t: 'token', tab: 'a', request: ask('a')?.request ?? 0, token: token('mine'), failed: false });
    await vi.advanceTimersByTimeAsync(499);
    expect(sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
    expect(socket().protocols).toEqual(['tasksync.v1', 'bearer.mine']);
  });

  it('counts an attempt as failed when every provider failed, and stops waiting for a tab that is gone', async () => {
    const { sockets, attach, sent, host, gone } = setup();
    attach('a', { tokens: true });
    attach('b', { tokens: true });
    host.receive({ t: 'token', tab: 'a', request: sent('a', 'token?')[0]?.request ?? 0, token: null, failed: true });
    gone.get('b')?.();
    await vi.advanceTimersByTimeAsync(0);
    expect(sockets).toHaveLength(0);
    expect(sent('a', 'state').at(-1)?.snapshot).toMatchObject({ status: 'connecting', retryCount: 1 });
  });

  it("sends a tab's refreshed token in-band on the live socket", () => {
    const { socket, attach, host } = setup();
    attach('a');
    socket().accept();
    host.receive({ t: 'auth', token: token('refreshed') });
    expect(socket().sent).toEqual([{ type: 'auth', token: 'refreshed' }]);
  });
});
