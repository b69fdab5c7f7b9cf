/**
 * How a tab's WebSocketSyncClient reaches its connection: through a link. The local link owns a
 * socket of its own; the shared links (shared-connection.ts) attach to a ConnectionHost in the
 * shared worker or the leader tab's worker. Every link reports to the client through the same sink, so the
 * client behaves the same whichever one it has.
 */

import type { ConnectedMessage, ServerFrame } from './protocol.js';
import {
  SocketConnection,
  type ConnectionSnapshot,
  type ResumePosition,
  type ResyncRequest,
  type SocketOptions,
  type WebSocketConstructor,
} from './socket-connection.js';
import { operationTab } from './toast-coordinator.js';

/**
 * Where this tab's connection lives: `off` a socket of its own (not shared), `worker` the shared
 * worker's socket, `leader` the socket of this tab's worker, held for all the user's tabs,
 * `follower` the leader tab's.
 */
export type SharingMode = 'off' | 'worker' | 'leader' | 'follower';

/** What a link reports to the tab's client. */
export interface LinkSink {
  /** The offset up to which this tab has received events: offered to a new host on a takeover. */
  position(): ResumePosition | null;
  sharing(mode: SharingMode): void;
  state(snapshot: ConnectionSnapshot): void;
  /** The tab joined a host: its state, and the `connected` frame of its live socket if any. */
  welcome(snapshot: ConnectionSnapshot, connected: ConnectedMessage | null, position: ResumePosition | null): void;
  /** A server frame; `notify` names the tab that shows a `task_update`'s notification. */
  frame(frame: ServerFrame, notify: string | null): void;
  resync(request: ResyncRequest): void;
  malformed(): void;
  /** A notification was dismissed in some tab. */
  dismissed(id: string): void;
  /** Sharing cannot work here after all (the worker script did not load): use a socket of the tab's own. */
  unavailable(): void;
}

export interface ConnectionLink {
  open(): void;
  close(): void;
  retry(): void;
  wake(): void;
  /** The user turned to this tab (epoch ms): it is the one to show the next notifications. */
  focus(at: number): void;
  refreshToken(): Promise<void>;
  dismiss(id: string): void;
}

export interface LinkSetup {
  readonly url: string;
  readonly userId: string;
  readonly tabId: string;
  readonly options: SocketOptions;
  readonly WebSocket: WebSocketConstructor;
  readonly sink: LinkSink;
}

/** A socket of the tab's own: every event's notification is this tab's, unless it acted. */
export function localLink({ url, userId, tabId, options, WebSocket, sink }: LinkSetup): ConnectionLink {
  const connection = new SocketConnection(url, userId, { ...options, WebSocket }, {
    // A client connected again after `disconnect()` resumes where it stood.
    position: () => sink.position(),
    state: (snapshot) => sink.state(snapshot),
    frame: (frame) => sink.frame(frame, frame.type === 'task_update' && operationTab(frame.op_id) === tabId ? null : tabId),
    resync: (request) => sink.resync(request),
    malformed: () => sink.malformed(),
  });
  return {
    open() {
      sink.sharing('off');
      connection.connect();
    },
    close: () => connection.disconnect(),
    retry: () => connection.retry(),
    wake: () => connection.wake(),
    focus: () => undefined,
    refreshToken: () => connection.refreshToken(),
    dismiss: (id) => sink.dismissed(id),
  };
}

