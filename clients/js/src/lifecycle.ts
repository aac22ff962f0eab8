/** Page lifecycle signals the client reacts to; inert outside a browser. */

/** Calls `listener(hidden)` when the page's visibility changes. */
export function watchVisibility(listener: (hidden: boolean) => void): () => void {
  if (typeof document === 'undefined' || typeof document.addEventListener !== 'function') return () => {};
  const handler = (): void => listener(document.visibilityState === 'hidden');
  document.addEventListener('visibilitychange', handler);
  return () => document.removeEventListener('visibilitychange', handler);
}

export function isHidden(): boolean {
  return typeof document !== 'undefined' && document.visibilityState === 'hidden';
}

/** Calls `listener` when the browser regains network access. */
export function watchOnline(listener: () => void): () => void {
  if (typeof window === 'undefined' || typeof window.addEventListener !== 'function') return () => {};
  window.addEventListener('online', listener);
  return () => window.removeEventListener('online', listener);
}

/** Reports an exception thrown by application code without interrupting the caller. */
export function reportLater(error: unknown): void {
  if (typeof globalThis.reportError === 'function') {
    globalThis.reportError(error);
  } else {
    setTimeout(() => {
      throw error;
    }, 0);
  }
}

/** Calls application code; an exception is reported, not propagated into the client. */
export function callSafely<T>(fn: (value: T) => void, value: T): void {
  try {
    fn(value);
  } catch (error) {
    reportLater(error);
  }
}
