/**
 * The worker that holds the one socket of a user's tabs, its ConnectionHost (docs/web-client.md,
 * "Connection sharing"). It is named after its sharing scope (service and user), so a user's tabs
 * find it and another user's never do. Started as a SharedWorker, every tab of the user attaches
 * through a MessagePort; where there is no SharedWorker, the leader tab starts it as its own
 * dedicated worker and the tabs reach it on a BroadcastChannel. Either way the socket lives in a
 * worker, whose timers background tabs do not throttle: heartbeat watch and backoff keep time.
 */

import { ConnectionHost, lockName, type HostMessage, type HostTransport, type SharedConnectionConfig, type TabMessage } from './connection-host.js';
import { holdLock, webLocks, whenReleased } from './leader-election.js';
import type { ChannelMessage } from './shared-connection.js';
import { newTabId } from './toast-coordinator.js';

/** The parts of the worker global scopes used here (lib.dom, which the package compiles with, has none). */
interface WorkerScope {
  readonly name: string;
  onconnect?: ((event: MessageEvent) => void) | null;
  addEventListener(type: 'online', listener: () => void): void;
}

const worker = globalThis as unknown as WorkerScope;
const scope = worker.name;
const locks = webLocks();
const hostId = newTabId();
let host: ConnectionHost | null = null;

// Held for the worker's whole life: the tabs watch it to learn when this host is gone. Nothing
// is answered before it is held.
const ready: Promise<unknown> = locks ? holdLock(locks, lockName(scope, 'host', hostId)) : Promise.resolve();

function hostFor(config: SharedConnectionConfig, transport: HostTransport, forget: (tabId: string) => void): ConnectionHost {
  host ??= new ConnectionHost(config, transport, {
    id: hostId,
    WebSocket,
    ...(locks && {
      watchTab: (tabId: string, onGone: () => void) =>
        whenReleased(locks, lockName(scope, 'tab', tabId), () => {
          forget(tabId);
          onGone();
        }),
    }),
  });
  return host;
}

function receive(message: TabMessage, transport: HostTransport, forget: (tabId: string) => void): void {
  if (message.t === 'attach') hostFor(message.config, transport, forget).receive(message);
  else host?.receive(message);
  if (message.t === 'detach') forget(message.tab);
}

if ('onconnect' in worker) {
  const ports = new Map<string, MessagePort>();
  const transport: HostTransport = {
    toTab: (tabId, message) => ports.get(tabId)?.postMessage(message),
    toAll: (message) => {
      for (const port of ports.values()) port.postMessage(message);
    },
  };
  const forget = (tabId: string): void => void ports.delete(tabId);
  worker.onconnect = (event) => {
    const port = event.ports[0];
    if (!port) return;
    // Each message waits for the lock; `then` callbacks run in the order they were added.
    port.onmessage = ({ data }: MessageEvent<TabMessage>) =>
      void ready.then(() => {
        if (data.t === 'attach') ports.set(data.tab, port);
        receive(data, transport, forget);
      });
  };
} else {
  const channel = new BroadcastChannel(scope);
  const announce = (message: ChannelMessage): void => channel.postMessage(message);
  const transport: HostTransport = {
    toTab: (to, message: HostMessage) => announce({ host: message, to }),
    toAll: (message) => announce({ host: message }),
  };
  channel.onmessage = ({ data }: MessageEvent<ChannelMessage>) => {
    if ('tab' in data) void ready.then(() => receive(data.tab, transport, () => undefined));
  };
  // Every tab attaches (again), to this host, with where it stands.
  void ready.then(() => announce({ hostStarted: hostId }));
}

worker.addEventListener('online', () => host?.receive({ t: 'wake' }));
