/**
 * An in-memory WebSocket for unit tests: the test plays the server by calling `accept`,
 * `receive` and `serverClose` on the socket the client created.
 */

import type { WebSocketLike } from '../src/sync-client.js';

type Handler<E> = ((event: E) => void) | null;

export class FakeWebSocket implements WebSocketLike {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  readyState = FakeWebSocket.CONNECTING;
  readonly url: URL;
  readonly protocols: string[];
  /** Frames the client sent, parsed. */
  readonly sent: unknown[] = [];
  /** Calls to close() made by the client. */
  readonly closedByClient: { code: number | undefined; reason: string | undefined }[] = [];

  onopen: Handler<unknown> = null;
  onmessage: Handler<{ data: unknown }> = null;
  onclose: Handler<{ code: number; reason: string }> = null;
  onerror: Handler<unknown> = null;

  constructor(url: string, protocols: string | string[] = [], registry: FakeWebSocket[]) {
    this.url = new URL(url);
    this.protocols = typeof protocols === 'string' ? [protocols] : protocols;
    registry.push(this);
  }

  send(data: string): void {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('send() on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closedByClient.push({ code, reason });
    this.readyState = FakeWebSocket.CLOSING;
  }

  // ---- the server's side ----

  /** Completes the handshake. */
  open(): void {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
  }

  /** Completes the handshake and sends the `connected` frame. */
  accept(connected: Record<string, unknown> = {}): void {
    this.open();
    this.receive({ type: 'connected', user_id: this.url.searchParams.get('user_id'), seq: 0, epoch: 'e1', heartbeat_interval: 25, resumed: false, ...connected });
  }

  /** Delivers a frame: plain objects as JSON text, strings and binary payloads as they are. */
  receive(frame: unknown): void {
    const isPlainObject = typeof frame === 'object' && frame !== null && Object.getPrototypeOf(frame) === Object.prototype;
    this.onmessage?.({ data: isPlainObject ? JSON.stringify(frame) : frame });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason });
  }

  /** A connection that fails: what a browser reports when nothing listens or the network is gone. */
  fail(): void {
    this.onerror?.({});
    this.serverClose(1006);
  }

  get query(): Record<string, string> {
    return Object.fromEntries(this.url.searchParams);
  }
}

/** A WebSocket class bound to its own list of created sockets. */
export function fakeWebSocketClass(): { WebSocket: new (url: string, protocols?: string | string[]) => FakeWebSocket; sockets: FakeWebSocket[] } {
  const sockets: FakeWebSocket[] = [];
  class BoundFakeWebSocket extends FakeWebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, sockets);
    }
  }
  return { WebSocket: BoundFakeWebSocket, sockets };
}

/** The most recent socket, failing the test if there is none. */
export function lastSocket(sockets: FakeWebSocket[]): FakeWebSocket {
  const socket = sockets.at(-1);
  if (!socket) throw new Error('the client created no socket');
  return socket;
}
