/**
 * Calls an application callback so that its failure neither stops the caller's loop (other
 * listeners still run, the socket keeps going) nor disappears: the error is rethrown on a fresh
 * microtask, where the browser console, error reporters and test runners still see it.
 */
export function callSafely<T>(listener: (payload: T) => void, payload: T): void {
  try {
    listener(payload);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}
