/**
 * The tab's side of connection sharing: one socket per browser for all tabs of a user.
 *
 * The socket lives in a worker running shared-worker.ts, its ConnectionHost. Where the browser has
 * SharedWorker, every tab of the user attaches to the one shared worker through a MessagePort.
 * Elsewhere (Chrome on Android, older Safari) the tabs elect a leader with the Web Locks API; the
 * leader starts the worker as its own dedicated worker, and every tab talks to it on a
 * BroadcastChannel. Either way each tab holds a lock for as long as it lives, so the host learns
 * at once when a tab is gone, and the host holds one, so the tabs learn at once when it is gone:
 * a new host starts and the tabs attach to it with where they stand (docs/web-client.md,
 * "Connection sharing").
 */

import { lockName, sharingScope, type HostMessage, type TabMessage } from './connection-host.js';
import { localLink, type ConnectionLink, type LinkSetup } from './connection-link.js';
import { holdLock, webLocks, whenReleased } from './leader-election.js';
import { connectionTimings } from './socket-connection.js';
import { normalizeToken, type TokenRequestReason } from './token.js';

/** What sharing needs from the browser. */
interface SharingEnvironment {
  locks: LockManager | undefined;
  BroadcastChannel: typeof BroadcastChannel | undefined;
  /** Starts (or joins) the shared worker named `name`; undefined where there is none. */
  startSharedWorker: ((name: string) => SharedWorker) | undefined;
  /** Starts the worker as the leader tab's own; undefined where workers cannot be started. */
  startWorker: ((name: string) => Worker) | undefined;
}

/** What travels on the BroadcastChannel: a tab's message, the host's to one tab or all, or a new host. */
export type ChannelMessage = { tab: TabMessage } | { host: HostMessage; to?: string } | { hostStarted: string };

function browserSharing(): SharingEnvironment {
  const scope = globalThis as { BroadcastChannel?: typeof BroadcastChannel; SharedWorker?: unknown; Worker?: unknown };
  // A CommonJS build has no `import.meta.url` to find the worker script by: no sharing there.
  const found = typeof import.meta.url === 'string';
  return {
    locks: webLocks(),
    BroadcastChannel: scope.BroadcastChannel,
    startSharedWorker:
      found && typeof scope.SharedWorker === 'function'
        ? (name) => new SharedWorker(new URL('./shared-worker.js', import.meta.url), { type: 'module', name })
        : undefined,
    startWorker:
      found && typeof scope.Worker === 'function'
        ? (name) => new Worker(new URL('./shared-worker.js', import.meta.url), { type: 'module', name })
        : undefined,
  };
}

/**
 * The link for a client whose tabs share their connection: to the shared worker, else to the
 * leader tab's worker, else (no Web Locks, no workers) a socket of the tab's own.
 */
export function openLink(setup: LinkSetup): ConnectionLink {
  const { locks: found, BroadcastChannel: Channel, startSharedWorker, startWorker } = browserSharing();
  const { tabId, sink, options } = setup;
  const channelled = !startSharedWorker && Channel && startWorker;
  if (!found || !(startSharedWorker ?? channelled)) return localLink(setup);
  const locks = found;
  const scope = sharingScope(setup.url, setup.userId);
  const stopping = new AbortController();
  const cleanups: (() => void)[] = [];
  /** Sends to the host; nothing goes anywhere before the tab has joined one. */
  let post: (message: TabMessage) => void = () => undefined;
  let welcomed = false;
  let focusedAt = 0;
  let unwatchHost: (() => void) | undefined;
  /** This tab's worker, while it leads. */
  let leading: Worker | null = null;

  const attach = (): void =>
    post({
      t: 'attach',
      tab: tabId,
      config: { url: setup.url, userId: setup.userId, timings: connectionTimings(options) },
      position: sink.position(),
      focusedAt,
      tokens: options.getToken !== undefined,
    });

  function receive(message: HostMessage): void {
    switch (message.t) {
      case 'welcome':
        welcomed = true;
        sink.welcome(message.snapshot, message.connected, message.position);
        unwatchHost?.();
        unwatchHost = whenReleased(locks, lockName(scope, 'host', message.host), hostGone);
        return;
      case 'state':
        sink.state(message.snapshot);
        return;
      case 'frame':
        sink.frame(message.frame, message.notify);
        return;
      case 'resync':
        sink.resync(message.request);
        return;
      case 'malformed':
        sink.malformed();
        return;
      case 'token?':
        void answerToken(message.request, message.reason);
        return;
      case 'dismiss':
        sink.dismissed(message.id);
        return;
    }
  }

  async function answerToken(request: number, reason: TokenRequestReason): Promise<void> {
    try {
      const token = normalizeToken(await options.getToken?.({ reason }));
      post({ t: 'token', tab: tabId, request, token, failed: false });
    } catch {
      post({ t: 'token', tab: tabId, request, token: null, failed: true });
    }
  }

  /** The host is gone: the shared worker is started again, and a leader starts its worker again. */
  function hostGone(): void {
    if (stopping.signal.aborted) return;
    if (startSharedWorker) joinSharedWorker(startSharedWorker);
    else if (leading && startWorker) lead(startWorker);
  }

  function started<W extends Worker | SharedWorker>(worker: W): W {
    // The script could not be loaded (a bundler that did not emit it, a Content-Security-Policy).
    worker.onerror = () => {
      if (welcomed || stopping.signal.aborted) return;
      stop();
      sink.unavailable();
    };
    return worker;
  }

  function joinSharedWorker(start: (name: string) => SharedWorker): void {
    const port = started(start(scope)).port;
    port.onmessage = (event: MessageEvent<HostMessage>) => receive(event.data);
    port.start();
    post = (message) => port.postMessage(message);
    cleanups.push(() => port.close());
    attach();
  }

  function joinChannel(Broadcast: typeof BroadcastChannel, start: (name: string) => Worker): void {
    const channel = new Broadcast(scope);
    channel.onmessage = ({ data }: MessageEvent<ChannelMessage>) => {
      if ('hostStarted' in data) attach();
      else if ('host' in data && (data.to ?? tabId) === tabId) receive(data.host);
    };
    post = (message) => channel.postMessage({ tab: message } satisfies ChannelMessage);
    cleanups.push(() => channel.close());
    // A host, if there is one, hears this; a host started later asks every tab to attach.
    attach();
    holding(lockName(scope, 'leader'), () => {
      sink.sharing('leader');
      lead(start);
    });
  }

  /** This tab leads: its own worker holds the socket for all the user's tabs. */
  function lead(start: (name: string) => Worker): void {
    leading?.terminate();
    leading = started(start(scope));
  }

  /** Once lock `name` is held (and released when the link stops), `then`, unless it stopped meanwhile. */
  function holding(name: string, then: () => void): void {
    holdLock(locks, name, stopping.signal).then((release) => {
      if (stopping.signal.aborted) {
        release();
        return;
      }
      cleanups.push(release);
      then();
    }, ignore);
  }

  function stop(): void {
    stopping.abort();
    unwatchHost?.();
    leading?.terminate();
    for (const cleanup of cleanups.splice(0).reverse()) cleanup();
  }

  return {
    open() {
      sink.sharing(channelled ? 'follower' : 'worker');
      // The host watches this lock: held before attaching, released when the tab goes.
      holding(lockName(scope, 'tab', tabId), () => {
        if (channelled) joinChannel(Channel, startWorker);
        else if (startSharedWorker) joinSharedWorker(startSharedWorker);
      });
    },
    close() {
      post({ t: 'detach', tab: tabId });
      stop();
    },
    retry: () => post({ t: 'retry' }),
    wake: () => post({ t: 'wake' }),
    focus(at) {
      focusedAt = at;
      post({ t: 'focus', tab: tabId, at });
    },
    async refreshToken() {
      const token = normalizeToken(await options.getToken?.({ reason: 'refresh' }));
      if (token) post({ t: 'auth', token });
    },
    dismiss: (id) => post({ t: 'dismiss', id }),
  };
}

const ignore = (): void => undefined;
