import { HeraldError, readErrorBody } from './errors.js';
import type { TokenSource } from './token.js';

export interface HubRequest {
  url: string;
  init: RequestInit;
  tokens: TokenSource;
  credentials: RequestCredentials;
  fetch: typeof fetch | undefined;
}

/**
 * One request to the hub's HTTP API with the current token, renewed first when
 * due and once more if the hub says it expired or is invalid. Resolves with the
 * parsed JSON answer; rejects with a {@link HeraldError}.
 */
export async function hubRequest({ url, init, tokens, credentials, fetch: fetchImpl }: HubRequest): Promise<unknown> {
  const doFetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  for (let attempt = 0; ; attempt++) {
    if (tokens.needed) await tokens.refresh();
    const token = tokens.current;
    const headers = new Headers(init.headers);
    if (token !== null) headers.set('Authorization', `Bearer ${token}`);
    let response: Response;
    try {
      response = await doFetch(url, { ...init, headers, credentials });
    } catch (cause) {
      throw new HeraldError('network', `${init.method ?? 'GET'} ${url} failed`, { cause });
    }
    if (response.ok) {
      try {
        return await response.json();
      } catch (cause) {
        throw new HeraldError('bad_response', `${init.method ?? 'GET'} ${url}: the answer is not JSON`, { cause });
      }
    }
    const body = await readErrorBody(response);
    const renewable = body.code === 'token_expired' || body.code === 'invalid_token';
    if (response.status === 401 && attempt === 0 && renewable && tokens.refreshable && token === tokens.current) {
      tokens.invalidate(body.code === 'token_expired' ? 'expired' : 'rejected');
      continue;
    }
    throw new HeraldError(body.code, body.message, { status: response.status });
  }
}
