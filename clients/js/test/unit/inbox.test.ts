import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { HeraldClient } from '../../src/client.js';
import {
  NotificationsFeed,
  TasksFeed,
  applyFirstPage,
  applyNextPage,
  applyNotificationChange,
  applyTask,
  applyTaskList,
  initialNotificationsState,
  initialTasksState,
  notificationChange,
  type NotificationsState,
} from '../../src/inbox-state.js';
import type { Notification, NotificationPage, Task } from '../../src/inbox.js';
import type { HeraldEvent } from '../../src/types.js';
import { FakeTransport } from './fake-transport.js';
import { installClock, type Clock } from './support.js';

function note(id: string, minute: number, extra: Partial<Notification> = {}): Notification {
  return {
    id,
    user: 'ann',
    title: `title ${id}`,
    message: '',
    type: 'info',
    link: null,
    data: null,
    read: false,
    createdAt: `2026-11-30T10:${String(minute).padStart(2, '0')}:00.000Z`,
    broadcast: false,
    ...extra,
  };
}

/** The hub's JSON of a notification. */
function wire(n: Notification): Record<string, unknown> {
  return { id: n.id, user: n.user, title: n.title, message: n.message, type: n.type, link: n.link, data: n.data, read: n.read, created_at: n.createdAt, broadcast: n.broadcast };
}

function task(id: string, minute: number, progress = 0, status = 'running'): Task {
  const at = `2026-11-30T10:${String(minute).padStart(2, '0')}:00.000Z`;
  return { id, user: 'ann', title: id, status, progress, message: null, createdAt: at, updatedAt: at };
}

function taskWire(t: Task): Record<string, unknown> {
  return { id: t.id, user: t.user, title: t.title, status: t.status, progress: t.progress, message: t.message, created_at: t.createdAt, updated_at: t.updatedAt };
}

function page(list: Notification[], unreadCount: number, nextCursor: string | null = null): NotificationPage {
  return { notifications: list, unreadCount, hasMore: nextCursor !== null, nextCursor };
}

function event(type: string, data: unknown, channel = 'user:ann'): HeraldEvent {
  return { channel, type, data, time: '2026-11-30T10:00:00.000Z', id: `e-${type}-${Math.random()}` };
}

const loaded = (list: Notification[], unread: number): NotificationsState => applyFirstPage(initialNotificationsState, page(list, unread), []);

describe('notification state', () => {
  it('reads live events and ignores others', () => {
    const n = note('n2', 2);
    assert.deepEqual(notificationChange(event('notification.created', { notification: wire(n), unread_count: 4 })), {
      kind: 'created',
      notification: n,
      unreadCount: 4,
    });
    assert.deepEqual(notificationChange(event('notification.read', { ids: ['a'], all: false, unread_count: 1 })), {
      kind: 'read',
      ids: ['a'],
      all: false,
      unreadCount: 1,
    });
    assert.equal(notificationChange(event('task.updated', {})), null);
    assert.equal(notificationChange(event('notification.created', { notification: { id: 1 } })), null);
  });

  it('inserts new ones newest first, once, with the count the hub sends', () => {
    let state = loaded([note('n3', 3), note('n1', 1)], 2);
    state = applyNotificationChange(state, { kind: 'created', notification: note('n2', 2), unreadCount: 3 });
    state = applyNotificationChange(state, { kind: 'created', notification: note('n4', 4), unreadCount: 4 });
    state = applyNotificationChange(state, { kind: 'created', notification: note('n4', 4), unreadCount: 4 });
    assert.deepEqual(state.notifications.map((n) => n.id), ['n4', 'n3', 'n2', 'n1']);
    assert.equal(state.unreadCount, 4);
  });

  it('counts a broadcast (which carries no count) once', () => {
    let state = loaded([note('n1', 1)], 1);
    const b = note('b1', 5, { broadcast: true });
    state = applyNotificationChange(state, { kind: 'created', notification: b, unreadCount: null });
    state = applyNotificationChange(state, { kind: 'created', notification: b, unreadCount: null });
    assert.equal(state.unreadCount, 2);
    assert.deepEqual(state.notifications.map((n) => n.id), ['b1', 'n1']);
  });

  it('marks one or all read and deletes one or all', () => {
    let state = loaded([note('n3', 3), note('n2', 2), note('n1', 1)], 3);
    state = applyNotificationChange(state, { kind: 'read', ids: ['n2'], all: false, unreadCount: 2 });
    assert.deepEqual(state.notifications.map((n) => n.read), [false, true, false]);
    assert.equal(state.unreadCount, 2);
    state = applyNotificationChange(state, { kind: 'deleted', ids: ['n3'], all: false, unreadCount: 1 });
    assert.deepEqual(state.notifications.map((n) => n.id), ['n2', 'n1']);
    state = applyNotificationChange(state, { kind: 'read', ids: [], all: true, unreadCount: 0 });
    assert.ok(state.notifications.every((n) => n.read));
    assert.equal(state.unreadCount, 0);
    state = applyNotificationChange(state, { kind: 'deleted', ids: [], all: true, unreadCount: 0 });
    assert.deepEqual(state.notifications, []);
  });

  it('replays the changes that overtook the first page on top of it', () => {
    // The page was read before n3 was created and n1 was marked read.
    const pending = [
      { kind: 'created' as const, notification: note('n3', 3), unreadCount: 3 },
      { kind: 'read' as const, ids: ['n1'], all: false, unreadCount: 2 },
    ];
    const state = applyFirstPage(initialNotificationsState, page([note('n2', 2), note('n1', 1)], 2), pending);
    assert.deepEqual(state.notifications.map((n) => [n.id, n.read]), [
      ['n3', false],
      ['n2', false],
      ['n1', true],
    ]);
    assert.equal(state.unreadCount, 2);
    assert.equal(state.loading, false);
    assert.equal(state.fetches, 1);
  });

  it('appends older pages without repeats', () => {
    let state = applyFirstPage(initialNotificationsState, page([note('n4', 4), note('n3', 3)], 4, 'c1'), []);
    state = applyNextPage(state, page([note('n3', 3), note('n2', 2)], 4, null));
    assert.deepEqual(state.notifications.map((n) => n.id), ['n4', 'n3', 'n2']);
    assert.equal(state.hasMore, false);
  });
});

describe('task state', () => {
  it('keeps the newest version of each task, most recently updated first', () => {
    let state = applyTaskList(initialTasksState, [task('a', 1), task('b', 2)], []);
    state = applyTask(state, task('a', 3, 50));
    state = applyTask(state, task('a', 2, 20)); // older: ignored
    assert.deepEqual(state.tasks.map((t) => [t.id, t.progress]), [
      ['a', 50],
      ['b', 0],
    ]);
    state = applyTaskList(state, [task('a', 1), task('b', 2)], [task('a', 3, 50)]);
    assert.deepEqual(state.tasks.map((t) => [t.id, t.progress]), [
      ['a', 50],
      ['b', 0],
    ]);
  });
});

// --- feeds against a client on a fake transport and a scripted fetch ----------

let clock: Clock;
let transport: FakeTransport;
let client: HeraldClient;
type Answer = { resolve: (body: unknown) => void; path: string; method: string; body: unknown };
let requests: Answer[];

beforeEach(() => {
  clock = installClock();
  transport = new FakeTransport();
  requests = [];
  const fetchStub = (url: string | URL | Request, init?: RequestInit): Promise<Response> =>
    new Promise((resolve) => {
      const { pathname, search } = new URL(String(url));
      requests.push({
        path: pathname + search,
        method: init?.method ?? 'GET',
        body: typeof init?.body === 'string' ? JSON.parse(init.body) : null,
        resolve: (body) => resolve(new Response(JSON.stringify(body), { status: 200 })),
      });
    });
  client = new HeraldClient({ url: 'https://hub.test', token: 'static', transport, fetch: fetchStub as typeof fetch });
});

afterEach(() => {
  client.close();
  clock.uninstall();
});

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await clock.tickAsync(0);
}

describe('NotificationsFeed', () => {
  it('fetches once the stream is live, merges events that overtook the answer, and refetches on reset', async () => {
    const feed = new NotificationsFeed(client).start();
    await settle();
    assert.equal(requests.length, 0, 'no fetch before the stream is live');
    transport.last.connected({ user: 'ann' });
    await settle();
    assert.deepEqual(requests.map((r) => r.path), ['/api/notifications']);
    // Subscribing to user:ann moved the stream to a new connection.
    const live = transport.last;
    live.connected({ user: 'ann' });
    assert.deepEqual(live.request.channels, ['user:ann']);

    live.event('user:ann', 'e1', { notification: wire(note('n3', 3)), unread_count: 3 }, 'notification.created');
    requests[0]?.resolve({ notifications: [wire(note('n2', 2)), wire(note('n1', 1))], unread_count: 2, has_more: false, next_cursor: null });
    await settle();
    assert.deepEqual(feed.state.notifications.map((n) => n.id), ['n3', 'n2', 'n1']);
    assert.equal(feed.state.unreadCount, 3);
    assert.equal(feed.state.fetches, 1);

    live.event('$broadcast', 'e2', { notification: wire(note('b1', 4, { broadcast: true })) }, 'notification.created');
    assert.equal(feed.state.unreadCount, 4);

    live.reset(['user:ann', '$broadcast'], 'e3');
    await settle();
    assert.equal(requests.length, 2, 'one refetch for a reset of both channels');
    assert.equal(feed.state.loading, true);
    requests[1]?.resolve({ notifications: [wire(note('n2', 2))], unread_count: 1, has_more: false, next_cursor: null });
    await settle();
    assert.deepEqual(feed.state.notifications.map((n) => n.id), ['n2']);
    assert.equal(feed.state.unreadCount, 1);
    assert.equal(feed.state.fetches, 2);
    feed.stop();
  });

  it('marks read through the API and applies the answer', async () => {
    const feed = new NotificationsFeed(client, { user: 'ann' }).start();
    await settle();
    transport.last.connected({ user: 'ann' });
    await settle();
    requests[0]?.resolve({ notifications: [wire(note('n1', 1))], unread_count: 1, has_more: false, next_cursor: null });
    await settle();
    const done = feed.markRead('n1');
    await settle();
    assert.deepEqual([requests[1]?.method, requests[1]?.path, requests[1]?.body], ['PATCH', '/api/notifications', { id: 'n1' }]);
    requests[1]?.resolve({ updated: 1, unread_count: 0 });
    await done;
    assert.equal(feed.state.unreadCount, 0);
    assert.equal(feed.state.notifications[0]?.read, true);
    feed.stop();
  });
});

describe('TasksFeed', () => {
  it('lists tasks and keeps them live', async () => {
    const feed = new TasksFeed(client, { user: 'ann' }).start();
    await settle();
    transport.last.connected({ user: 'ann' });
    await settle();
    assert.deepEqual(requests.map((r) => r.path), ['/api/tasks']);
    requests[0]?.resolve({ tasks: [taskWire(task('a', 1))] });
    await settle();
    transport.last.event('user:ann', 'e1', taskWire(task('a', 2, 40)), 'task.updated');
    transport.last.event('user:ann', 'e2', taskWire(task('b', 3)), 'task.created');
    assert.deepEqual(feed.state.tasks.map((t) => [t.id, t.progress]), [
      ['b', 0],
      ['a', 40],
    ]);
    feed.stop();
  });
});
