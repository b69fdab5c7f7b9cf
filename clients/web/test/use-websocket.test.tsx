import { act, render, renderHook } from '@testing-library/react';
import { StrictMode, useEffect } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';

import type { WebSocketMessage } from '../src/protocol.js';
import { useWebSocket, type UseWebSocketOptions } from '../src/use-websocket.js';
import { fakeWebSocketClass, lastSocket } from './fake-websocket.js';

const URL_ = 'ws://hook.test/ws';
let userCounter = 0;

/** A user id no other test uses: clients are shared per (url, user) across the whole module. */
function freshUser(): string {
  userCounter += 1;
  return `user-${userCounter}`;
}

function setup() {
  const { WebSocket, sockets } = fakeWebSocketClass();
  const options: UseWebSocketOptions = { url: URL_, WebSocket, random: () => 0.5 };
  return { options, sockets };
}

/** Lets the deferred teardown of released clients run. */
async function flushMicrotasks(): Promise<void> {
  await act(async () => {
    await Promise.resolve();
  });
}

const ping = { type: 'ping', timestamp: null } as const;

afterEach(() => {
  vi.useRealTimers();
});

describe('useWebSocket', () => {
  it('connects on mount and reports the connection state', () => {
    const { options, sockets } = setup();
    const user = freshUser();
    const { result, unmount } = renderHook(() => useWebSocket(user, options));
    expect(sockets).toHaveLength(1);
    expect(result.current).toMatchObject({ status: 'connecting', isConnected: false, retryCount: 0, error: null });
    act(() => lastSocket(sockets).accept());
    expect(result.current).toMatchObject({ status: 'connected', isConnected: true });
    unmount();
  });

  it('disconnects on unmount', async () => {
    const { options, sockets } = setup();
    const user = freshUser();
    const { unmount } = renderHook(() => useWebSocket(user, options));
    act(() => lastSocket(sockets).accept());
    unmount();
    await flushMicrotasks();
    expect(lastSocket(sockets).closedByClient).toEqual([{ code: 1000, reason: 'client disconnect' }]);
  });

  it('opens exactly one socket under StrictMode and closes it on unmount', async () => {
    const { options, sockets } = setup();
    const user = freshUser();
    const effects: string[] = [];
    function Status() {
      const { status } = useWebSocket(user, options);
      useEffect(() => {
        effects.push('mount');
        return () => void effects.push('unmount');
      }, []);
      return <output>{status}</output>;
    }
    const { container, unmount } = render(
      <StrictMode>
        <Status />
      </StrictMode>,
    );
    await flushMicrotasks();
    // The double mount did happen, and still only one socket was opened.
    expect(effects).toEqual(['mount', 'unmount', 'mount']);
    expect(sockets).toHaveLength(1);
    act(() => lastSocket(sockets).accept());
    expect(container.textContent).toBe('connected');
    expect(lastSocket(sockets).closedByClient).toEqual([]);
    unmount();
    await flushMicrotasks();
    expect(sockets).toHaveLength(1);
    expect(lastSocket(sockets).closedByClient).toHaveLength(1);
  });

  it('shares one socket between components of the same user until the last one unmounts', async () => {
    const { options, sockets } = setup();
    const user = freshUser();
    const first = renderHook(() => useWebSocket(user, options));
    const second = renderHook(() => useWebSocket(user, options));
    expect(sockets).toHaveLength(1);
    act(() => lastSocket(sockets).accept());
    expect(second.result.current.isConnected).toBe(true);
    first.unmount();
    await flushMicrotasks();
    expect(lastSocket(sockets).closedByClient).toEqual([]);
    second.unmount();
    await flushMicrotasks();
    expect(lastSocket(sockets).closedByClient).toHaveLength(1);
  });

  it('does nothing without a user', () => {
    const { options, sockets } = setup();
    const { result } = renderHook(() => useWebSocket(null, options));
    expect(sockets).toHaveLength(0);
    expect(result.current).toMatchObject({ status: 'disconnected', client: null });
  });

  it('switches sockets when the user changes', async () => {
    const { options, sockets } = setup();
    const [alice, bob] = [freshUser(), freshUser()];
    const { result, rerender, unmount } = renderHook(({ user }) => useWebSocket(user, options), { initialProps: { user: alice } });
    act(() => lastSocket(sockets).accept());
    rerender({ user: bob });
    await flushMicrotasks();
    expect(sockets).toHaveLength(2);
    expect(sockets[0]?.closedByClient).toHaveLength(1);
    expect(lastSocket(sockets).query.user_id).toBe(bob);
    expect(result.current).toMatchObject({ status: 'connecting' });
    expect(result.current.client?.userId).toBe(bob);
    unmount();
  });

  it('delivers messages to listeners added in an effect until they are removed', () => {
    const { options, sockets } = setup();
    const user = freshUser();
    const received: WebSocketMessage[] = [];
    const listener = (message: WebSocketMessage) => received.push(message);
    function Consumer({ listen }: { listen: boolean }) {
      const { addListener, removeListener } = useWebSocket(user, options);
      useEffect(() => {
        if (!listen) return undefined;
        addListener(listener);
        return () => removeListener(listener);
      }, [listen, addListener, removeListener]);
      return null;
    }
    const { rerender, unmount } = render(<Consumer listen />);
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).receive(ping));
    rerender(<Consumer listen={false} />);
    act(() => lastSocket(sockets).receive(ping));
    expect(received).toEqual([{ type: 'ping', timestamp: null }]);
    unmount();
  });

  it('shows the retry count while reconnecting and offers retry() after giving up', () => {
    vi.useFakeTimers();
    const { options, sockets } = setup();
    const user = freshUser();
    const { result, unmount } = renderHook(() => useWebSocket(user, { ...options, maxAttempts: 1 }));
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).fail());
    expect(result.current).toMatchObject({ status: 'connecting', retryCount: 1 });
    act(() => {
      vi.advanceTimersByTime(1000);
    });
    act(() => lastSocket(sockets).fail());
    expect(result.current).toMatchObject({ status: 'error', error: 'retries_exhausted' });
    act(() => result.current.retry());
    expect(result.current).toMatchObject({ status: 'connecting', retryCount: 0 });
    expect(sockets).toHaveLength(3);
    unmount();
  });

  it('calls the latest onResyncRequired and getToken', () => {
    const { options, sockets } = setup();
    const user = freshUser();
    const firstResync = vi.fn();
    const latestResync = vi.fn();
    const { rerender, unmount } = renderHook(
      ({ onResyncRequired, token }) => useWebSocket(user, { ...options, onResyncRequired, getToken: () => token }),
      { initialProps: { onResyncRequired: firstResync, token: 'one' } },
    );
    expect(lastSocket(sockets).protocols).toContain('bearer.one');
    rerender({ onResyncRequired: latestResync, token: 'two' });
    act(() => lastSocket(sockets).accept());
    act(() => lastSocket(sockets).receive({ type: 'resync_required', reason: 'history_gap', seq: 3, epoch: 'e1' }));
    expect(firstResync).not.toHaveBeenCalled();
    expect(latestResync).toHaveBeenCalledWith(expect.objectContaining({ reason: 'history_gap' }));
    act(() => lastSocket(sockets).serverClose(4001));
    expect(lastSocket(sockets).protocols).toContain('bearer.two');
    unmount();
  });
});
