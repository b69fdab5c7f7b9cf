/**
 * Web Locks as the sharing machinery needs them: a lock held for as long as a tab or worker lives
 * (the browser releases it when the holder goes away, however it goes), the leader's lock that
 * the next tab in line is granted when the leader goes, and a watch on another holder's lock
 * that fires when that holder is gone.
 */

/** The Web Locks API of this page or worker, if it has one. */
export function webLocks(): LockManager | undefined {
  return (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
}

/**
 * Resolves once `name` is held, with the function that releases it. Waits in line while another
 * holds it: that is the leader election. Rejects when `signal` aborts before the lock is granted.
 */
export function holdLock(locks: LockManager, name: string, signal?: AbortSignal): Promise<() => void> {
  return new Promise((resolve, reject) => {
    locks
      .request(name, signal ? { signal } : {}, () => new Promise<void>((release) => resolve(release)))
      .catch(reject);
  });
}

/**
 * Calls `onGone` once the current holder of `name` has let it go (its page closed or crashed, its
 * worker stopped). Only for locks their holder took before this is called. Returns the function
 * that stops watching.
 */
export function whenReleased(locks: LockManager, name: string, onGone: () => void): () => void {
  const watching = new AbortController();
  // Granted means the holder is gone; returning at once hands the lock to whoever is next.
  locks.request(name, { signal: watching.signal }, () => onGone()).catch(() => {
    // Aborted: the watch was stopped.
  });
  return () => watching.abort();
}
