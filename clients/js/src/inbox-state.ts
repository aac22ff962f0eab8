/**
 * The notification inbox and the task list kept live: a snapshot fetched over
 * REST, then the `notification.*` and `task.*` events of the user's channel and
 * `$broadcast` applied to it, and a refetch whenever the hub says it could not
 * replay what was missed (`reset`).
 *
 * The state changes are pure functions (`applyNotificationChange`, ...) so they
 * can be tested and reused; {@link NotificationsFeed} and {@link TasksFeed} wire
 * them to a client and are what the React hooks read.
 */
import type { HeraldClient } from './client.js';
import { HeraldError, isRecord } from './errors.js';
import { parseNotification, parseTask, type Notification, type NotificationPage, type Task } from './inbox.js';
import type { EventMap, HeraldEvent, Unsubscribe } from './types.js';

/** The channel every connection carries that reaches all users. */
export const BROADCAST = '$broadcast';

// --- notifications: pure state ------------------------------------------------

export interface NotificationsState {
  /** Newest first. */
  readonly notifications: readonly Notification[];
  readonly unreadCount: number;
  /** More (older) notifications can be loaded. */
  readonly hasMore: boolean;
  readonly nextCursor: string | null;
  /** The first page is being fetched (at start or after a reset). */
  readonly loading: boolean;
  readonly loadingMore: boolean;
  /** The last failure of a request, cleared by the next success. */
  readonly error: HeraldError | null;
  /** How many times the first page was fetched (1 after the start; each reset adds one). */
  readonly fetches: number;
}

export const initialNotificationsState: NotificationsState = {
  notifications: [],
  unreadCount: 0,
  hasMore: false,
  nextCursor: null,
  loading: true,
  loadingMore: false,
  error: null,
  fetches: 0,
};

/** A change to the inbox, from a live event or from the answer to a request. */
export type NotificationChange =
  | { readonly kind: 'created'; readonly notification: Notification; readonly unreadCount: number | null }
  | { readonly kind: 'read' | 'deleted'; readonly ids: readonly string[]; readonly all: boolean; readonly unreadCount: number | null };

/** Reads a `notification.created/read/deleted` event; `null` for any other event or a malformed one. */
export function notificationChange(event: HeraldEvent): NotificationChange | null {
  const data = event.data;
  if (!isRecord(data)) return null;
  const unreadCount = typeof data.unread_count === 'number' ? data.unread_count : null;
  try {
    switch (event.type) {
      case 'notification.created':
        return { kind: 'created', notification: parseNotification(data.notification), unreadCount };
      case 'notification.read':
      case 'notification.deleted': {
        const ids = Array.isArray(data.ids) ? data.ids.filter((id): id is string => typeof id === 'string') : [];
        const kind = event.type === 'notification.read' ? 'read' : 'deleted';
        return { kind, ids, all: data.all === true, unreadCount };
      }
      default:
        return null;
    }
  } catch {
    return null;
  }
}

/** Newest first: by creation time, then by id (ids sort the same way). */
function newerFirst(a: Notification, b: Notification): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** Applies one change. Idempotent: a change seen twice (event and answer) counts once. */
export function applyNotificationChange(state: NotificationsState, change: NotificationChange): NotificationsState {
  switch (change.kind) {
    case 'created': {
      const known = state.notifications.some((n) => n.id === change.notification.id);
      const notifications = known
        ? state.notifications
        : [...state.notifications, change.notification].sort(newerFirst);
      // A broadcast carries no count (it differs per user): count it once, here.
      const unreadCount =
        change.unreadCount ?? (known || change.notification.read ? state.unreadCount : state.unreadCount + 1);
      return { ...state, notifications, unreadCount };
    }
    case 'read': {
      const ids = new Set(change.ids);
      const notifications = state.notifications.map((n) =>
        !n.read && (change.all || ids.has(n.id)) ? { ...n, read: true } : n,
      );
      const unreadCount = change.unreadCount ?? (change.all ? 0 : Math.max(0, state.unreadCount - countUnread(state, ids)));
      return { ...state, notifications, unreadCount };
    }
    case 'deleted': {
      const ids = new Set(change.ids);
      const notifications = change.all ? [] : state.notifications.filter((n) => !ids.has(n.id));
      const unreadCount = change.unreadCount ?? (change.all ? 0 : Math.max(0, state.unreadCount - countUnread(state, ids)));
      return {
        ...state,
        notifications,
        unreadCount,
        ...(change.all ? { hasMore: false, nextCursor: null } : {}),
      };
    }
  }
}

function countUnread(state: NotificationsState, ids: Set<string>): number {
  return state.notifications.filter((n) => !n.read && ids.has(n.id)).length;
}

/**
 * The first page arrived: it replaces the list. `pending` are the live changes
 * received while it was on its way; they are applied again on top, in order, so
 * none is lost whichever of the two the hub saw first.
 */
export function applyFirstPage(
  state: NotificationsState,
  page: NotificationPage,
  pending: readonly NotificationChange[],
): NotificationsState {
  const loaded: NotificationsState = {
    ...state,
    notifications: [...page.notifications].sort(newerFirst),
    unreadCount: page.unreadCount,
    hasMore: page.hasMore,
    nextCursor: page.nextCursor,
    loading: false,
    error: null,
    fetches: state.fetches + 1,
  };
  return pending.reduce(applyNotificationChange, loaded);
}

/** An older page arrived: append what is not already there. */
export function applyNextPage(state: NotificationsState, page: NotificationPage): NotificationsState {
  const known = new Set(state.notifications.map((n) => n.id));
  const older = page.notifications.filter((n) => !known.has(n.id));
  return {
    ...state,
    notifications: [...state.notifications, ...older].sort(newerFirst),
    hasMore: page.hasMore,
    nextCursor: page.nextCursor,
    loadingMore: false,
    error: null,
  };
}

// --- tasks: pure state --------------------------------------------------------

export interface TasksState {
  /** Most recently updated first. */
  readonly tasks: readonly Task[];
  readonly loading: boolean;
  readonly error: HeraldError | null;
  /** How many times the list was fetched (1 after the start; each reset adds one). */
  readonly fetches: number;
}

export const initialTasksState: TasksState = { tasks: [], loading: true, error: null, fetches: 0 };

/** Reads a `task.created` / `task.updated` event; `null` for anything else. */
export function taskChange(event: HeraldEvent): Task | null {
  if (event.type !== 'task.created' && event.type !== 'task.updated') return null;
  try {
    return parseTask(event.data);
  } catch {
    return null;
  }
}

function recentFirst(a: Task, b: Task): number {
  if (a.updatedAt !== b.updatedAt) return a.updatedAt < b.updatedAt ? 1 : -1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Inserts or replaces a task; an update older than the one held is ignored. */
export function applyTask(state: TasksState, task: Task): TasksState {
  const held = state.tasks.find((t) => t.id === task.id);
  if (held && held.updatedAt > task.updatedAt) return state;
  const tasks = [...state.tasks.filter((t) => t.id !== task.id), task].sort(recentFirst);
  return { ...state, tasks };
}

/** The list arrived: it replaces the tasks; `pending` live updates are applied again on top. */
export function applyTaskList(state: TasksState, tasks: readonly Task[], pending: readonly Task[]): TasksState {
  const loaded: TasksState = {
    ...state,
    tasks: [...tasks].sort(recentFirst),
    loading: false,
    error: null,
    fetches: state.fetches + 1,
  };
  return pending.reduce(applyTask, loaded);
}

// --- live feeds -------------------------------------------------------------

function asHeraldError(error: unknown): HeraldError {
  return error instanceof HeraldError ? error : new HeraldError('network', String(error), { cause: error });
}

export interface FeedOptions {
  /**
   * The signed-in user (the token's `sub`), whose channel `user:{user}` carries the
   * changes. Default: the user the hub names once connected.
   */
  user?: string;
}

/**
 * What both feeds share: a state with listeners, the subscriptions to the user's
 * channel and `$broadcast`, and a first fetch whose answer is merged with the live
 * changes that overtook it.
 */
abstract class Feed<S, C> {
  protected readonly client: HeraldClient<EventMap>;
  #state: S;
  readonly #listeners = new Set<() => void>();
  readonly #stops: Unsubscribe[] = [];
  #userChannel: string | null = null;
  #fixedUser: string | null;
  /** Changes received while a first fetch is on its way, or `null` when none is. */
  #pending: C[] | null = null;
  #fetchSerial = 0;
  #refetchQueued = false;
  #started = false;
  #stopped = false;

  protected constructor(client: HeraldClient<EventMap>, initial: S, options: FeedOptions) {
    this.client = client;
    this.#state = initial;
    this.#fixedUser = options.user ?? null;
  }

  /** The current state (a new object after each change, for `useSyncExternalStore`). */
  get state(): S {
    return this.#state;
  }

  /** Calls `listener` after every change of {@link state}. */
  subscribe(listener: () => void): Unsubscribe {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Subscribes to the channels and fetches the first snapshot once the stream is live. */
  start(): this {
    if (this.#started) return this;
    this.#started = true;
    this.#listen(BROADCAST);
    this.#stops.push(this.client.onStateChange(() => this.#onState()));
    this.#onState();
    return this;
  }

  /** Unsubscribes; the state stays as it was. */
  stop(): void {
    this.#stopped = true;
    for (const stop of this.#stops.splice(0)) stop();
  }

  /** Fetches the snapshot again. */
  refetch(): void {
    if (this.#stopped) return;
    const serial = ++this.#fetchSerial;
    this.#pending = [];
    this.setState(this.loadingState(this.#state));
    this.fetchFirst().then(
      (snapshot) => {
        if (serial !== this.#fetchSerial || this.#stopped) return;
        const pending = this.#pending ?? [];
        this.#pending = null;
        this.setState(this.loaded(this.#state, snapshot, pending));
      },
      (error: unknown) => {
        if (serial !== this.#fetchSerial || this.#stopped) return;
        this.#pending = null;
        this.setState(this.failed(this.#state, asHeraldError(error)));
      },
    );
  }

  protected setState(next: S): void {
    if (next === this.#state) return;
    this.#state = next;
    for (const listener of [...this.#listeners]) listener();
  }

  /** Applies a change now, and again on the snapshot if one is on its way. */
  protected change(change: C): void {
    this.#pending?.push(change);
    this.setState(this.apply(this.#state, change));
  }

  protected abstract fetchFirst(): Promise<unknown>;
  protected abstract loadingState(state: S): S;
  protected abstract loaded(state: S, snapshot: unknown, pending: C[]): S;
  protected abstract failed(state: S, error: HeraldError): S;
  protected abstract apply(state: S, change: C): S;
  protected abstract read(event: HeraldEvent): C | null;

  #listen(channel: string): void {
    this.#stops.push(
      this.client.subscribe(channel, (event) => {
        const change = this.read(event);
        if (change !== null) this.change(change);
      }, { onReset: () => this.#queueRefetch() }),
    );
  }

  /** One refetch for a reset that names both the user's channel and `$broadcast`. */
  #queueRefetch(): void {
    if (this.#refetchQueued) return;
    this.#refetchQueued = true;
    queueMicrotask(() => {
      this.#refetchQueued = false;
      this.refetch();
    });
  }

  #onState(): void {
    if (this.#stopped) return;
    const user = this.#fixedUser ?? this.client.connection?.user ?? null;
    if (this.#userChannel === null && user !== null) {
      this.#userChannel = `user:${user}`;
      this.#listen(this.#userChannel);
    }
    // The first snapshot is taken once the stream is live, so that every change
    // after it arrives as an event.
    if (this.#fetchSerial === 0 && this.client.state === 'open' && this.#userChannel !== null) this.refetch();
  }
}

/** The user's inbox, kept live. */
export class NotificationsFeed extends Feed<NotificationsState, NotificationChange> {
  readonly #limit: number | undefined;

  constructor(client: HeraldClient<EventMap>, options: FeedOptions & { limit?: number } = {}) {
    super(client, initialNotificationsState, options);
    this.#limit = options.limit;
  }

  /** Loads the next (older) page. */
  async loadMore(): Promise<void> {
    const { nextCursor, loadingMore } = this.state;
    if (nextCursor === null || loadingMore) return;
    this.setState({ ...this.state, loadingMore: true });
    try {
      const page = await this.client.notifications.list({ cursor: nextCursor, ...this.#limitOption() });
      this.setState(applyNextPage(this.state, page));
    } catch (error) {
      this.setState({ ...this.state, loadingMore: false, error: asHeraldError(error) });
    }
  }

  markRead(id: string): Promise<void> {
    return this.#request(() => this.client.notifications.markRead(id), (unreadCount) => ({ kind: 'read', ids: [id], all: false, unreadCount }));
  }

  markAllRead(): Promise<void> {
    return this.#request(() => this.client.notifications.markAllRead(), (unreadCount) => ({ kind: 'read', ids: [], all: true, unreadCount }));
  }

  remove(id: string): Promise<void> {
    return this.#request(() => this.client.notifications.delete(id), (unreadCount) => ({ kind: 'deleted', ids: [id], all: false, unreadCount }));
  }

  removeAll(): Promise<void> {
    return this.#request(() => this.client.notifications.deleteAll(), (unreadCount) => ({ kind: 'deleted', ids: [], all: true, unreadCount }));
  }

  async #request(send: () => Promise<{ unreadCount: number }>, toChange: (unreadCount: number) => NotificationChange): Promise<void> {
    try {
      const answer = await send();
      this.change(toChange(answer.unreadCount));
    } catch (error) {
      const heraldError = asHeraldError(error);
      this.setState({ ...this.state, error: heraldError });
      throw heraldError;
    }
  }

  #limitOption(): { limit?: number } {
    return this.#limit === undefined ? {} : { limit: this.#limit };
  }

  protected fetchFirst(): Promise<unknown> {
    return this.client.notifications.list(this.#limitOption());
  }

  protected loadingState(state: NotificationsState): NotificationsState {
    return { ...state, loading: true };
  }

  protected loaded(state: NotificationsState, snapshot: unknown, pending: NotificationChange[]): NotificationsState {
    return applyFirstPage(state, snapshot as NotificationPage, pending);
  }

  protected failed(state: NotificationsState, error: HeraldError): NotificationsState {
    return { ...state, loading: false, error };
  }

  protected apply(state: NotificationsState, change: NotificationChange): NotificationsState {
    return applyNotificationChange(state, change);
  }

  protected read(event: HeraldEvent): NotificationChange | null {
    return notificationChange(event);
  }
}

/** The user's tasks, kept live. */
export class TasksFeed extends Feed<TasksState, Task> {
  readonly #limit: number | undefined;

  constructor(client: HeraldClient<EventMap>, options: FeedOptions & { limit?: number } = {}) {
    super(client, initialTasksState, options);
    this.#limit = options.limit;
  }

  protected fetchFirst(): Promise<unknown> {
    return this.client.tasks.list(this.#limit === undefined ? {} : { limit: this.#limit });
  }

  protected loadingState(state: TasksState): TasksState {
    return { ...state, loading: true };
  }

  protected loaded(state: TasksState, snapshot: unknown, pending: Task[]): TasksState {
    return applyTaskList(state, snapshot as Task[], pending);
  }

  protected failed(state: TasksState, error: HeraldError): TasksState {
    return { ...state, loading: false, error };
  }

  protected apply(state: TasksState, task: Task): TasksState {
    return applyTask(state, task);
  }

  protected read(event: HeraldEvent): Task | null {
    return taskChange(event);
  }
}
