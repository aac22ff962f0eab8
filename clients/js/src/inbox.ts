/**
 * The hub's notification inbox and task REST API (`/api/notifications`,
 * `/api/tasks`), typed, with the client's token. Objects are returned with
 * camel-case fields; the live events that keep them current (`notification.*`,
 * `task.*` on `user:{id}` and `$broadcast`) are read with the same parsers.
 */
import { HeraldError, isRecord } from './errors.js';

export type NotificationType = 'info' | 'warning' | 'success' | 'error';

/** One entry of a user's inbox. */
export interface Notification {
  /** Opaque; newest first is by (`createdAt`, `id`). */
  readonly id: string;
  readonly user: string;
  readonly title: string;
  readonly message: string;
  readonly type: NotificationType | (string & {});
  readonly link: string | null;
  readonly data: unknown;
  readonly read: boolean;
  /** RFC 3339, UTC. */
  readonly createdAt: string;
  /** Sent to every user (`POST /api/notifications/broadcast`). */
  readonly broadcast: boolean;
}

/** One page of `GET /api/notifications`. */
export interface NotificationPage {
  readonly notifications: Notification[];
  readonly unreadCount: number;
  readonly hasMore: boolean;
  /** Pass to {@link NotificationsApi.list} as `cursor` for the next (older) page. */
  readonly nextCursor: string | null;
}

export interface ListNotificationsOptions {
  /** 1 to 100; the hub's default is 50. */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
  /** Only unread ones. */
  unread?: boolean;
}

/** The answer to a change: how many it touched and the user's unread count after it. */
export interface InboxChange {
  readonly count: number;
  readonly unreadCount: number;
}

/** What a publisher sends to create notifications (`POST /api/notifications`). */
export interface NewNotification {
  title: string;
  message: string;
  type: NotificationType;
  link?: string;
  data?: unknown;
}

export type TaskStatus = 'queued' | 'running' | 'completed' | 'failed';

/** A background job of a user, with its progress. */
export interface Task {
  readonly id: string;
  readonly user: string;
  readonly title: string;
  readonly status: TaskStatus | (string & {});
  /** 0 to 100. */
  readonly progress: number;
  readonly message: string | null;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** What a publisher sends to create or update a task (`PUT /api/tasks/{id}`). */
export interface TaskUpdate {
  user: string;
  title: string;
  status: TaskStatus;
  progress?: number;
  message?: string;
  /** Raises a notification for the task's user when the status is `completed` or `failed`. */
  notify?: NewNotification;
}

/** Sends one request to the hub; resolves with its JSON answer, rejects with a {@link HeraldError}. */
export type HubFetch = (path: string, init: RequestInit) => Promise<unknown>;

function jsonBody(method: string, body: unknown): RequestInit {
  return { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
}

function bad(what: string): HeraldError {
  return new HeraldError('bad_response', `the hub's answer has no valid ${what}`);
}

function text(value: unknown, what: string): string {
  if (typeof value !== 'string') throw bad(what);
  return value;
}

function count(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw bad(what);
  return value;
}

/** Reads a notification as the hub sends it (snake-case JSON). */
export function parseNotification(value: unknown): Notification {
  if (!isRecord(value)) throw bad('notification');
  return {
    id: text(value.id, 'notification id'),
    user: typeof value.user === 'string' ? value.user : '',
    title: text(value.title, 'notification title'),
    message: typeof value.message === 'string' ? value.message : '',
    type: typeof value.type === 'string' ? value.type : 'info',
    link: typeof value.link === 'string' ? value.link : null,
    data: value.data ?? null,
    read: value.read === true,
    createdAt: text(value.created_at, 'notification created_at'),
    broadcast: value.broadcast === true,
  };
}

/** Reads a task as the hub sends it (snake-case JSON). */
export function parseTask(value: unknown): Task {
  if (!isRecord(value)) throw bad('task');
  return {
    id: text(value.id, 'task id'),
    user: typeof value.user === 'string' ? value.user : '',
    title: text(value.title, 'task title'),
    status: text(value.status, 'task status'),
    progress: typeof value.progress === 'number' ? Math.min(100, Math.max(0, value.progress)) : 0,
    message: typeof value.message === 'string' ? value.message : null,
    createdAt: text(value.created_at, 'task created_at'),
    updatedAt: text(value.updated_at, 'task updated_at'),
  };
}

function field(value: unknown, name: string): unknown {
  return isRecord(value) ? value[name] : undefined;
}

/** `/api/notifications`: the signed-in user's inbox, and creating notifications as a publisher. */
export class NotificationsApi {
  readonly #fetch: HubFetch;

  constructor(fetch: HubFetch) {
    this.#fetch = fetch;
  }

  /** A page of the inbox, newest first. */
  async list(options: ListNotificationsOptions = {}): Promise<NotificationPage> {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.cursor !== undefined) query.set('cursor', options.cursor);
    if (options.unread) query.set('unread', 'true');
    const search = query.toString();
    const answer = await this.#fetch(`/api/notifications${search ? `?${search}` : ''}`, { method: 'GET' });
    const list = field(answer, 'notifications');
    if (!Array.isArray(list)) throw bad('notifications');
    const cursor = field(answer, 'next_cursor');
    return {
      notifications: list.map(parseNotification),
      unreadCount: count(field(answer, 'unread_count'), 'unread_count'),
      hasMore: field(answer, 'has_more') === true,
      nextCursor: typeof cursor === 'string' && cursor !== '' ? cursor : null,
    };
  }

  /** How many are unread. */
  async unreadCount(): Promise<number> {
    const answer = await this.#fetch('/api/notifications/unread_count', { method: 'GET' });
    return count(field(answer, 'unread_count'), 'unread_count');
  }

  /** Marks one as read (404 `not_found` if it is not the user's). */
  markRead(id: string): Promise<InboxChange> {
    return this.#change('PATCH', { id }, 'updated');
  }

  markAllRead(): Promise<InboxChange> {
    return this.#change('PATCH', { all: true }, 'updated');
  }

  /** Deletes one (404 `not_found` if it is not the user's). */
  delete(id: string): Promise<InboxChange> {
    return this.#change('DELETE', { id }, 'deleted');
  }

  deleteAll(): Promise<InboxChange> {
    return this.#change('DELETE', { all: true }, 'deleted');
  }

  /** Creates a notification for one or several users (needs a publish grant for `user:{id}`). */
  async create(to: { user: string } | { users: string[] }, notification: NewNotification): Promise<Notification[]> {
    const answer = await this.#fetch('/api/notifications', jsonBody('POST', { ...to, ...notification }));
    const list = field(answer, 'notifications');
    if (!Array.isArray(list)) throw bad('notifications');
    return list.map(parseNotification);
  }

  /** Sends a notification to every user (needs a publish grant covering `$broadcast`). */
  async broadcast(notification: NewNotification): Promise<Notification> {
    const answer = await this.#fetch('/api/notifications/broadcast', jsonBody('POST', notification));
    return parseNotification(field(answer, 'notification'));
  }

  async #change(method: string, body: unknown, counted: string): Promise<InboxChange> {
    const answer = await this.#fetch('/api/notifications', jsonBody(method, body));
    return {
      count: count(field(answer, counted), counted),
      unreadCount: count(field(answer, 'unread_count'), 'unread_count'),
    };
  }
}

/** `/api/tasks`: the signed-in user's tasks, and reporting progress as a publisher. */
export class TasksApi {
  readonly #fetch: HubFetch;

  constructor(fetch: HubFetch) {
    this.#fetch = fetch;
  }

  /** The user's tasks, most recently updated first. */
  async list(options: { limit?: number } = {}): Promise<Task[]> {
    const query = options.limit === undefined ? '' : `?limit=${encodeURIComponent(String(options.limit))}`;
    const answer = await this.#fetch(`/api/tasks${query}`, { method: 'GET' });
    const list = field(answer, 'tasks');
    if (!Array.isArray(list)) throw bad('tasks');
    return list.map(parseTask);
  }

  async get(id: string): Promise<Task> {
    return parseTask(await this.#fetch(`/api/tasks/${encodeURIComponent(id)}`, { method: 'GET' }));
  }

  /** Creates or updates a task; its user sees `task.created` / `task.updated` live. */
  async put(id: string, update: TaskUpdate): Promise<Task> {
    return parseTask(await this.#fetch(`/api/tasks/${encodeURIComponent(id)}`, jsonBody('PUT', update)));
  }
}
