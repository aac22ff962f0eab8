// Entry point of the demo app served by the hub at `/`: sign in with a name, then
// the app. `?user=NAME` in the address signs in directly.
import { StrictMode, useEffect, useRef, useState, type FormEvent } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './app.js';
import { signIn, withToken, type Account } from './account.js';

function SignIn({ onAccount }: { onAccount: (account: Account) => void }) {
  const initial = new URLSearchParams(location.search).get('user') ?? '';
  const [name, setName] = useState(initial);
  const [needToken, setNeedToken] = useState(false);
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const join = async (user: string) => {
    setBusy(true);
    setError(null);
    try {
      const account = await signIn(user);
      if (account) onAccount(account);
      else setNeedToken(true);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };

  // Once, for a name given in the address (effects may run twice in development).
  const tried = useRef(false);
  useEffect(() => {
    if (tried.current || !initial) return;
    tried.current = true;
    void join(initial);
  }, []);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (needToken) {
      try {
        onAccount(withToken(token.trim()));
      } catch (e) {
        setError((e as Error).message);
      }
    } else if (name.trim()) {
      void join(name.trim());
    }
  };

  return (
    <main className="signin">
      <form className="panel signin-card" onSubmit={submit} data-testid="signin">
        <div className="brand big">
          <span className="logo" aria-hidden="true">◆</span> Herald
        </div>
        <p className="muted">A live task board, notifications, job progress and chat, pushed by the hub.</p>
        {needToken ? (
          <>
            <label htmlFor="token">This hub mints no demo tokens: paste one</label>
            <textarea
              id="token"
              data-testid="signin-token"
              rows={4}
              value={token}
              onChange={(e) => setToken(e.target.value)}
              placeholder="herald token --sub alice --subscribe 'demo:*' --publish 'demo:*' --publish 'user:alice'"
            />
          </>
        ) : (
          <>
            <label htmlFor="name">Your name</label>
            <input
              id="name"
              data-testid="signin-name"
              value={name}
              onChange={(e) => setName(e.target.value)}
              placeholder="e.g. alice"
              maxLength={64}
              pattern="[\p{L}\p{N}._\-]+"
              title="letters, digits, '.', '_' or '-'"
              autoFocus
            />
          </>
        )}
        {error && <p className="error small">{error}</p>}
        <button type="submit" data-testid="signin-submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Join'}
        </button>
      </form>
    </main>
  );
}

function Root() {
  const [account, setAccount] = useState<Account | null>(null);
  const enter = (next: Account) => {
    const url = new URL(location.href);
    url.searchParams.set('user', next.user);
    history.replaceState(null, '', url);
    setAccount(next);
  };
  const leave = () => {
    account?.client.close();
    const url = new URL(location.href);
    url.searchParams.delete('user');
    history.replaceState(null, '', url);
    setAccount(null);
  };
  return account ? <App key={account.user} account={account} onSignOut={leave} /> : <SignIn onAccount={enter} />;
}

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <Root />
    </StrictMode>,
  );
}
