// The page of the React tests: a provider, a connection badge, and feeds that
// re-render on every event with a new handler each time.
import { HeraldClient } from '@herald/client';
import { HeraldProvider, useChannel, useConnectionState } from '@herald/client/react';
import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';

type AppEvents = { message: { text: string }; note: { text: string } };

function Feed({ channel }: { channel: string }) {
  const [items, setItems] = useState<Array<{ id: string; text: string }>>([]);
  const [notes, setNotes] = useState(0);
  const [renders, setRenders] = useState(0);
  // A new handler on every render: the hook must not resubscribe for it.
  useChannel<AppEvents>(channel, (event) => {
    setItems((list) => [...list, { id: event.id, text: event.data.text }]);
    setRenders((n) => n + 1);
  });
  useChannel<AppEvents, 'note'>(channel, 'note', (event) => {
    if (event.type === 'note') setNotes((n) => n + 1);
  });
  return (
    <section data-channel={channel} data-renders={renders} data-notes={notes}>
      <ul>
        {items.map((item) => (
          <li key={item.id} data-id={item.id}>
            {item.text}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Badge() {
  const state = useConnectionState();
  return (
    <p id="state" data-state={state}>
      {state}
    </p>
  );
}

function App({ first, second }: { first: string; second: string }) {
  const [showSecond, setShowSecond] = useState(false);
  return (
    <>
      <Badge />
      <button id="add" onClick={() => setShowSecond(true)}>
        add
      </button>
      <Feed channel={first} />
      {showSecond && <Feed channel={second} />}
    </>
  );
}

const query = new URLSearchParams(location.search);
const client = new HeraldClient<AppEvents>({ url: query.get('hub') ?? '', token: query.get('token') ?? '' });
const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <HeraldProvider client={client}>
        <App first={query.get('first') ?? ''} second={query.get('second') ?? ''} />
      </HeraldProvider>
    </StrictMode>,
  );
}
