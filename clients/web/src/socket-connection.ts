/**
 * SocketConnection: one WebSocket to the TaskSync service, kept alive. It reconnects with backoff
 * and jitter, resumes from the last offset it saw, watches the heartbeat, fetches and refreshes
 * tokens and reacts to each close code as docs/protocol.md prescribes.
 *
 * It runs wherever the socket lives: in the tab for an unshared client, in the leader tab or in
 * the shared worker when tabs share one socket (docs/web-client.md, "Connection sharing"). What it
 * receives goes to one observer, which passes it on to the tab or tabs.
 */

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { CLOSE_CODES, parseServerFrame, type ClientFrame, type ConnectedMessage, type ServerFrame } from './protocol.js';
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

export interface ResumePosition {
  readonly seq: number;
  readonly epoch: string;
}

/**
 * Ask the app to refetch its task list. Emitted for a server `resync_required` frame; with reason
 * `resume_unsupported` after a reconnect to a server that does not announce resume (whose
 * `connected` frame has no `resumed` field); and with reason `missed_events` when a tab finds a
 * gap in the offsets it received (a tab that joined a shared socket late, behind the others).
 */
export interface ResyncRequest {
  readonly reason: string;
  readonly seq?: number;
  readonly epoch?: string;
}

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

/** Reconnect and heartbeat settings: plain numbers, so a shared worker can be given them too. */
export interface ConnectionTimings extends BackoffOptions {
  /**
   * Reconnect attempts in a row before giving up with `error`. Default 10, as in the original
   * client specification.
   */
  maxAttempts: number;
  /**
   * After close 1012 (service restart) the reconnect waits a random 0..this, and while the
   * restarting service does not answer yet each further attempt waits 0.5 to 1.5 times this.
   * Default 1000 ms.
   */
  restartJitterMs: number;
  /**
   * How long after a 1012 failed attempts keep that short pace instead of the growing backoff
   * (and do not count towards `maxAttempts`). Default 60 000 ms: a restart is expected to end.
   */
  restartWindowMs: number;
  /**
   * Heartbeat assumed until the server's `connected` frame announces its own. The socket is
   * declared dead after twice this without any frame. Default 25 000 ms.
   */
  heartbeatIntervalMs: number;
  /** How long before a token's expiry it is refreshed in-band. Default 30 000 ms. */
  tokenRefreshLeadMs: number;
}

export interface SocketOptions extends Partial<ConnectionTimings> {
  /** Supplies bearer tokens; called before every handshake and before each token expires. */
  getToken?: TokenProvider;
  /** WebSocket implementation. Default `globalThis.WebSocket`; on Node 20 pass `ws`'s class. */
  WebSocket?: WebSocketConstructor;
  /** Source of randomness for jitter, like `Math.random`; injectable for tests. */
  random?: () => number;
}

/** Where a SocketConnection reports to, and learns where to resume from. */
export interface SocketObserver {
  /** The position the next handshake resumes from (see `positionAfter`). */
  position(): ResumePosition | null;
  state(snapshot: ConnectionSnapshot): void;
  /** Every valid frame, after the connection has acted on it (pong, heartbeat). */
  frame(frame: ServerFrame): void;
  /** A refetch the connection asks for itself (`resume_unsupported`). */
  resync(request: ResyncRequest): void;
  /** A frame that was not valid protocol v1; it was dropped. */
  malformed(): void;
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

/**
 * A heartbeat watchdog that fires later than this after its due time ran in a throttled or
 * frozen tab, where frames that did arrive may still wait in the task queue behind it.
 */
const LATE_TIMER_MS = 1_000;
/** How long such a watchdog, or a tab waking up, gives waiting frames before giving up. */
const HEARTBEAT_GRACE_MS = 1_000;

const OPEN = 1;

const DEFAULT_TIMINGS: ConnectionTimings = {
  ...DEFAULT_BACKOFF,
  maxAttempts: 10,
  restartJitterMs: 1_000,
  restartWindowMs: 60_000,
  heartbeatIntervalMs: 25_000,
  tokenRefreshLeadMs: 30_000,
};

/** The timing settings among `options`, with defaults: what a shared worker is handed. */
export function connectionTimings(options: Partial<ConnectionTimings>): ConnectionTimings {
  const timings = { ...DEFAULT_TIMINGS };
  for (const key of Object.keys(timings) as (keyof ConnectionTimings)[]) {
    const value = options[key];
    if (value !== undefined) timings[key] = value;
  }
  return timings;
}

/**
 * Where a client stands after `frame`, having stood at `held`: the resume rule of
 * docs/protocol.md. A `task_update` moves it forward (replays and live events can interleave
 * around a reconnect: never backwards within an epoch); `resync_required` sets it (the app
 * refetches everything up to there); a `connected` frame sets it to the server's newest offset
 * unless a resume succeeded, whose replay then advances it (jumping ahead first would lose the
 * replay if the socket dropped halfway).
 */
export function positionAfter(held: ResumePosition | null, frame: ServerFrame): ResumePosition | null {
  const { seq, epoch } = frame as { seq?: number; epoch?: string };
  if (seq === undefined || epoch === undefined) return held;
  switch (frame.type) {
    case 'connected':
      return frame.resumed === true ? held : { seq, epoch };
    case 'task_update':
      return held?.epoch === epoch && held.seq >= seq ? held : { seq, epoch };
    case 'resync_required':
      return { seq, epoch };
    default:
      return held;
  }
}

/** `retry`: the next connection attempt; `watchdog`: heartbeat; `refresh`: token refresh. */
type TimerName = 'retry' | 'watchdog' | 'refresh';

function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null | undefined)?.then === 'function';
}

const ignoreSocketError = (): void => {
  // `ws` raises an unhandled 'error' (fatal in Node) when a socket it is still opening is closed
  // and nobody listens, so every socket keeps this handler for its whole life.
};

export class SocketConnection {
  readonly #url: string;
  readonly #userId: string;
  readonly #timings: ConnectionTimings;
  readonly #getToken: TokenProvider | undefined;
  readonly #random: () => number;
  readonly #WebSocket: WebSocketConstructor;
  readonly #observer: SocketObserver;

  #snapshot: ConnectionSnapshot = { status: 'disconnected', retryCount: 0, error: null, lastCloseCode: null };

  /** Whether a connection is wanted (between `connect()`/`retry()` and `disconnect()` or a stop). */
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
  #watchdogDueAt = 0;
  #heartbeatMs: number;

  #retryCount = 0;
  /** Retries made on the short pace after a 1012: they do not advance the backoff. */
  #restartRetries = 0;
  /** Until when failed attempts keep the short pace of a restart (epoch ms; 0: no restart). */
  #restartUntil = 0;
  #failedAttempts = 0;
  #authRetried = false;
  /** Whether a connection was established since `connect()`: later handshakes are reconnects. */
  #hadConnection = false;

  readonly #timers: Record<TimerName, ReturnType<typeof setTimeout> | undefined> = {
    retry: undefined,
    watchdog: undefined,
    refresh: undefined,
  };

  constructor(url: string, userId: string, options: SocketOptions & { WebSocket: WebSocketConstructor }, observer: SocketObserver) {
    this.#url = url;
    this.#userId = userId;
    this.#timings = connectionTimings(options);
    this.#getToken = options.getToken;
    this.#random = options.random ?? Math.random;
    this.#WebSocket = options.WebSocket;
    this.#observer = observer;
    this.#heartbeatMs = this.#timings.heartbeatIntervalMs;
  }

  get snapshot(): ConnectionSnapshot {
    return this.#snapshot;
  }

  /** Starts connecting; a no-op while already connecting or connected. */
  connect(): void {
    if (this.#active) return;
    this.retry();
  }

  /**
   * Connects now with a fresh attempt counter: after the connection stopped (`error`), or to skip
   * a backoff wait ("Reconnect now"). A no-op while a socket is open or opening.
   */
  retry(): void {
    if (this.#socket || this.#tokenPending) return;
    this.#clearTimer('retry');
    this.#active = true;
    this.#retryCount = 0;
    this.#restartRetries = 0;
    this.#failedAttempts = 0;
    this.#authRetried = false;
    this.#setSnapshot({ retryCount: 0 });
    this.#startAttempt();
  }

  /** Closes the socket and stops every timer and retry. `connect()` starts again. */
  disconnect(): void {
    this.#active = false;
    this.#generation += 1;
    this.#tokenPending = false;
    this.#hadConnection = false;
    this.#restartUntil = 0;
    this.#clearTimer('retry');
    const socket = this.#releaseSocket();
    socket?.close(CLOSE_CODES.NORMAL, 'client disconnect');
    this.#setSnapshot({ status: 'disconnected', retryCount: 0, error: null });
  }

  /**
   * The network came back or a tab became visible: a socket that died meanwhile is replaced now
   * rather than after the remaining backoff, and a client that gave up after `maxAttempts` starts
   * over. A socket silent for longer than the watchdog allows (its timer may not have run in a
   * throttled tab) gets a short grace for frames still queued, then is replaced.
   */
  wake(): void {
    if (this.#socketConfirmed && Date.now() - this.#lastFrameAt > 2 * this.#heartbeatMs) {
      this.#armWatchdog(HEARTBEAT_GRACE_MS);
    }
    if (this.#timers.retry !== undefined) {
      this.#clearTimer('retry');
      this.#startAttempt();
    } else if (!this.#active && this.#snapshot.error === 'retries_exhausted') {
      this.retry();
    }
  }

  /**
   * Fetches a token (reason `refresh`) and sends it in-band on the live connection, so the
   * server extends the session without a reconnect. Rejects if `getToken` throws; resolves
   * without sending when there is no live connection (the next handshake asks anyway).
   */
  async refreshToken(): Promise<void> {
    const provider = this.#getToken;
    if (!provider || !this.#socketConfirmed) return;
    const socket = this.#socket;
    const token = normalizeToken(await provider({ reason: 'refresh' }));
    if (token && socket === this.#socket) this.useToken(token);
  }

  /** Sends `token` in-band on the live connection (a refresh obtained elsewhere). */
  useToken(token: ResolvedToken): void {
    if (!this.#socketConfirmed) return;
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
    const provider = this.#getToken;
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
    this.#heartbeatMs = this.#timings.heartbeatIntervalMs;
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
    const url = new URL(this.#url);
    url.searchParams.set('user_id', this.#userId);
    const position = this.#observer.position();
    if (position) {
      url.searchParams.set('since', String(position.seq));
      url.searchParams.set('epoch', position.epoch);
    }
    if (this.#hadConnection) url.searchParams.set('reconnect', '1');
    if (this.#hadConnection || this.#failedAttempts > 0) {
      url.searchParams.set('attempts', String(this.#failedAttempts));
    }
    return url.href;
  }

  // ---- frames ---------------------------------------------------------------------------------

  #onFrame(data: unknown): void {
    this.#lastFrameAt = Date.now();
    this.#armWatchdog();
    const parsed = parseServerFrame(data);
    if (!parsed.ok) {
      this.#observer.malformed();
      return;
    }
    const frame = parsed.frame;
    if (frame.type === 'connected') {
      this.#onConnected(frame);
      return;
    }
    if (frame.type === 'ping') this.#send({ type: 'pong' });
    this.#observer.frame(frame);
  }

  #onConnected(frame: ConnectedMessage): void {
    if (frame.heartbeat_interval !== undefined) {
      this.#heartbeatMs = frame.heartbeat_interval * 1000;
      this.#armWatchdog();
    }
    const isReconnect = this.#hadConnection;
    this.#socketConfirmed = true;
    this.#hadConnection = true;
    this.#retryCount = 0;
    this.#restartRetries = 0;
    this.#restartUntil = 0;
    this.#failedAttempts = 0;
    this.#authRetried = false;
    this.#setSnapshot({ status: 'connected', retryCount: 0, error: null });
    this.#scheduleTokenRefresh();
    this.#observer.frame(frame);
    if (isReconnect && frame.resumed === undefined) this.#observer.resync({ reason: 'resume_unsupported' });
  }

  #send(frame: ClientFrame): void {
    if (this.#socket?.readyState === OPEN) this.#socket.send(JSON.stringify(frame));
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
        if (!this.#getToken || this.#authRetried) {
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
          this.#restartUntil = Date.now() + this.#timings.restartWindowMs;
          this.#setSnapshot({ status: 'connecting', error: null });
          this.#setTimer('retry', this.#random() * this.#timings.restartJitterMs, () => this.#startAttempt());
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
    // While a restarting service comes back, keep trying at a short, jittered pace: it is about
    // to listen again, and the growing backoff would find it up to 30 s late.
    const restarting = Date.now() < this.#restartUntil;
    const backoffRetry = this.#retryCount - this.#restartRetries;
    if (!restarting && backoffRetry >= this.#timings.maxAttempts) {
      this.#stop('retries_exhausted');
      return;
    }
    this.#retryCount += 1;
    if (restarting) this.#restartRetries += 1;
    this.#setSnapshot({ status: 'connecting', retryCount: this.#retryCount, error: null });
    const delay = restarting
      ? this.#timings.restartJitterMs * (0.5 + this.#random())
      : backoffDelay(backoffRetry + 1, this.#timings, this.#random);
    this.#setTimer('retry', delay, () => this.#startAttempt());
  }

  #stop(reason: StopReason): void {
    this.#active = false;
    this.#restartUntil = 0;
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

  #armWatchdog(delayMs = 2 * this.#heartbeatMs): void {
    this.#watchdogDueAt = Date.now() + delayMs;
    this.#setTimer('watchdog', delayMs, () => {
      // A background tab's timers are throttled and a frozen tab runs none; when it wakes up, this
      // timer may run before the frames that arrived meanwhile. Give them a moment first.
      if (Date.now() - this.#watchdogDueAt > LATE_TIMER_MS) this.#armWatchdog(HEARTBEAT_GRACE_MS);
      else this.#onHeartbeatTimeout();
    });
  }

  #scheduleTokenRefresh(): void {
    this.#clearTimer('refresh');
    const delay = refreshDelay(this.#token?.expiresAt, Date.now(), this.#timings.tokenRefreshLeadMs);
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

  #setSnapshot(patch: Partial<ConnectionSnapshot>): void {
    const next = { ...this.#snapshot, ...patch };
    const keys = Object.keys(next) as (keyof ConnectionSnapshot)[];
    if (keys.every((key) => next[key] === this.#snapshot[key])) return;
    this.#snapshot = next;
    this.#observer.state(next);
  }
}
