import { useCallback, useEffect, useLayoutEffect, useRef, useState, useSyncExternalStore } from 'react';
import { HeraldError } from '../errors.js';
import type { SubscribeOptions } from '../subscriptions.js';
import type { ConnectionState, EventMap, EventOf, EventType, PresenceChange, PresenceMember } from '../types.js';
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

export interface PresenceState {
  /** Who is on the channel, in the order they joined. */
  members: PresenceMember[];
  /** True until the first list of members arrived. */
  loading: boolean;
  /** Why the members could not be fetched (presence not enabled, channel refused, ...). */
  error: HeraldError | null;
}

const NO_PRESENCE: PresenceState = { members: [], loading: false, error: null };

/**
 * Who is present on `channel` (a namespace with presence), kept up to date: the
 * members are fetched, then `presence.join` and `presence.leave` events applied.
 * They are fetched again whenever the connection (re)opens, since presence events
 * are live only and a disconnected client misses them. A `null` channel tracks
 * nothing. The subscription follows `channel` only.
 */
export function usePresence(channel: string | null | undefined): PresenceState {
  const client = useHeraldClient();
  const [state, setState] = useState<PresenceState>(() => (channel ? { members: [], loading: true, error: null } : NO_PRESENCE));

  useEffect(() => {
    if (!channel) {
      setState(NO_PRESENCE);
      return undefined;
    }
    let active = true;
    let members: PresenceMember[] | null = null;
    /** Changes seen while a fetch is under way, applied on top of its answer. */
    let buffered: PresenceChange[] = [];
    let fetching = 0;
    setState({ members: [], loading: true, error: null });

    const publish = (list: PresenceMember[]): void => {
      members = list;
      setState({ members: list, loading: false, error: null });
    };
    const refetch = (): void => {
      const serial = ++fetching;
      buffered = [];
      client.presence(channel).then(
        (list) => {
          if (!active || serial !== fetching) return;
          let next = list;
          for (const change of buffered) next = applyPresence(next, change);
          buffered = [];
          fetching = 0;
          publish(next);
        },
        (error: unknown) => {
          if (!active || serial !== fetching) return;
          fetching = 0;
          const failure = error instanceof HeraldError ? error : new HeraldError('network', String(error), { cause: error });
          setState((previous) => ({ members: previous.members, loading: false, error: failure }));
        },
      );
    };
    const stopChanges = client.onPresence(channel, (change) => {
      if (fetching !== 0 || members === null) {
        buffered.push(change);
        return;
      }
      publish(applyPresence(members, change));
    });
    const stopState = client.onStateChange((connection) => {
      if (connection === 'open') refetch();
    });
    refetch();
    return () => {
      active = false;
      stopChanges();
      stopState();
    };
  }, [client, channel]);

  return state;
}

/** A member list with one join or leave applied (a user is listed once). */
export function applyPresence(members: readonly PresenceMember[], change: PresenceChange): PresenceMember[] {
  const rest = members.filter((m) => m.user !== change.user);
  if (change.kind === 'leave') return rest.length === members.length ? [...members] : rest;
  const existing = members.find((m) => m.user === change.user);
  if (existing) {
    return members.map((m) => (m.user === change.user && change.info !== undefined ? { ...m, info: change.info } : m));
  }
  return [...members, change.info === undefined ? { user: change.user, connections: 1 } : { user: change.user, info: change.info, connections: 1 }];
}
