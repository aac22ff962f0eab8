// Signing in to the demo: a token from the hub's `POST /demo/token` for a chosen
// name (or one pasted by hand when the hub does not mint demo tokens), and the
// client that uses it.
import { HeraldClient, HeraldError, type TokenProvider } from '@herald/client';

export interface Account {
  readonly user: string;
  readonly client: HeraldClient<DemoEvents>;
}

/** A card of the task board. */
export interface Card {
  id: string;
  title: string;
  column: Column;
  by: string;
}

export type Column = 'next' | 'doing' | 'done';
export const COLUMNS: readonly Column[] = ['next', 'doing', 'done'];

/** The events of the demo's channels. */
export type DemoEvents = {
  'card.created': { id: string; title: string; column?: Column; by?: string };
  'card.moved': { id: string; column: Column; by?: string };
  'chat.message': { user: string; text: string };
  typing: { user: string };
};

export const BOARD = 'demo:board';
export const CHAT = 'demo:chat';

/** Asks the hub for a demo token; `null` when the hub does not mint them. */
async function demoToken(user: string): Promise<string | null> {
  const response = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  if (response.status === 404) return null;
  const body = (await response.json().catch(() => null)) as { token?: string; error?: { code: string; message: string } } | null;
  if (!response.ok || typeof body?.token !== 'string') {
    throw new HeraldError(body?.error?.code ?? `http_${response.status}`, body?.error?.message ?? response.statusText, {
      status: response.status,
    });
  }
  return body.token;
}

/** The `sub` of a JWT, if it can be read. */
export function tokenSubject(token: string): string | null {
  try {
    const payload = token.split('.')[1] ?? '';
    const claims = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as { sub?: unknown };
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null;
  }
}

/**
 * Signs `user` in. Resolves `null` when the hub mints no demo tokens (the page then
 * asks for a token instead).
 */
export async function signIn(user: string): Promise<Account | null> {
  const first = await demoToken(user);
  if (first === null) return null;
  let pending: string | null = first;
  // The first token is already here; later ones (renewal, rejection) are asked for again.
  const token: TokenProvider = async () => {
    const ready = pending;
    pending = null;
    const next = ready ?? (await demoToken(user));
    if (next === null) throw new Error('the hub stopped minting demo tokens');
    return next;
  };
  return { user, client: createClient(token) };
}

/** A account for a token pasted by hand. */
export function withToken(token: string): Account {
  const user = tokenSubject(token);
  if (user === null) throw new Error('this is not a token with a subject (sub)');
  return { user, client: createClient(token) };
}

function createClient(token: string | TokenProvider): HeraldClient<DemoEvents> {
  return new HeraldClient<DemoEvents>({
    url: location.origin,
    token,
    // A WebSocket, for the chat's live-only client events (typing, messages).
    transport: 'ws',
    // Reconnect quickly: the demo is often used to watch a hub restart.
    reconnect: { initialDelayMs: 300, maxDelayMs: 3000 },
  });
}
