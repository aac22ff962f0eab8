// The page of the presence hook test: who is on a channel, kept up to date.
import { HeraldClient } from '@herald/client';
import { HeraldProvider, useConnectionState, usePresence } from '@herald/client/react';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

function Members({ channel }: { channel: string }) {
  const { members, loading, error } = usePresence(channel);
  const state = useConnectionState();
  return (
    <section data-loading={String(loading)} data-error={error?.code ?? ''} data-state={state}>
      <ul>
        {members.map((m) => (
          <li key={m.user} data-user={m.user}>
            {m.user}
          </li>
        ))}
      </ul>
    </section>
  );
}

const query = new URLSearchParams(location.search);
const transport = query.get('transport') === 'sse' ? 'sse' : 'ws';
const client = new HeraldClient({ url: query.get('hub') ?? '', token: query.get('token') ?? '', transport });
const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <HeraldProvider client={client}>
        <Members channel={query.get('channel') ?? ''} />
      </HeraldProvider>
    </StrictMode>,
  );
}
