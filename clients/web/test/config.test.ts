import { describe, expect, it, vi } from 'vitest';

import { DEFAULT_WEBSOCKET_URL, resolveWebSocketUrl, toAbsoluteWebSocketUrl } from '../src/config.js';

describe('resolveWebSocketUrl', () => {
  it('defaults to the local service', () => {
    vi.stubEnv('NEXT_PUBLIC_WEBSOCKET_URL', '');
    vi.stubEnv('VITE_WEBSOCKET_URL', '');
    expect(resolveWebSocketUrl()).toBe(DEFAULT_WEBSOCKET_URL);
    expect(DEFAULT_WEBSOCKET_URL).toBe('ws://localhost:8005/ws');
  });

  it('reads NEXT_PUBLIC_WEBSOCKET_URL first', () => {
    vi.stubEnv('NEXT_PUBLIC_WEBSOCKET_URL', 'wss://next.example/ws');
    vi.stubEnv('VITE_WEBSOCKET_URL', 'wss://vite.example/ws');
    expect(resolveWebSocketUrl()).toBe('wss://next.example/ws');
  });

  it('falls back to VITE_WEBSOCKET_URL, then to the given fallback', () => {
    vi.stubEnv('NEXT_PUBLIC_WEBSOCKET_URL', '');
    vi.stubEnv('VITE_WEBSOCKET_URL', 'wss://vite.example/ws');
    expect(resolveWebSocketUrl()).toBe('wss://vite.example/ws');
    vi.stubEnv('VITE_WEBSOCKET_URL', '');
    expect(resolveWebSocketUrl('ws://fallback/ws')).toBe('ws://fallback/ws');
  });
});

describe('toAbsoluteWebSocketUrl', () => {
  it('keeps absolute ws and wss URLs', () => {
    expect(toAbsoluteWebSocketUrl('wss://sync.example/ws?x=1').href).toBe('wss://sync.example/ws?x=1');
  });

  it('resolves a relative path against the page with the matching scheme', () => {
    expect(toAbsoluteWebSocketUrl('/ws', 'http://app.example:8005/tasks').href).toBe('ws://app.example:8005/ws');
    expect(toAbsoluteWebSocketUrl('/ws', 'https://app.example/').href).toBe('wss://app.example/ws');
  });

  it('uses the current page by default', () => {
    expect(toAbsoluteWebSocketUrl('/ws').href).toBe(`ws://${window.location.host}/ws`);
  });

  it('refuses other schemes', () => {
    expect(() => toAbsoluteWebSocketUrl('ftp://example/ws')).toThrow(TypeError);
  });
});
