import { useCallback, useEffect, useState, useSyncExternalStore } from 'react';
import {
  NotificationsFeed,
  TasksFeed,
  initialNotificationsState,
  initialTasksState,
  type NotificationsState,
  type TasksState,
} from '../inbox-state.js';
import { useHeraldClient } from './context.js';

export interface InboxHookOptions {
  /** The signed-in user (the token's `sub`). Default: the user the hub names once connected. */
  user?: string;
  /** Page size of the first fetch (and of each {@link UseNotifications.loadMore}). */
  limit?: number;
}

/** What {@link useNotifications} returns: the inbox and what can be done to it. */
export interface UseNotifications extends NotificationsState {
  markRead(id: string): Promise<void>;
  markAllRead(): Promise<void>;
  remove(id: string): Promise<void>;
  removeAll(): Promise<void>;
  /** Loads the next (older) page, when {@link NotificationsState.hasMore}. */
  loadMore(): Promise<void>;
  refetch(): void;
}

/** What {@link useTasks} returns. */
export interface UseTasks extends TasksState {
  refetch(): void;
}

const noop = (): void => {};
const nothing = (): Promise<void> => Promise.resolve();

function useFeed<F extends NotificationsFeed | TasksFeed>(create: () => F, deps: readonly unknown[]): F | null {
  const [feed, setFeed] = useState<F | null>(null);
  useEffect(() => {
    const created = create();
    created.start();
    setFeed(created);
    return () => created.stop();
    // `create` is a new closure each render; the feed follows `deps` only.
  }, deps);
  return feed;
}

function useFeedState<S>(feed: { state: S; subscribe(listener: () => void): () => void } | null, initial: S): S {
  const subscribe = useCallback((onChange: () => void) => feed?.subscribe(onChange) ?? noop, [feed]);
  const read = useCallback(() => feed?.state ?? initial, [feed, initial]);
  return useSyncExternalStore(subscribe, read, read);
}

/**
 * The signed-in user's notification inbox: the newest page, the unread count, and
 * the actions on it. Kept live by the `notification.*` events of the user's channel
 * and `$broadcast`; fetched again after a `reset`.
 *
 * ```tsx
 * const { notifications, unreadCount, markRead, markAllRead, remove } = useNotifications();
 * ```
 */
export function useNotifications(options: InboxHookOptions = {}): UseNotifications {
  const client = useHeraldClient();
  const { user, limit } = options;
  const feed = useFeed(
    () => new NotificationsFeed(client, { ...(user === undefined ? {} : { user }), ...(limit === undefined ? {} : { limit }) }),
    [client, user, limit],
  );
  const state = useFeedState(feed, initialNotificationsState);
  return {
    ...state,
    markRead: useCallback((id: string) => feed?.markRead(id) ?? nothing(), [feed]),
    markAllRead: useCallback(() => feed?.markAllRead() ?? nothing(), [feed]),
    remove: useCallback((id: string) => feed?.remove(id) ?? nothing(), [feed]),
    removeAll: useCallback(() => feed?.removeAll() ?? nothing(), [feed]),
    loadMore: useCallback(() => feed?.loadMore() ?? nothing(), [feed]),
    refetch: useCallback(() => feed?.refetch(), [feed]),
  };
}

/**
 * The signed-in user's tasks, most recently updated first, kept live by
 * `task.created` / `task.updated` on the user's channel; fetched again after a `reset`.
 */
export function useTasks(options: InboxHookOptions = {}): UseTasks {
  const client = useHeraldClient();
  const { user, limit } = options;
  const feed = useFeed(
    () => new TasksFeed(client, { ...(user === undefined ? {} : { user }), ...(limit === undefined ? {} : { limit }) }),
    [client, user, limit],
  );
  const state = useFeedState(feed, initialTasksState);
  return { ...state, refetch: useCallback(() => feed?.refetch(), [feed]) };
}
