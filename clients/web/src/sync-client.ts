/**
 * WebSocketSyncClient: one instance keeps one user's connection to the TaskSync service alive. It
 * reconnects with backoff and jitter, resumes from the last offset it saw, watches the heartbeat,
 * refreshes tokens and reacts to each close code as docs/protocol.md prescribes.
 */

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { toAbsoluteWebSocketUrl } from './config.js';
import { callSafely } from './listeners.js';
import {
  CLOSE_CODES,
  parseServerFrame,
  type ClientFrame,
  type ConnectedMessage,
  type ServerErrorMessage,
  type ServerFrame,
  type WebSocketMessage,
} from './protocol.js';
import {
  fitsInSubprotocol,
  normalizeToken,
  refreshDelay,
  type ResolvedToken,
  type TokenProvider,
  type TokenRequestReason,
  type TokenValue,
} from './token.js';

export type ConnectionStatus = 'disconnected' | 'connecting' | 'connected' | 'error';

/**
 * Why a client in the `error` state stopped. `retries_exhausted` is the only one that `online` and
 * `visibilitychange` recover from by themselves; the others need the app to act (new credentials,
 * a fixed client) and then call `retry()`.
 */
export type StopReason =
  /** `maxAttempts` reconnects in a row failed. */
  | 'retries_exhausted'
  /** Closed with 4001 and a freshly fetched token was refused too (or there is no `getToken`). */
  | 'unauthenticated'
  /** Closed with 4003: this user or origin may not connect. */
  | 'forbidden'
  /** Closed with 1003, 1008 or 1009: the server refuses what this client sends. */
  | 'rejected';

export interface ConnectionSnapshot {
  readonly status: ConnectionStatus;
  /**
   * The reconnect attempt in progress or scheduled, 1-based (the indicator's "retry N"); 0 while
   * connected or on the first attempt. Kept in the `error` state to say how many were made.
   */
  readonly retryCount: number;
  /** Set in the `error` state only. */
  readonly error: StopReason | null;
  /**
   * Close code of the last socket that was lost: the server's or the network's, or 4000 when the
   * client gave up on a silent socket.
   */
  readonly lastCloseCode: number | null;
}

export interface SyncClientStats {
  readonly framesReceived: number;
  /** Frames that were not valid protocol v1 (bad JSON, wrong types, unknown type, binary). */
  readonly malformedFrames: number;
}

export interface ResumePosition {
  readonly seq: number;
  readonly epoch: string;
}

/**
 * Ask the app to refetch its task list. Emitted for a server `resync_required` frame, and with
 * reason `resume_unsupported` after a reconnect to a server that does not announce resume (whose
 * `connected` frame has no `resumed` field), since events may have been missed in between.
 */
export interface ResyncRequest {
  readonly reason: string;
  readonly seq?: number;
  readonly epoch?: string;
}

export interface SyncClientEvents {
  /** What message listeners get: task updates and pings. */
  message: WebSocketMessage;
  connected: ConnectedMessage;
  resync_required: ResyncRequest;
  /** The server rejected a frame this client sent; the connection stays open. */
  server_error: ServerErrorMessage;
}

export type MessageListener = (message: WebSocketMessage) => void;

// Handler types are declared through a method so that parameters are checked bivariantly: this
// is what lets both the DOM `WebSocket` (whose handlers take a full `MessageEvent`) and the `ws`
// package's class satisfy the interface.
type Handler<E> = { bivarianceHack(event: E): void }['bivarianceHack'];

/** The part of the WebSocket API the client uses; the DOM class and `ws` both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onclose: Handler<{ code: number; reason: string }> | null;
  onerror: Handler<unknown> | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface SyncClientOptions extends Partial<BackoffOptions> {
  /**
   * Reconnect attempts in a row before giving up with `error`. Default 10, as in the original
   * client specification.
   */
  maxAttempts?: number;
  /** After close 1012 (service restart) the reconnect waits a random 0..this. Default 1000 ms. */
  restartJitterMs?: number;
  /**
   * Heartbeat assumed until the server's `connected` frame announces its own. The socket is
   * declared dead after twice this without any frame. Default 25 000 ms.
   */
  heartbeatIntervalMs?: number;
  /** Supplies bearer tokens; called before every handshake and before each token expires. */
  getToken?: TokenProvider;
  /** How long before a token's expiry it is refreshed in-band. Default 30 000 ms. */
  tokenRefreshLeadMs?: number;
  /** WebSocket implementation. Default `globalThis.WebSocket`; on Node 20 pass `ws`'s class. */
  WebSocket?: WebSocketConstructor;
  /** Source of randomness for jitter, like `Math.random`; injectable for tests. */
  random?: () => number;
}

/** What the client does when a socket closes with a given code (docs/protocol.md, "Close codes"). */
export type CloseAction =
  /** 1000: the server ended the session on purpose; stay disconnected. */
  | 'done'
  /** Do not retry: 1003/1008/1009 (`rejected`), 4003 (`forbidden`). */
  | 'stop'
  /** 4001: fetch a new token once and reconnect. */
  | 'reauthenticate'
  /** 1012: the server is draining; reconnect at once with a little jitter. */
  | 'restart'
  /** Everything else (1006, 1011, 1013, 4029, ...): reconnect with backoff. */
  | 'backoff';

export function closeAction(code: number): CloseAction {
  switch (code) {
    case CLOSE_CODES.NORMAL:
      return 'done';
    case CLOSE_CODES.UNSUPPORTED_DATA:
    case CLOSE_CODES.POLICY:
    case CLOSE_CODES.TOO_BIG:
    case CLOSE_CODES.FORBIDDEN:
      return 'stop';
    case CLOSE_CODES.UNAUTHENTICATED:
      return 'reauthenticate';
    case CLOSE_CODES.SERVICE_RESTART:
      return 'restart';
    default:
      return 'backoff';
  }
}

export const SUBPROTOCOL = 'tasksync.v1';

/** Close code the client uses when it abandons a socket whose heartbeat stopped. */
export const HEARTBEAT_TIMEOUT_CLOSE_CODE = 4000;

const OPEN = 1;

type ResolvedOptions = Required<Omit<SyncClientOptions, 'getToken' | 'WebSocket'>> &
  Pick<SyncClientOptions, 'getToken'>;

function withDefaults(options: SyncClientOptions): ResolvedOptions {
  return {
    initialDelayMs: options.initialDelayMs ?? DEFAULT_BACKOFF.initialDelayMs,
    maxDelayMs: options.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs,
    jitter: options.jitter ?? DEFAULT_BACKOFF.jitter,
    maxAttempts: options.maxAttempts ?? 10,
    restartJitterMs: options.restartJitterMs ?? 1_000,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 25_000,
    tokenRefreshLeadMs: options.tokenRefreshLeadMs ?? 30_000,
    random: options.random ?? Math.random,
    getToken: options.getToken,
  };
}

/** `retry`: the next connection attempt; `watchdog`: heartbeat; `refresh`: token refresh. */
type TimerName = 'retry' | 'watchdog' | 'refresh';

type Listeners = { [K in keyof SyncClientEvents]: Set<(payload: SyncClientEvents[K]) => void> };

function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null | undefined)?.then === 'function';
}

const ignoreSocketError = (): void => {
  // `ws` raises an unhandled 'error' (fatal in Node) when a socket it is still opening is closed
  // and nobody listens, so every socket keeps this handler for its whole life.
};

export class WebSocketSyncClient {
  readonly url: string;
  readonly userId: string;

  readonly #options: ResolvedOptions;
  readonly #WebSocket: WebSocketConstructor;
  readonly #listeners: Listeners = {
    message: new Set(),
    connected: new Set(),
    resync_required: new Set(),
    server_error: new Set(),
  };
  readonly #stateListeners = new Set<() => void>();

  #snapshot: ConnectionSnapshot = { status: 'disconnected', retryCount: 0, error: null, lastCloseCode: null };
  #stats = { framesReceived: 0, malformedFrames: 0 };

  /** Whether the app wants a connection (between `connect()`/`retry()` and `disconnect()` or a stop). */
  #active = false;
  /** Bumped by every attempt and by `disconnect()`, so late async work can tell it is stale. */
  #generation = 0;
  #tokenPending = false;
  #tokenReason: TokenRequestReason = 'connect';
  #token: ResolvedToken | null = null;

  #socket: WebSocketLike | null = null;
  /** Whether the current socket got its `connected` frame, i.e. the handshake fully succeeded. */
  #socketConfirmed = false;
  #lastFrameAt = 0;
  #heartbeatMs: number;

  #retryCount = 0;
  #failedAttempts = 0;
  #authRetried = false;
  /** Whether a connection was established since `connect()`: later handshakes are reconnects. */
  #hadConnection = false;
  #position: ResumePosition | null = null;

  readonly #timers: Record<TimerName, ReturnType<typeof setTimeout> | undefined> = {
    retry: undefined,
    watchdog: undefined,
    refresh: undefined,
  };
  #removeBrowserListeners: (() => void) | null = null;

  constructor(url: string, userId: string, options: SyncClientOptions = {}) {
    this.url = toAbsoluteWebSocketUrl(url).href;
    this.userId = userId;
    this.#options = withDefaults(options);
    this.#heartbeatMs = this.#options.heartbeatIntervalMs;
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

  /** Where a reconnect resumes from: the last offset and epoch seen. */
  get resumePosition(): ResumePosition | null {
    return this.#position;
  }

  // ---- events ---------------------------------------------------------------------------------

  on<K extends keyof SyncClientEvents>(type: K, listener: (payload: SyncClientEvents[K]) => void): () => void {
    this.#listeners[type].add(listener);
    return () => this.#listeners[type].delete(listener);
  }

  /** The listener API of the original client specification: `task_update` and `ping` messages. */
  addMessageListener(listener: MessageListener): () => void {
    return this.on('message', listener);
  }

  removeMessageListener(listener: MessageListener): void {
    this.#listeners.message.delete(listener);
  }

  /** The app's hook to refetch its task list; returns the unsubscribe function. */
  onResyncRequired(listener: (request: ResyncRequest) => void): () => void {
    return this.on('resync_required', listener);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  /** Starts connecting; a no-op while already connecting or connected. */
  connect(): void {
    if (this.#active) return;
    this.retry();
  }

  /**
   * Connects now with a fresh attempt counter: after the client gave up (`error`), or to skip a
   * backoff wait. A no-op while a socket is open or opening.
   */
  retry(): void {
    if (this.#socket || this.#tokenPending) return;
    this.#clearTimer('retry');
    this.#active = true;
    this.#retryCount = 0;
    this.#failedAttempts = 0;
    this.#authRetried = false;
    this.#setSnapshot({ retryCount: 0 });
    this.#installBrowserListeners();
    this.#startAttempt();
  }

  /** Closes the socket and stops every timer and retry. `connect()` starts again. */
  disconnect(): void {
    this.#active = false;
    this.#generation += 1;
    this.#tokenPending = false;
    this.#hadConnection = false;
    this.#removeBrowserListeners?.();
    this.#removeBrowserListeners = null;
    this.#clearTimer('retry');
    const socket = this.#releaseSocket();
    socket?.close(CLOSE_CODES.NORMAL, 'client disconnect');
    this.#setSnapshot({ status: 'disconnected', retryCount: 0, error: null });
  }

  /**
   * Fetches a token (reason `refresh`) and sends it in-band on the live connection, so the
   * server extends the session without a reconnect. Called automatically before expiry; apps
   * call it when they know the old token was revoked. Rejects if `getToken` throws; resolves
   * without sending when there is no live connection (the next handshake asks anyway).
   */
  async refreshToken(): Promise<void> {
    const provider = this.#options.getToken;
    const socket = this.#socket;
    if (!provider || !socket || !this.#socketConfirmed) return;
    const token = normalizeToken(await provider({ reason: 'refresh' }));
    if (!token || socket !== this.#socket) return;
    this.#token = token;
    this.#send({ type: 'auth', token: token.token });
    this.#scheduleTokenRefresh();
  }

  // ---- connecting -----------------------------------------------------------------------------

  #startAttempt(): void {
    const generation = ++this.#generation;
    const reason = this.#tokenReason;
    this.#tokenReason = 'connect';
    this.#setSnapshot({ status: 'connecting', error: null });
    const provider = this.#options.getToken;
    if (!provider) {
      this.#openSocket(null);
      return;
    }
    let value: TokenValue | Promise<TokenValue>;
    try {
      value = provider({ reason });
    } catch {
      // The token service is down or the user is signed out; both may pass, so back off.
      this.#attemptFailed();
      return;
    }
    if (!isPromiseLike(value)) {
      this.#openSocket(normalizeToken(value));
      return;
    }
    this.#tokenPending = true;
    value.then(
      (resolved) => {
        if (generation !== this.#generation) return;
        this.#tokenPending = false;
        this.#openSocket(normalizeToken(resolved));
      },
      () => {
        if (generation !== this.#generation) return;
        this.#tokenPending = false;
        this.#attemptFailed();
      },
    );
  }

  #openSocket(token: ResolvedToken | null): void {
    this.#token = token;
    // A token that is not a valid subprotocol value (e.g. base64 with '/' or '=') would make the
    // browser's constructor throw, so it goes in the first frame instead.
    const inBand = token !== null && !fitsInSubprotocol(token.token);
    const protocols = token && !inBand ? [SUBPROTOCOL, `bearer.${token.token}`] : [SUBPROTOCOL];
    let socket: WebSocketLike;
    try {
      socket = new this.#WebSocket(this.#handshakeUrl(), protocols);
    } catch {
      this.#attemptFailed();
      return;
    }
    this.#socket = socket;
    this.#socketConfirmed = false;
    this.#heartbeatMs = this.#options.heartbeatIntervalMs;
    socket.onerror = ignoreSocketError;
    socket.onopen = () => {
      if (inBand) this.#send({ type: 'auth', token: token.token });
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (socket === this.#socket) this.#onSocketLost(event.code);
    };
    // Armed before the handshake completes, so a handshake that hangs counts as a dead socket too.
    this.#armWatchdog();
  }

  #handshakeUrl(): string {
    const url = new URL(this.url);
    url.searchParams.set('user_id', this.userId);
    if (this.#position) {
      url.searchParams.set('since', String(this.#position.seq));
      url.searchParams.set('epoch', this.#position.epoch);
    }
    if (this.#hadConnection) url.searchParams.set('reconnect', '1');
    if (this.#hadConnection || this.#failedAttempts > 0) {
      url.searchParams.set('attempts', String(this.#failedAttempts));
    }
    return url.href;
  }

  // ---- frames ---------------------------------------------------------------------------------

  #onFrame(data: unknown): void {
    this.#stats.framesReceived += 1;
    this.#lastFrameAt = Date.now();
    this.#armWatchdog();
    const parsed = parseServerFrame(data);
    if (!parsed.ok) {
      this.#stats.malformedFrames += 1;
      return;
    }
    this.#dispatch(parsed.frame);
  }

  #dispatch(frame: ServerFrame): void {
    switch (frame.type) {
      case 'connected':
        this.#onConnected(frame);
        return;
      case 'ping':
        this.#send({ type: 'pong' });
        this.#emit('message', frame);
        return;
      case 'task_update':
        if (frame.seq !== undefined && frame.epoch !== undefined) this.#advance(frame.seq, frame.epoch);
        this.#emit('message', frame);
        return;
      case 'resync_required':
        // The app refetches everything up to here; live events continue after this offset.
        this.#position = { seq: frame.seq, epoch: frame.epoch };
        this.#emit('resync_required', frame);
        return;
      case 'error':
        this.#emit('server_error', frame);
        return;
    }
  }

  #onConnected(frame: ConnectedMessage): void {
    if (frame.heartbeat_interval !== undefined) {
      this.#heartbeatMs = frame.heartbeat_interval * 1000;
      this.#armWatchdog();
    }
    // After a successful resume the replay follows and advances the position itself; jumping to
    // the server's newest offset first would lose the replay if the socket dropped halfway.
    if (frame.resumed !== true && frame.seq !== undefined && frame.epoch !== undefined) {
      this.#position = { seq: frame.seq, epoch: frame.epoch };
    }
    const isReconnect = this.#hadConnection;
    this.#socketConfirmed = true;
    this.#hadConnection = true;
    this.#retryCount = 0;
    this.#failedAttempts = 0;
    this.#authRetried = false;
    this.#setSnapshot({ status: 'connected', retryCount: 0, error: null });
    this.#scheduleTokenRefresh();
    this.#emit('connected', frame);
    if (isReconnect && frame.resumed === undefined) this.#emit('resync_required', { reason: 'resume_unsupported' });
  }

  #advance(seq: number, epoch: string): void {
    // Replays and live events can interleave around a reconnect; never move backwards.
    if (this.#position && this.#position.epoch === epoch && this.#position.seq >= seq) return;
    this.#position = { seq, epoch };
  }

  #send(frame: ClientFrame): void {
    if (this.#socket?.readyState === OPEN) this.#socket.send(JSON.stringify(frame));
  }

  #emit<K extends keyof SyncClientEvents>(type: K, payload: SyncClientEvents[K]): void {
    for (const listener of [...this.#listeners[type]]) callSafely(listener, payload);
  }

  // ---- losing the connection ------------------------------------------------------------------

  #onSocketLost(code: number): void {
    const confirmed = this.#socketConfirmed;
    this.#releaseSocket();
    if (!confirmed) this.#failedAttempts += 1;
    this.#setSnapshot({ lastCloseCode: code });
    const action = closeAction(code);
    switch (action) {
      case 'done':
        this.#active = false;
        this.#setSnapshot({ status: 'disconnected', retryCount: 0, error: null });
        return;
      case 'stop':
        this.#stop(code === CLOSE_CODES.FORBIDDEN ? 'forbidden' : 'rejected');
        return;
      case 'reauthenticate':
        if (!this.#options.getToken || this.#authRetried) {
          this.#stop('unauthenticated');
          return;
        }
        this.#authRetried = true;
        this.#tokenReason = 'rejected';
        this.#startAttempt();
        return;
      case 'restart':
        // A draining server only sends 1012 to established connections; one that refuses a fresh
        // handshake with it is not restarting, it is failing, and must not escape the backoff.
        if (confirmed) {
          this.#setSnapshot({ status: 'connecting', error: null });
          this.#setTimer('retry', this.#options.random() * this.#options.restartJitterMs, () => this.#startAttempt());
          return;
        }
        this.#scheduleRetry();
        return;
      case 'backoff':
        this.#scheduleRetry();
        return;
    }
  }

  /** The socket could not even be created, or no token could be had. */
  #attemptFailed(): void {
    this.#failedAttempts += 1;
    this.#scheduleRetry();
  }

  #onHeartbeatTimeout(): void {
    const socket = this.#socket;
    if (!socket) return;
    this.#onSocketLost(HEARTBEAT_TIMEOUT_CLOSE_CODE);
    // A dead TCP connection may never complete the closing handshake, so the client does not
    // wait for `onclose`: the socket was released above and is only told to go away.
    socket.close(HEARTBEAT_TIMEOUT_CLOSE_CODE, 'heartbeat timeout');
  }

  #scheduleRetry(): void {
    if (this.#retryCount >= this.#options.maxAttempts) {
      this.#stop('retries_exhausted');
      return;
    }
    this.#retryCount += 1;
    this.#setSnapshot({ status: 'connecting', retryCount: this.#retryCount, error: null });
    const delay = backoffDelay(this.#retryCount, this.#options, this.#options.random);
    this.#setTimer('retry', delay, () => this.#startAttempt());
  }

  #stop(reason: StopReason): void {
    this.#active = false;
    this.#clearTimer('retry');
    this.#setSnapshot({ status: 'error', error: reason });
  }

  /** Detaches the current socket (its late events are ignored) and returns it for closing. */
  #releaseSocket(): WebSocketLike | null {
    const socket = this.#socket;
    this.#socket = null;
    this.#socketConfirmed = false;
    this.#clearTimer('watchdog');
    this.#clearTimer('refresh');
    if (socket) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
    }
    return socket;
  }

  // ---- timers ---------------------------------------------------------------------------------

  #armWatchdog(): void {
    this.#setTimer('watchdog', 2 * this.#heartbeatMs, () => this.#onHeartbeatTimeout());
  }

  #scheduleTokenRefresh(): void {
    this.#clearTimer('refresh');
    const delay = refreshDelay(this.#token?.expiresAt, Date.now(), this.#options.tokenRefreshLeadMs);
    if (delay === undefined) return;
    this.#setTimer('refresh', delay, () => {
      this.refreshToken().catch(() => {
        // The server closes with 4001 once the old token expires; that path fetches a new one.
      });
    });
  }

  #setTimer(name: TimerName, delayMs: number, callback: () => void): void {
    this.#clearTimer(name);
    this.#timers[name] = setTimeout(() => {
      this.#timers[name] = undefined;
      callback();
    }, delayMs);
  }

  #clearTimer(name: TimerName): void {
    clearTimeout(this.#timers[name]);
    this.#timers[name] = undefined;
  }

  // ---- browser signals ------------------------------------------------------------------------

  #installBrowserListeners(): void {
    if (this.#removeBrowserListeners || typeof window === 'undefined' || typeof document === 'undefined') return;
    const onOnline = (): void => this.#wake();
    const onVisibilityChange = (): void => {
      if (document.visibilityState === 'visible') this.#wake();
    };
    window.addEventListener('online', onOnline);
    document.addEventListener('visibilitychange', onVisibilityChange);
    this.#removeBrowserListeners = () => {
      window.removeEventListener('online', onOnline);
      document.removeEventListener('visibilitychange', onVisibilityChange);
    };
  }

  /**
   * The network came back or the tab became visible: a socket that died meanwhile is replaced
   * now rather than after the remaining backoff. Background tabs get their timers throttled, so
   * a silent socket is checked against the heartbeat here as well.
   */
  #wake(): void {
    if (this.#socketConfirmed && Date.now() - this.#lastFrameAt > 2 * this.#heartbeatMs) {
      this.#onHeartbeatTimeout();
    }
    if (this.#timers.retry !== undefined) {
      this.#clearTimer('retry');
      this.#startAttempt();
    } else if (!this.#active && this.#snapshot.error === 'retries_exhausted') {
      this.retry();
    }
  }

  #setSnapshot(patch: Partial<ConnectionSnapshot>): void {
    const next = { ...this.#snapshot, ...patch };
    const keys = Object.keys(next) as (keyof ConnectionSnapshot)[];
    if (keys.every((key) => next[key] === this.#snapshot[key])) return;
    this.#snapshot = next;
    for (const listener of [...this.#stateListeners]) listener();
  }
}
