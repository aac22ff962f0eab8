import { useCallback, useEffect, useLayoutEffect, useRef, useSyncExternalStore } from 'react';
import type { SubscribeOptions } from '../subscriptions.js';
import type { ConnectionState, EventMap, EventOf, EventType } from '../types.js';
import { useHeraldClient } from './context.js';

const useIsomorphicLayoutEffect = typeof window === 'undefined' ? useEffect : useLayoutEffect;

/**
 * Calls `handler` for each event on `channel` (of one `type`, when given) while
 * the component is mounted. The subscription follows `channel` and `type` only:
 * a new `handler` or `options` object on each render does not resubscribe, and
 * the latest ones are always the ones called. A `null` channel subscribes to nothing.
 */
export function useChannel<M extends EventMap = EventMap>(
  channel: string | null | undefined,
  handler: (event: EventOf<M>) => void,
  options?: SubscribeOptions,
): void;
export function useChannel<M extends EventMap = EventMap, K extends EventType<M> = EventType<M>>(
  channel: string | null | undefined,
  type: K,
  handler: (event: EventOf<M, K>) => void,
  options?: SubscribeOptions,
): void;
export function useChannel(
  channel: string | null | undefined,
  typeOrHandler: string | ((event: never) => void),
  handlerOrOptions?: ((event: never) => void) | SubscribeOptions,
  maybeOptions?: SubscribeOptions,
): void {
  const client = useHeraldClient();
  const type = typeof typeOrHandler === 'string' ? typeOrHandler : null;
  const handler = (type === null ? typeOrHandler : handlerOrOptions) as (event: EventOf<EventMap>) => void;
  const options = (type === null ? handlerOrOptions : maybeOptions) as SubscribeOptions | undefined;

  const latest = useRef({ handler, options });
  useIsomorphicLayoutEffect(() => {
    latest.current = { handler, options };
  });

  useEffect(() => {
    if (!channel) return undefined;
    const listener = (event: EventOf<EventMap>): void => latest.current.handler(event);
    const subscribeOptions: SubscribeOptions = {
      onReset: (notice) => latest.current.options?.onReset?.(notice),
      onError: (error) => latest.current.options?.onError?.(error),
    };
    return type === null
      ? client.subscribe(channel, listener, subscribeOptions)
      : client.subscribe(channel, type, listener, subscribeOptions);
  }, [client, channel, type]);
}

/** The client's connection state; the component re-renders when it changes. */
export function useConnectionState(): ConnectionState {
  const client = useHeraldClient();
  const subscribe = useCallback((onChange: () => void) => client.onStateChange(onChange), [client]);
  const read = useCallback(() => client.state, [client]);
  return useSyncExternalStore(subscribe, read, read);
}
