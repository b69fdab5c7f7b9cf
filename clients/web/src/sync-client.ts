/**
 * WebSocketSyncClient: one user's connection to the TaskSync service, as one tab sees it. The
 * socket itself (reconnect, resume, heartbeat, tokens, close codes) is a SocketConnection, which
 * lives in this tab or, shared with the user's other tabs, in a shared worker or a leader tab's worker
 * (docs/web-client.md, "Connection sharing"). Either way this client delivers the same frames
 * in the same order, and tells each tab whether an event's notification is its to show.
 */

import { toAbsoluteWebSocketUrl } from './config.js';
import {
  localLink,
  type ConnectionLink,
  type LinkSetup,
  type LinkSink,
  type SharingMode,
} from './connection-link.js';
import { callSafely } from './listeners.js';
import type { ConnectedMessage, ServerErrorMessage, ServerFrame, WebSocketMessage } from './protocol.js';
import {
  positionAfter,
  type ConnectionSnapshot,
  type ConnectionStatus,
  type ResumePosition,
  type ResyncRequest,
  type SocketOptions,
  type WebSocketConstructor,
} from './socket-connection.js';
import { openLink } from './shared-connection.js';
import { newTabId, operationId } from './toast-coordinator.js';

export {
  HEARTBEAT_TIMEOUT_CLOSE_CODE,
  SUBPROTOCOL,
  closeAction,
  type CloseAction,
  type ConnectionSnapshot,
  type ConnectionStatus,
  type ResumePosition,
  type ResyncRequest,
  type StopReason,
  type WebSocketConstructor,
  type WebSocketLike,
} from './socket-connection.js';
export type { SharingMode } from './connection-link.js';

export interface SyncClientStats {
  readonly framesReceived: number;
  /** Frames that were not valid protocol v1 (bad JSON, wrong types, unknown type, binary). */
  readonly malformedFrames: number;
}

/** What a message listener learns besides the message. */
export interface MessageDelivery {
  /**
   * Whether this tab shows the notification of this `task_update`: true in exactly one of the
   * tabs that share the connection (the focused one, else the most recently focused), false in
   * the tab whose own action (`createOperationId()`) caused it. Always false for a ping.
   */
  readonly notify: boolean;
}

export type MessageListener = (message: WebSocketMessage, delivery: MessageDelivery) => void;

export interface SyncClientEvents {
  /** What message listeners get: task updates and pings. */
  message: WebSocketMessage;
  connected: ConnectedMessage;
  resync_required: ResyncRequest;
  /** The server rejected a frame this client sent; the connection stays open. */
  server_error: ServerErrorMessage;
  /** A notification (the event id) was dismissed in one of the tabs sharing the connection. */
  notification_dismissed: string;
}

export interface SyncClientOptions extends SocketOptions {
  /**
   * Share one socket among all tabs of this user and service (default true, where the browser
   * allows it and no `WebSocket` class is given): through a shared worker, else a leader tab's worker.
   */
  shareConnection?: boolean;
}

/** A listener of event `K`; message listeners also get the delivery (a second argument). */
type EventListener<K extends keyof SyncClientEvents> = K extends 'message'
  ? MessageListener
  : (payload: SyncClientEvents[K]) => void;

type EventListeners = { [K in keyof SyncClientEvents]?: Set<EventListener<K>> };

const QUIET: MessageDelivery = { notify: false };

export class WebSocketSyncClient {
  readonly url: string;
  readonly userId: string;

  readonly #options: SyncClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  /** This client's id among the tabs sharing its connection; its operation ids start with it. */
  readonly #tabId = newTabId();
  #operations = 0;
  /** Created on first use: most apps listen to one or two events. */
  readonly #listeners: EventListeners = {};
  readonly #stateListeners = new Set<() => void>();

  #link: ConnectionLink | null = null;
  #sharing: SharingMode = 'off';
  #snapshot: ConnectionSnapshot = { status: 'disconnected', retryCount: 0, error: null, lastCloseCode: null };
  #stats = { framesReceived: 0, malformedFrames: 0 };
  /** The offset of the last event this tab received (or was told to continue from). */
  #position: ResumePosition | null = null;
  #removeBrowserListeners: (() => void) | null = null;

  constructor(url: string, userId: string, options: SyncClientOptions = {}) {
    this.url = toAbsoluteWebSocketUrl(url).href;
    this.userId = userId;
    this.#options = options;
    // lib.dom declares a global WebSocket everywhere; Node before 22 and some runtimes have none.
    const fallback = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const implementation = options.WebSocket ?? fallback;
    if (!implementation) {
      throw new TypeError('TaskSync: no global WebSocket here; pass options.WebSocket (for example the ws package)');
    }
    this.#WebSocket = implementation;
  }

  // ---- state, for useSyncExternalStore -------------------------------------------------------

  /** Subscribes to connection state changes; returns the unsubscribe function. */
  readonly subscribe = (listener: () => void): (() => void) => {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  };

  /** The current state; a new object after every change, the same object otherwise. */
  readonly getSnapshot = (): ConnectionSnapshot => this.#snapshot;

  get status(): ConnectionStatus {
    return this.#snapshot.status;
  }

  get retryCount(): number {
    return this.#snapshot.retryCount;
  }

  get stats(): SyncClientStats {
    return { ...this.#stats };
  }

  /** Where this tab stands: the last offset and epoch it received. */
  get resumePosition(): ResumePosition | null {
    return this.#position;
  }

  /** Where the socket lives: this tab's own (`off`), the shared worker's, or the leader tab's. */
  get sharing(): SharingMode {
    return this.#sharing;
  }

  // ---- events ---------------------------------------------------------------------------------

  on<K extends keyof SyncClientEvents>(type: K, listener: EventListener<K>): () => void {
    const listeners = ((this.#listeners as Record<K, Set<EventListener<K>> | undefined>)[type] ??= new Set());
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  /** The listener API of the original client specification: `task_update` and `ping` messages. */
  addMessageListener(listener: MessageListener): () => void {
    return this.on('message', listener);
  }

  removeMessageListener(listener: MessageListener): void {
    this.#listeners.message?.delete(listener);
  }

  /** The app's hook to refetch its task list; returns the unsubscribe function. */
  onResyncRequired(listener: (request: ResyncRequest) => void): () => void {
    return this.on('resync_required', listener);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  /** Starts connecting; a no-op while already connecting or connected. */
  connect(): void {
    if (this.#link && (this.status === 'connecting' || this.status === 'connected')) return;
    this.retry();
  }

  /**
   * "Reconnect now": connects at once with a fresh attempt counter, whether the client is waiting
   * out a backoff or gave up (`error`). A no-op while a socket is open or opening.
   */
  retry(): void {
    if (this.#link) {
      this.#link.retry();
      return;
    }
    this.#open();
  }

  /** Closes this tab's connection and stops every timer and retry. `connect()` starts again. */
  disconnect(): void {
    const link = this.#link;
    this.#link = null;
    this.#removeBrowserListeners?.();
    this.#removeBrowserListeners = null;
    link?.close();
    this.#setSnapshot({ status: 'disconnected', retryCount: 0, error: null });
  }

  /**
   * Fetches a token (reason `refresh`) and sends it in-band on the live connection, so the
   * server extends the session without a reconnect. Called automatically before expiry; apps
   * call it when they know the old token was revoked. Rejects if `getToken` throws; resolves
   * without sending when there is no live connection (the next handshake asks anyway).
   */
  async refreshToken(): Promise<void> {
    await this.#link?.refreshToken();
  }

  /**
   * A new operation id for a user action in this tab: send it to the backend with the write, and
   * the backend publishes it with the event as `op_id` (docs/protocol.md, "Operation ids"). The
   * event's notification then shows in another tab, never in this one.
   */
  createOperationId(): string {
    this.#operations += 1;
    return operationId(this.#tabId, this.#operations);
  }

  /** Tells the other tabs sharing the connection that notification `id` was dismissed here. */
  dismissNotification(id: string): void {
    this.#link?.dismiss(id);
  }

  #open(): void {
    // The sink ignores whatever a link reports once the client let go of it.
    const current =
      <A extends unknown[]>(handle: (...args: A) => void) =>
      (...args: A): void => {
        if (this.#link === link) handle(...args);
      };
    const sink: LinkSink = {
      position: () => this.#position,
      sharing: current((mode) => (this.#sharing = mode)),
      state: current((snapshot) => this.#setSnapshot(snapshot)),
      welcome: current((snapshot, connected, position) => {
        this.#position ??= position;
        this.#setSnapshot(snapshot);
        if (connected) this.#emit('connected', connected);
      }),
      frame: current((frame, notify) => this.#onFrame(frame, notify)),
      resync: current((request) => this.#emit('resync_required', request)),
      malformed: current(() => {
        this.#stats.framesReceived += 1;
        this.#stats.malformedFrames += 1;
      }),
      dismissed: current((id) => this.#emit('notification_dismissed', id)),
      unavailable: current(() => {
        link = this.#link = localLink(setup);
        link.open();
      }),
    };
    const setup: LinkSetup = {
      url: this.url,
      userId: this.userId,
      tabId: this.#tabId,
      options: this.#options,
      WebSocket: this.#WebSocket,
      sink,
    };
    // The worker opens sockets with the browser's own WebSocket class, not one given here.
    const share = this.#options.shareConnection !== false && this.#options.WebSocket === undefined;
    let link = share ? openLink(setup) : localLink(setup);
    this.#link = link;
    this.#setSnapshot({ status: 'connecting', retryCount: 0, error: null });
    link.open();
    this.#installBrowserListeners();
  }

  // ---- frames ---------------------------------------------------------------------------------

  #onFrame(frame: ServerFrame, notify: string | null): void {
    this.#stats.framesReceived += 1;
    const held = this.#position;
    this.#position = positionAfter(held, frame);
    switch (frame.type) {
      case 'connected':
        this.#emit('connected', frame);
        return;
      case 'ping':
        this.#deliver(frame, QUIET);
        return;
      case 'task_update':
        // After a takeover the shared socket resumes from the oldest position among the tabs, so
        // the others see again what they already have; a tab that finds a hole (it joined behind
        // the others) asks for a refetch.
        if (held && frame.seq !== undefined && held.epoch === frame.epoch) {
          if (frame.seq <= held.seq) return;
          if (frame.seq > held.seq + 1) {
            this.#emit('resync_required', { reason: 'missed_events', seq: frame.seq - 1, epoch: held.epoch });
          }
        }
        this.#deliver(frame, { notify: notify === this.#tabId });
        return;
      case 'resync_required':
        // The app refetches everything up to here; live events continue after this offset.
        this.#emit('resync_required', frame);
        return;
      case 'error':
        this.#emit('server_error', frame);
        return;
    }
  }

  #deliver(message: WebSocketMessage, delivery: MessageDelivery): void {
    for (const listener of [...(this.#listeners.message ?? [])]) callSafely((payload) => listener(payload, delivery), message);
  }

  #emit<K extends Exclude<keyof SyncClientEvents, 'message'>>(type: K, payload: SyncClientEvents[K]): void {
    for (const listener of [...(this.#listeners[type] ?? [])]) callSafely(listener as (value: SyncClientEvents[K]) => void, payload);
  }

  // ---- browser signals ----------------------------------------------------------------------

  /**
   * The network came back or the tab became visible: whoever holds the socket replaces one that
   * died meanwhile now rather than after the remaining backoff. And whenever the user turns to
   * this tab (focus, visibility, a click or key press: a tab can be used without a focus event),
   * it becomes the one to show the next notifications.
   */
  #installBrowserListeners(): void {
    if (this.#removeBrowserListeners || typeof window === 'undefined' || typeof document === 'undefined') return;
    const focus = (): void => this.#link?.focus(Date.now());
    const handlers: [EventTarget, string, () => void][] = [
      [window, 'online', () => this.#link?.wake()],
      [
        document,
        'visibilitychange',
        () => {
          if (document.visibilityState !== 'visible') return;
          this.#link?.wake();
          focus();
        },
      ],
      [window, 'focus', focus],
      [window, 'pointerdown', focus],
      [window, 'keydown', focus],
    ];
    for (const [target, type, handler] of handlers) target.addEventListener(type, handler, true);
    if (document.hasFocus()) focus();
    this.#removeBrowserListeners = () => {
      for (const [target, type, handler] of handlers) target.removeEventListener(type, handler, true);
    };
  }

  #setSnapshot(patch: Partial<ConnectionSnapshot>): void {
    const next = { ...this.#snapshot, ...patch };
    const keys = Object.keys(next) as (keyof ConnectionSnapshot)[];
    if (keys.every((key) => next[key] === this.#snapshot[key])) return;
    this.#snapshot = next;
    for (const listener of [...this.#stateListeners]) listener();
  }
}
