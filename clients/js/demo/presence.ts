// Who is on the chat channel: the hub's presence list, kept current by the
// `presence.join` / `presence.leave` events it sends on the channel.
import { useChannel, useConnectionState } from '@herald/client/react';
import { useEffect, useState } from 'react';
import type { Session } from './session.js';

export interface Member {
  user: string;
  connections: number;
}

export function useMembers(session: Session, channel: string): Member[] {
  const [members, setMembers] = useState<Member[]>([]);
  const [fetches, setFetches] = useState(0);
  const state = useConnectionState();
  const open = state === 'open';

  useChannel(
    channel,
    (event) => {
      const user = (event.data as { user?: unknown } | null)?.user;
      if (typeof user !== 'string') return;
      if (event.type === 'presence.join') {
        setMembers((list) => (list.some((m) => m.user === user) ? list : [...list, { user, connections: 1 }]));
      } else if (event.type === 'presence.leave') {
        setMembers((list) => list.filter((m) => m.user !== user));
      }
    },
    { onReset: () => setFetches((n) => n + 1) },
  );

  // Fetched each time the stream opens: joins and leaves while it was down were not seen.
  useEffect(() => {
    if (!open) return undefined;
    let current = true;
    session
      .fetchJson(`/channels/${encodeURIComponent(channel)}/presence`)
      .then((body) => {
        const users = (body as { users?: Array<{ user: string; connections?: number }> }).users ?? [];
        if (current) setMembers(users.map((m) => ({ user: m.user, connections: m.connections ?? 1 })));
      })
      .catch(() => undefined);
    return () => {
      current = false;
    };
  }, [session, channel, open, fetches]);

  return members;
}
