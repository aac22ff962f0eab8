// The demo app: a task board fed by a channel, the notification bell, demo jobs
// with progress bars, and a chat with presence and a typing indicator.
import type { HeraldEvent, Notification, Task } from '@herald/client';
import {
  HeraldProvider,
  useChannel,
  useConnectionState,
  useHeraldClient,
  useNotifications,
  usePresence,
  useTasks,
} from '@herald/client/react';
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { applyBoardEvent, boardFromHistory, emptyBoard } from './board.js';
import { BOARD, CHAT, COLUMNS, type Card, type Column, type DemoEvents, type Account } from './account.js';

const COLUMN_TITLES: Record<Column, string> = { next: 'To do', doing: 'In progress', done: 'Done' };
const TYPING_SHOWN_MS = 3000;
const TYPING_EVERY_MS = 1500;

const randomId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

function useDemoClient() {
  return useHeraldClient<DemoEvents>();
}

export function App({ account, onSignOut }: { account: Account; onSignOut: () => void }) {
  return (
    <HeraldProvider client={account.client}>
      <div className="app">
        <header className="topbar">
          <div className="brand">
            <span className="logo" aria-hidden="true">◆</span> Herald <span className="muted">demo</span>
          </div>
          <ConnectionIndicator />
          <Bell user={account.user} />
          <div className="me" data-testid="me">
            <span className="avatar" aria-hidden="true">{account.user.slice(0, 1).toUpperCase()}</span>
            <span data-testid="me-name">{account.user}</span>
            <button type="button" className="link" onClick={onSignOut}>
              Sign out
            </button>
          </div>
        </header>
        <main className="layout">
          <Board user={account.user} />
          <div className="side">
            <Jobs user={account.user} />
            <Chat user={account.user} />
          </div>
        </main>
      </div>
    </HeraldProvider>
  );
}

// --- connection -------------------------------------------------------------

const STATE_LABELS = { connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', closed: 'Offline' };

function ConnectionIndicator() {
  const state = useConnectionState();
  return (
    <div className="connection" data-testid="connection" data-state={state} role="status" aria-live="polite">
      <span className="dot" aria-hidden="true" />
      {STATE_LABELS[state]}
    </div>
  );
}

// --- task board ---------------------------------------------------------------

function Board({ user }: { user: string }) {
  const client = useDemoClient();
  const state = useConnectionState();
  const [board, setBoard] = useState(emptyBoard);
  const [loads, setLoads] = useState(0);
  const [wanted, setWanted] = useState(0);
  const [title, setTitle] = useState('');
  const overtaking = useRef<HeraldEvent[] | null>(null);
  const opened = useRef(false);
  if (state === 'open') opened.current = true;
  const started = opened.current;

  useChannel(
    BOARD,
    (event) => {
      overtaking.current?.push(event);
      setBoard((current) => applyBoardEvent(current, event));
    },
    // The hub could not replay what this page missed: rebuild the board.
    { onReset: () => setWanted((n) => n + 1) },
  );

  // The board is its channel's kept history, then the live events.
  useEffect(() => {
    if (!started) return undefined;
    let current = true;
    overtaking.current = [];
    client.history(BOARD, { limit: 1000 }).then(
      (history) => {
        if (!current) return;
        setBoard(boardFromHistory(history as HeraldEvent[], overtaking.current ?? []));
        overtaking.current = null;
        setLoads((n) => n + 1);
      },
      () => {
        overtaking.current = null;
      },
    );
    return () => {
      current = false;
    };
  }, [client, started, wanted]);

  const add = (event: FormEvent) => {
    event.preventDefault();
    const text = title.trim();
    if (!text) return;
    setTitle('');
    // With an id of its own the event goes through `POST /publish` and is kept in the
    // channel's history (the board is rebuilt from it); a retry would not repeat it.
    void client.publish(BOARD, 'card.created', { id: randomId('card'), title: text, column: 'next', by: user }, { id: randomId('ev') });
  };
  const move = (card: Card, step: number) => {
    const column = COLUMNS[COLUMNS.indexOf(card.column) + step];
    if (column) void client.publish(BOARD, 'card.moved', { id: card.id, column, by: user }, { id: randomId('ev') });
  };

  return (
    <section className="panel board" data-testid="board" data-loads={loads} aria-labelledby="board-title">
      <div className="panel-head">
        <h2 id="board-title">Task board</h2>
        <span className="muted small" data-testid="board-loads">
          {BOARD} · synced {loads}×
        </span>
      </div>
      <form className="add-card" onSubmit={add}>
        <input
          data-testid="new-card"
          value={title}
          onChange={(e) => setTitle(e.target.value)}
          placeholder="Add a card for everyone…"
          maxLength={120}
          aria-label="New card"
        />
        <button type="submit" data-testid="add-card" disabled={!title.trim()}>
          Add
        </button>
      </form>
      <div className="columns">
        {COLUMNS.map((column) => {
          const cards = board.cards.filter((card) => card.column === column);
          return (
            <div className="column" key={column} data-testid={`column-${column}`}>
              <h3>
                {COLUMN_TITLES[column]} <span className="count">{cards.length}</span>
              </h3>
              <ul>
                {cards.map((card) => (
                  <li key={card.id} className="card" data-testid="card" data-id={card.id} data-column={card.column}>
                    <span className="card-title" data-testid="card-title">
                      {card.title}
                    </span>
                    <span className="card-foot">
                      <span className="muted small">{card.by}</span>
                      <span className="moves">
                        {column !== 'next' && (
                          <button type="button" className="icon" data-testid="card-back" aria-label="Move back" onClick={() => move(card, -1)}>
                            ←
                          </button>
                        )}
                        {column !== 'done' && (
                          <button type="button" className="icon" data-testid="card-forward" aria-label="Move forward" onClick={() => move(card, 1)}>
                            →
                          </button>
                        )}
                      </span>
                    </span>
                  </li>
                ))}
              </ul>
            </div>
          );
        })}
      </div>
    </section>
  );
}

// --- notifications -------------------------------------------------------------

function timeOf(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function Bell({ user }: { user: string }) {
  const client = useDemoClient();
  const inbox = useNotifications({ user, limit: 20 });
  const [open, setOpen] = useState(false);
  const [failure, setFailure] = useState<string | null>(null);
  const wrap = useRef<HTMLDivElement>(null);
  // A click elsewhere or Escape closes the dropdown.
  useEffect(() => {
    if (!open) return undefined;
    const onPointer = (event: MouseEvent) => {
      if (!wrap.current?.contains(event.target as Node)) setOpen(false);
    };
    const onKey = (event: KeyboardEvent) => {
      if (event.key === 'Escape') setOpen(false);
    };
    document.addEventListener('mousedown', onPointer);
    document.addEventListener('keydown', onKey);
    return () => {
      document.removeEventListener('mousedown', onPointer);
      document.removeEventListener('keydown', onKey);
    };
  }, [open]);
  const report = (promise: Promise<unknown>) => promise.then(() => setFailure(null), (e: Error) => setFailure(e.message));

  const sendOne = () =>
    report(
      client.notifications.create(
        { user },
        { title: 'Hello from the demo', message: 'Sent to yourself through the inbox API', type: 'info' },
      ),
    );

  return (
    <div className="bell-wrap" ref={wrap}>
      <button
        type="button"
        className="bell"
        data-testid="bell"
        data-fetches={inbox.fetches}
        aria-expanded={open}
        aria-label={`Notifications, ${inbox.unreadCount} unread`}
        onClick={() => setOpen((v) => !v)}
      >
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
          <path d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z" fill="currentColor" />
        </svg>
        <span className="badge" data-testid="unread-count" data-count={inbox.unreadCount} hidden={inbox.unreadCount === 0}>
          {inbox.unreadCount}
        </span>
      </button>
      {open && (
        <div className="dropdown" data-testid="notifications" role="dialog" aria-label="Notifications">
          <div className="dropdown-head">
            <strong>Notifications</strong>
            <span className="actions">
              <button type="button" className="link" data-testid="mark-all-read" disabled={inbox.unreadCount === 0} onClick={() => report(inbox.markAllRead())}>
                Mark all read
              </button>
              <button type="button" className="link danger" data-testid="delete-all" disabled={inbox.notifications.length === 0} onClick={() => report(inbox.removeAll())}>
                Clear
              </button>
            </span>
          </div>
          {failure && <p className="error small">{failure}</p>}
          {inbox.error && <p className="error small">{inbox.error.message}</p>}
          <ul className="notes">
            {inbox.notifications.length === 0 && <li className="empty muted">{inbox.loading ? 'Loading…' : 'Nothing here yet.'}</li>}
            {inbox.notifications.map((n) => (
              <NotificationItem key={n.id} note={n} onRead={() => report(inbox.markRead(n.id))} onDelete={() => report(inbox.remove(n.id))} />
            ))}
          </ul>
          {inbox.hasMore && (
            <button type="button" className="link more" onClick={() => void inbox.loadMore()} disabled={inbox.loadingMore}>
              Older…
            </button>
          )}
          <div className="dropdown-foot">
            <button type="button" data-testid="send-notification" onClick={sendOne}>
              Send me a notification
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

function NotificationItem({ note, onRead, onDelete }: { note: Notification; onRead: () => void; onDelete: () => void }) {
  return (
    <li className={`note note-${note.type}${note.read ? ' read' : ''}`} data-testid="notification" data-id={note.id} data-read={note.read}>
      <span className="note-mark" aria-hidden="true" />
      <div className="note-body">
        <div className="note-title" data-testid="notification-title">
          {note.title}
          {note.broadcast && <span className="tag">all</span>}
        </div>
        {note.message && <div className="note-message">{note.message}</div>}
        <div className="muted small">{timeOf(note.createdAt)}</div>
      </div>
      <div className="note-actions">
        {!note.read && (
          <button type="button" className="icon" data-testid="notification-read" aria-label="Mark read" title="Mark read" onClick={onRead}>
            ✓
          </button>
        )}
        <button type="button" className="icon" data-testid="notification-delete" aria-label="Delete" title="Delete" onClick={onDelete}>
          ✕
        </button>
      </div>
    </li>
  );
}

// --- demo jobs ----------------------------------------------------------------

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function Jobs({ user }: { user: string }) {
  const client = useDemoClient();
  const { tasks, loading, error, fetches } = useTasks({ user, limit: 10 });
  const [failure, setFailure] = useState<string | null>(null);

  // The page plays the part of a backend worker: it reports progress with
  // `PUT /api/tasks/{id}`, and the hub pushes each change to every tab of the user.
  const start = async () => {
    const id = randomId('job');
    const title = `Export #${id.slice(-4)}`;
    try {
      await client.tasks.put(id, { user, title, status: 'queued', progress: 0, message: 'Waiting for a worker' });
      for (let step = 1; step <= 10; step++) {
        await sleep(300);
        await client.tasks.put(id, { user, title, status: 'running', progress: step * 10, message: `Step ${step} of 10` });
      }
      await client.tasks.put(id, {
        user,
        title,
        status: 'completed',
        progress: 100,
        message: 'Done',
        notify: { title: `${title} finished`, message: 'All 10 steps done', type: 'success' },
      });
      setFailure(null);
    } catch (e) {
      setFailure((e as Error).message);
    }
  };

  return (
    <section className="panel" data-testid="jobs" data-fetches={fetches} aria-labelledby="jobs-title">
      <div className="panel-head">
        <h2 id="jobs-title">Jobs</h2>
        <button type="button" data-testid="start-job" onClick={() => void start()}>
          Start a demo job
        </button>
      </div>
      {(failure ?? error) && <p className="error small">{failure ?? error?.message}</p>}
      <ul className="tasks">
        {tasks.length === 0 && <li className="empty muted">{loading ? 'Loading…' : 'No jobs yet.'}</li>}
        {tasks.map((task) => (
          <TaskRow key={task.id} task={task} />
        ))}
      </ul>
    </section>
  );
}

function TaskRow({ task }: { task: Task }) {
  return (
    <li className="task" data-testid="task" data-id={task.id} data-status={task.status} data-progress={task.progress}>
      <div className="task-line">
        <span className="task-title">{task.title}</span>
        <span className={`pill pill-${task.status}`}>{task.status}</span>
      </div>
      <div
        className="progress"
        role="progressbar"
        data-testid="task-progress"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={task.progress}
        aria-label={`${task.title} progress`}
      >
        <span style={{ width: `${task.progress}%` }} />
      </div>
      <div className="muted small">
        {task.progress}% {task.message ? `· ${task.message}` : ''}
      </div>
    </li>
  );
}

// --- chat, presence, typing -------------------------------------------------------

interface ChatLine {
  id: string;
  user: string;
  text: string;
  time: string;
}

function Chat({ user: me }: { user: string }) {
  const client = useDemoClient();
  const { members } = usePresence(CHAT);
  const [lines, setLines] = useState<ChatLine[]>([]);
  const [typing, setTyping] = useState<Record<string, number>>({});
  const [text, setText] = useState('');
  const lastTyping = useRef(0);
  const list = useRef<HTMLUListElement>(null);

  useChannel<DemoEvents, 'chat.message'>(CHAT, 'chat.message', (event) => {
    const { user, text: body } = event.data;
    setLines((all) => (all.some((l) => l.id === event.id) ? all : [...all.slice(-49), { id: event.id, user, text: body, time: event.time }]));
    setTyping(({ [user]: _gone, ...rest }) => rest);
  });
  useChannel<DemoEvents, 'typing'>(CHAT, 'typing', (event) => {
    const { user } = event.data;
    if (user === me) return;
    setTyping((all) => ({ ...all, [user]: Date.now() + TYPING_SHOWN_MS }));
  });

  // Typing marks fade on their own.
  useEffect(() => {
    const timer = setInterval(() => {
      setTyping((all) => {
        const now = Date.now();
        const kept = Object.entries(all).filter(([, until]) => until > now);
        return kept.length === Object.keys(all).length ? all : Object.fromEntries(kept);
      });
    }, 500);
    return () => clearInterval(timer);
  }, []);

  useEffect(() => {
    list.current?.scrollTo({ top: list.current.scrollHeight });
  }, [lines]);

  const onInput = (value: string) => {
    setText(value);
    const now = Date.now();
    if (value && now - lastTyping.current > TYPING_EVERY_MS) {
      lastTyping.current = now;
      void client.publish(CHAT, 'typing', { user: me }).catch(() => undefined);
    }
  };
  const send = (event: FormEvent) => {
    event.preventDefault();
    const body = text.trim();
    if (!body) return;
    setText('');
    lastTyping.current = 0;
    // Over the WebSocket: a client event, live only (the demo namespace keeps none).
    void client.publish(CHAT, 'chat.message', { user: me, text: body }).catch(() => setText(body));
  };

  const typers = Object.keys(typing).filter((u) => u !== me);
  return (
    <section className="panel chat" data-testid="chat" aria-labelledby="chat-title">
      <div className="panel-head">
        <h2 id="chat-title">Chat</h2>
        <span className="muted small">{members.length} online</span>
      </div>
      <ul className="presence" data-testid="presence" aria-label="Online">
        {members.map((m) => (
          <li key={m.user} data-testid="presence-member" data-user={m.user} className={m.user === me ? 'self' : ''}>
            <span className="avatar small" aria-hidden="true">{m.user.slice(0, 1).toUpperCase()}</span>
            {m.user}
            {m.user === me && <span className="muted"> (you)</span>}
          </li>
        ))}
      </ul>
      <ul className="lines" ref={list} data-testid="chat-lines">
        {lines.map((line) => (
          <li key={line.id} data-testid="chat-line" className={line.user === me ? 'mine' : ''}>
            <strong>{line.user}</strong> {line.text}
          </li>
        ))}
      </ul>
      <div className="typing" data-testid="typing" aria-live="polite">
        {typers.length === 1 && `${typers[0]} is typing…`}
        {typers.length > 1 && `${typers.join(', ')} are typing…`}
      </div>
      <form className="say" onSubmit={send}>
        <input data-testid="chat-input" value={text} onChange={(e) => onInput(e.target.value)} placeholder="Say something…" maxLength={500} aria-label="Message" />
        <button type="submit" data-testid="chat-send" disabled={!text.trim()}>
          Send
        </button>
      </form>
    </section>
  );
}
