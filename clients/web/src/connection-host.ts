/**
 * ConnectionHost: the one socket that the tabs of a user share, and the tabs it serves. It runs in
 * the user's shared worker, or where there is none in the leader tab's own worker
 * (shared-worker.ts; docs/web-client.md, "Connection sharing"), and speaks to the tabs only in the messages below, which a MessagePort or a
 * BroadcastChannel carries as they are.
 *
 * To the service it is one ordinary client of protocol v1. To the tabs it relays every frame,
 * names the one tab that shows each event's notification, fetches tokens from the tabs (the
 * freshest wins) and resumes, after a takeover, from the oldest offset an attached tab holds.
 */

import type { ConnectedMessage, ServerFrame } from './protocol.js';
import {
  SocketConnection,
  positionAfter,
  type ConnectionSnapshot,
  type ConnectionTimings,
  type ResumePosition,
  type ResyncRequest,
  type WebSocketConstructor,
} from './socket-connection.js';
import { notificationTarget } from './toast-coordinator.js';
import type { ResolvedToken, TokenRequestReason } from './token.js';

/** Names the sharing of one user's connection to one service: the worker, channel and locks. */
export function sharingScope(url: string, userId: string): string {
  // The version names the messages below: tabs of an older build never talk to a newer worker.
  return JSON.stringify(['tasksync-shared/1', url, userId]);
}

/** The lock a tab holds while it lives, or the host while it lives, or the leader. */
export function lockName(scope: string, holder: 'tab' | 'host' | 'leader', id = ''): string {
  return `${scope} ${holder} ${id}`;
}

/** Everything a host needs to open the connection, sent by each tab when it attaches. */
export interface SharedConnectionConfig {
  readonly url: string;
  readonly userId: string;
  readonly timings: ConnectionTimings;
}

/** From a tab to the host of its connection. */
export type TabMessage =
  | {
      t: 'attach';
      tab: string;
      config: SharedConnectionConfig;
      position: ResumePosition | null;
      focusedAt: number;
      /** Whether the tab has a token provider to ask. */
      tokens: boolean;
    }
  | { t: 'detach'; tab: string }
  | { t: 'focus'; tab: string; at: number }
  /** A tab's answer to `token?`: `failed` when its provider threw. */
  | { t: 'token'; tab: string; request: number; token: ResolvedToken | null; failed: boolean }
  /** A token refreshed in a tab (`refreshToken()`), to send in-band on the shared socket. */
  | { t: 'auth'; token: ResolvedToken }
  | { t: 'retry' }
  | { t: 'wake' }
  | { t: 'dismiss'; id: string };

/** From the host to one tab (`welcome`, `token?`) or to all. */
export type HostMessage =
  | {
      t: 'welcome';
      host: string;
      snapshot: ConnectionSnapshot;
      /** The `connected` frame of the live socket, if there is one. */
      connected: ConnectedMessage | null;
      position: ResumePosition | null;
    }
  | { t: 'state'; snapshot: ConnectionSnapshot }
  /** `notify`: the tab that shows the notification of a `task_update`. */
  | { t: 'frame'; frame: ServerFrame; notify: string | null }
  | { t: 'resync'; request: ResyncRequest }
  | { t: 'malformed' }
  | { t: 'token?'; request: number; reason: TokenRequestReason }
  | { t: 'dismiss'; id: string };

export interface HostTransport {
  toTab(tabId: string, message: HostMessage): void;
  toAll(message: HostMessage): void;
}

export interface HostEnvironment {
  /** The host's id: the tabs watch the lock named by it to learn that the host is gone. */
  id: string;
  WebSocket: WebSocketConstructor;
  /**
   * Calls `onGone` once the tab is gone without saying so (closed, crashed); returns the function
   * that stops watching. Without it a tab that vanished is kept until the host ends.
   */
  watchTab?: (tabId: string, onGone: () => void) => () => void;
}

interface HostedTab {
  focusedAt: number;
  tokens: boolean;
  unwatch: (() => void) | undefined;
}

/** One `getToken` round: the tabs still to answer and the freshest token so far. */
interface TokenRound {
  waiting: Set<string>;
  answer(tabId: string, token: ResolvedToken | null | undefined): void;
}

/**
 * How long a token round waits for the remaining tabs after the first answer: long enough for
 * every live tab's provider (usually a cache), short enough that one stuck tab cannot hold up
 * the reconnect.
 */
const TOKEN_ROUND_MS = 500;

function fresher(candidate: ResolvedToken | null, held: ResolvedToken | null): boolean {
  if (!candidate) return false;
  return !held || (candidate.expiresAt ?? 0) > (held.expiresAt ?? 0);
}

export class ConnectionHost {
  readonly #transport: HostTransport;
  readonly #environment: HostEnvironment;
  readonly #connection: SocketConnection;
  readonly #tabs = new Map<string, HostedTab>();
  readonly #rounds = new Map<number, TokenRound>();
  #roundsStarted = 0;
  #connected: ConnectedMessage | null = null;
  /** The offset up to which the tabs were sent events: where the socket resumes from. */
  #position: ResumePosition | null = null;

  constructor(config: SharedConnectionConfig, transport: HostTransport, environment: HostEnvironment) {
    this.#transport = transport;
    this.#environment = environment;
    this.#connection = new SocketConnection(
      config.url,
      config.userId,
      { ...config.timings, WebSocket: environment.WebSocket, getToken: ({ reason }) => this.#collectToken(reason) },
      {
        position: () => this.#position,
        state: (snapshot) => {
          if (snapshot.status !== 'connected') this.#connected = null;
          transport.toAll({ t: 'state', snapshot });
        },
        frame: (frame) => {
          if (frame.type === 'connected') this.#connected = frame;
          this.#position = positionAfter(this.#position, frame);
          const notify = frame.type === 'task_update' ? notificationTarget(this.#focus(), frame.op_id) : null;
          transport.toAll({ t: 'frame', frame, notify });
        },
        resync: (request) => transport.toAll({ t: 'resync', request }),
        malformed: () => transport.toAll({ t: 'malformed' }),
      },
    );
  }

  receive(message: TabMessage): void {
    switch (message.t) {
      case 'attach':
        this.#attach(message);
        return;
      case 'detach':
        this.#drop(message.tab);
        return;
      case 'focus': {
        const tab = this.#tabs.get(message.tab);
        if (tab) tab.focusedAt = Math.max(tab.focusedAt, message.at);
        return;
      }
      case 'token':
        this.#rounds.get(message.request)?.answer(message.tab, message.failed ? undefined : message.token);
        return;
      case 'auth':
        this.#connection.useToken(message.token);
        return;
      case 'retry':
        this.#connection.retry();
        return;
      case 'wake':
        this.#connection.wake();
        return;
      case 'dismiss':
        this.#transport.toAll(message);
        return;
    }
  }

  #attach(message: Extract<TabMessage, { t: 'attach' }>): void {
    const known = this.#tabs.get(message.tab);
    known?.unwatch?.();
    this.#tabs.set(message.tab, {
      focusedAt: Math.max(known?.focusedAt ?? 0, message.focusedAt),
      tokens: message.tokens,
      unwatch: this.#environment.watchTab?.(message.tab, () => this.#drop(message.tab)),
    });
    // A new host, after a takeover, resumes from the oldest position the tabs offer in its epoch,
    // so that no tab misses an event (tabs drop what they already have). A tab that joins behind
    // a live socket finds the gap in the next offset, and refetches.
    const offered = message.position;
    const held = this.#position;
    if (offered && (!held || (held.epoch === offered.epoch && offered.seq < held.seq))) this.#position = offered;
    this.#transport.toTab(message.tab, {
      t: 'welcome',
      host: this.#environment.id,
      snapshot: this.#connection.snapshot,
      connected: this.#connected,
      position: this.#position,
    });
    this.#connection.connect();
  }

  #drop(tabId: string): void {
    const tab = this.#tabs.get(tabId);
    if (!tab) return;
    tab.unwatch?.();
    this.#tabs.delete(tabId);
    for (const round of [...this.#rounds.values()]) round.answer(tabId, undefined);
    if (this.#tabs.size === 0) this.#connection.disconnect();
  }

  *#focus(): Iterable<{ tabId: string; focusedAt: number }> {
    for (const [tabId, tab] of this.#tabs) yield { tabId, focusedAt: tab.focusedAt };
  }

  /**
   * The token for the next handshake or refresh: every tab with a provider is asked, and the
   * token that expires last wins, so the socket never runs on a token some tab already replaced.
   * Rejects (the attempt fails and backs off) when every provider failed.
   */
  #collectToken(reason: TokenRequestReason): ResolvedToken | null | Promise<ResolvedToken | null> {
    const askable = [...this.#tabs].filter(([, tab]) => tab.tokens).map(([tabId]) => tabId);
    if (askable.length === 0) return null;
    const request = ++this.#roundsStarted;
    return new Promise((resolve, reject) => {
      let best: ResolvedToken | null = null;
      let answered = false;
      let deadline: ReturnType<typeof setTimeout> | undefined;
      const finish = (): void => {
        clearTimeout(deadline);
        this.#rounds.delete(request);
        if (answered) resolve(best);
        else reject(new Error('no tab could supply a token'));
      };
      this.#rounds.set(request, {
        waiting: new Set(askable),
        answer(tabId, token) {
          if (!this.waiting.delete(tabId)) return;
          if (token !== undefined) {
            answered = true;
            if (fresher(token, best)) best = token;
            deadline ??= setTimeout(finish, TOKEN_ROUND_MS);
          }
          if (this.waiting.size === 0) finish();
        },
      });
      for (const tabId of askable) this.#transport.toTab(tabId, { t: 'token?', request, reason });
    });
  }
}
