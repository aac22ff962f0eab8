// Herald demo page: obtains a token, subscribes over Server-Sent Events,
// shows every event it receives and publishes through POST /publish.
// Plain ES2020, no dependencies: the hub serves this file as-is.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const el = {
    state: $('state'),
    user: $('user'),
    getToken: $('get-token'),
    demoIdentity: $('demo-identity'),
    tokenPaste: $('token-paste'),
    token: $('token'),
    useToken: $('use-token'),
    tokenInfo: $('token-info'),
    channels: $('channels'),
    connect: $('connect'),
    drop: $('drop'),
    connectedInfo: $('connected-info'),
    connId: $('conn-id'),
    connUser: $('conn-user'),
    connChannels: $('conn-channels'),
    resumeInfo: $('resume-info'),
    resetInfo: $('reset-info'),
    notice: $('notice'),
    pubForm: $('publish-form'),
    pubChannel: $('pub-channel'),
    pubType: $('pub-type'),
    pubData: $('pub-data'),
    pubBroadcast: $('pub-broadcast'),
    publish: $('publish'),
    pubResult: $('pub-result'),
    log: $('log'),
    logCount: $('log-count'),
    clearLog: $('clear-log'),
  };

  // Event names the hub itself emits; their data is plain JSON, not an envelope.
  const CONTROL_TYPES = ['connected', 'reset', 'shutdown', 'token_expired'];
  // Application event types listened for from the start. Types typed into the
  // publish form are added on the fly (EventSource needs one listener per name).
  const DEFAULT_TYPES = ['message', 'chat', 'update', 'notice', 'alert', 'ping', 'presence', 'typing'];
  const DROP_DELAY_MS = 2000;
  const REPLAY_WINDOW_MS = 1000;
  const MAX_LOG = 500;

  const params = new URLSearchParams(location.search);

  const st = {
    token: null,
    demoTokens: true, // false once /demo/token answered 404
    es: null,
    wanted: false, // the user wants to be connected
    channels: [],
    types: new Set(DEFAULT_TYPES),
    lastId: null,
    seenIds: new Set(),
    eventCount: 0,
    pubChannelTouched: false,
    dropTimer: null,
    retryTimer: null,
    resume: null, // { afterId, count, connectedAt, timer, done }
  };

  // ---------------------------------------------------------------- helpers

  function randomGuest() {
    const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
    const bytes = new Uint8Array(4);
    crypto.getRandomValues(bytes);
    let s = '';
    for (const b of bytes) s += alphabet[b % alphabet.length];
    return `guest-${s}`;
  }

  function parseChannels(text) {
    const seen = new Set();
    const out = [];
    for (const part of text.split(',')) {
      const c = part.trim();
      if (c && !seen.has(c)) {
        seen.add(c);
        out.push(c);
      }
    }
    return out;
  }

  function fmtTime(d) {
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function tryJson(text) {
    try {
      return { ok: true, value: JSON.parse(text) };
    } catch (_) {
      return { ok: false, value: text };
    }
  }

  function pretty(value) {
    if (typeof value === 'string') return value;
    try {
      return JSON.stringify(value, null, 2);
    } catch (_) {
      return String(value);
    }
  }

  async function errorMessage(res) {
    let text = '';
    try {
      text = await res.text();
    } catch (_) {
      /* ignore */
    }
    const parsed = tryJson(text);
    if (parsed.ok && parsed.value && parsed.value.error) {
      const e = parsed.value.error;
      if (typeof e === 'string') return e;
      return e.message || e.code || `HTTP ${res.status}`;
    }
    return text.trim() ? `HTTP ${res.status}: ${text.trim().slice(0, 300)}` : `HTTP ${res.status} ${res.statusText}`;
  }

  function decodeJwt(token) {
    try {
      const part = token.split('.')[1];
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
      return JSON.parse(json);
    } catch (_) {
      return null;
    }
  }

  function show(node, text) {
    node.textContent = text;
    node.hidden = !text;
  }

  function setNotice(text) {
    show(el.notice, text);
  }

  function setState(name) {
    el.state.textContent = name;
    el.state.dataset.state = name;
    updateButtons();
  }

  function updateButtons() {
    const active = st.wanted;
    el.connect.textContent = active ? 'Disconnect' : 'Connect';
    el.connect.setAttribute('aria-pressed', active ? 'true' : 'false');
    el.connect.disabled = !active && !st.token;
    el.drop.disabled = !(st.es && st.es.readyState === EventSource.OPEN);
    el.publish.disabled = !st.token;
  }

  // ------------------------------------------------------------------ token

  async function fetchDemoToken() {
    const user = el.user.value.trim() || randomGuest();
    el.user.value = user;
    el.tokenInfo.textContent = `Requesting a demo token for ${user}…`;
    let res;
    try {
      res = await fetch('demo/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ user }),
      });
    } catch (err) {
      el.tokenInfo.textContent = `Could not reach the hub (${err.message}). Paste a token instead.`;
      enablePasteMode(false);
      return false;
    }
    if (res.status === 404) {
      enablePasteMode(true);
      return false;
    }
    if (!res.ok) {
      el.tokenInfo.textContent = `Demo token refused: ${await errorMessage(res)}`;
      return false;
    }
    const body = await res.json();
    st.token = body.token;
    if (body.user) el.user.value = body.user;
    const name = body.user || user;
    const sub = (body.subscribe || []).join(', ') || 'nothing';
    const pub = (body.publish || []).join(', ') || 'nothing';
    el.tokenInfo.textContent = `Token for ${name}: may subscribe to ${sub}; may publish to ${pub}. ` +
      `Every stream also carries your private channel user:${name} and broadcasts.`;
    updateButtons();
    return true;
  }

  function enablePasteMode(notFound) {
    st.demoTokens = false;
    el.tokenPaste.hidden = false;
    el.demoIdentity.hidden = true;
    if (notFound) el.tokenInfo.textContent = 'Demo tokens are disabled on this hub.';
    updateButtons();
  }

  function usePastedToken() {
    const token = el.token.value.trim();
    if (!token) {
      el.tokenInfo.textContent = 'Paste a token first.';
      return;
    }
    st.token = token;
    const claims = decodeJwt(token);
    if (claims) {
      const bits = [`Token for ${claims.sub ?? 'anonymous'}`];
      if (claims.exp) bits.push(`expires ${new Date(claims.exp * 1000).toLocaleString()}`);
      el.tokenInfo.textContent = bits.join(', ') + '.';
    } else {
      el.tokenInfo.textContent = 'Token set (not a readable JWT; the hub will judge it).';
    }
    updateButtons();
    connect();
  }

  // ------------------------------------------------------------ event stream

  function streamUrl(lastId) {
    const q = new URLSearchParams();
    for (const c of st.channels) q.append('channel', c);
    q.set('envelope', '1');
    if (st.token) q.set('token', st.token);
    if (lastId != null && lastId !== '') q.set('last_event_id', lastId);
    return `events?${q.toString()}`;
  }

  function clearTimers() {
    clearTimeout(st.dropTimer);
    clearTimeout(st.retryTimer);
    st.dropTimer = null;
    st.retryTimer = null;
  }

  function closeStream() {
    if (st.es) {
      st.es.close();
      st.es = null;
    }
  }

  function connect(opts = {}) {
    clearTimers();
    closeStream();
    const channels = parseChannels(el.channels.value);
    if (!channels.length) {
      setNotice('Enter at least one channel.');
      return;
    }
    if (!st.token) {
      setNotice('No token yet.');
      return;
    }
    setNotice('');
    st.channels = channels;
    st.wanted = true;
    if (!st.pubChannelTouched) el.pubChannel.value = channels[0];

    const resumeFrom = opts.resume ? st.lastId : null;
    const url = streamUrl(resumeFrom);
    const es = new EventSource(url);
    es.herald = { resumed: resumeFrom != null, opened: false };
    st.es = es;
    setState(opts.reconnecting ? 'reconnecting' : 'connecting');

    es.addEventListener('open', () => {
      if (st.es !== es) return;
      es.herald.opened = true;
      setState('open');
      // Normally `connected` arms the replay window; this is a fallback for a
      // hub that never sends it.
      if (st.resume && !st.resume.done && st.resume.timer == null) {
        st.resume.timer = setTimeout(finishResume, 3 * REPLAY_WINDOW_MS);
      }
    });

    es.addEventListener('error', () => {
      if (st.es !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        if (es.herald.resumed) {
          // The URL carries a fixed last_event_id; reconnect by hand so the
          // resume point moves forward with the events already seen.
          closeStream();
          setState('reconnecting');
          st.retryTimer = setTimeout(() => connect({ resume: true, reconnecting: true }), 1000);
          return;
        }
        setState('reconnecting');
      } else {
        setState('closed');
        closeStream();
        st.wanted = false;
        updateButtons();
        diagnose(url);
      }
    });

    for (const name of CONTROL_TYPES) {
      es.addEventListener(name, (ev) => onControl(es, name, ev));
    }
    for (const t of st.types) listenType(es, t);
    updateButtons();
  }

  function listenType(es, type) {
    if (!es) return;
    es.herald.types = es.herald.types || new Set();
    if (es.herald.types.has(type) || CONTROL_TYPES.includes(type)) return;
    es.herald.types.add(type);
    es.addEventListener(type, (ev) => onEvent(es, type, ev));
  }

  function addType(type) {
    if (!type || CONTROL_TYPES.includes(type)) return;
    st.types.add(type);
    listenType(st.es, type);
  }

  // When the stream fails for good, ask the hub why (EventSource hides it).
  async function diagnose(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const res = await fetch(url, { signal: ctl.signal, headers: { Accept: 'text/event-stream' } });
      if (!res.ok) {
        setNotice(`The hub refused the stream: ${await errorMessage(res)}`);
      } else {
        setNotice('The stream closed. Press Connect to try again.');
      }
    } catch (_) {
      setNotice('The hub is unreachable. Press Connect to try again.');
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
  }

  function disconnect() {
    clearTimers();
    closeStream();
    st.wanted = false;
    cancelResume();
    setState('closed');
  }

  // A drop or resume still in progress when the user disconnects is abandoned.
  function cancelResume() {
    const r = st.resume;
    if (r && !r.done) {
      r.done = true;
      clearTimeout(r.timer);
    }
    const status = el.resumeInfo.dataset.status;
    if (status === 'dropped' || status === 'resuming') {
      el.resumeInfo.dataset.status = '';
      show(el.resumeInfo, '');
    }
  }

  function dropConnection() {
    if (!st.es) return;
    clearTimers();
    closeStream();
    setState('closed');
    st.wanted = true;
    const afterId = st.lastId;
    show(el.resumeInfo, `Connection dropped; reconnecting in ${DROP_DELAY_MS / 1000} s…`);
    el.resumeInfo.dataset.status = 'dropped';
    st.dropTimer = setTimeout(() => {
      st.dropTimer = null;
      startResume(afterId);
      connect({ resume: true, reconnecting: true });
    }, DROP_DELAY_MS);
    updateButtons();
  }

  function startResume(afterId) {
    cancelResume();
    st.resume = { afterId, count: 0, timer: null, done: false };
    el.resumeInfo.dataset.status = 'resuming';
    if (afterId == null) {
      show(el.resumeInfo, 'Reconnecting (no event seen before the drop, so nothing to resume from)…');
    } else {
      show(el.resumeInfo, `Resuming after id ${afterId}…`);
    }
  }

  function finishResume() {
    const r = st.resume;
    if (!r || r.done) return;
    r.done = true;
    clearTimeout(r.timer);
    el.resumeInfo.dataset.status = 'resumed';
    el.resumeInfo.dataset.replayed = String(r.count);
    const n = `${r.count} missed event${r.count === 1 ? '' : 's'} replayed`;
    if (r.afterId == null) {
      show(el.resumeInfo, `Reconnected without a resume point: ${n}`);
    } else {
      show(el.resumeInfo, `resumed after id ${r.afterId}: ${n}`);
    }
  }

  function onControl(es, name, ev) {
    if (st.es !== es) return;
    const parsed = tryJson(ev.data);
    const info = parsed.ok && parsed.value && typeof parsed.value === 'object' ? parsed.value : {};
    // A control event may move the resume point (a reset names the position to
    // continue from); without an id field lastEventId just repeats the last one.
    if (ev.lastEventId) st.lastId = ev.lastEventId;
    addLogEntry({ control: true, id: '', channel: '', type: name, data: parsed.value });

    switch (name) {
      case 'connected': {
        el.connId.textContent = info.connection_id ?? '?';
        el.connUser.textContent = info.user == null ? '(anonymous)' : String(info.user);
        el.connChannels.textContent = Array.isArray(info.channels) ? info.channels.join(', ') : '?';
        el.connectedInfo.hidden = false;
        el.connectedInfo.dataset.connectionId = info.connection_id ?? '';
        if (st.resume && !st.resume.done) {
          clearTimeout(st.resume.timer);
          st.resume.timer = setTimeout(finishResume, REPLAY_WINDOW_MS);
        }
        break;
      }
      case 'reset': {
        const chans = Array.isArray(info.channels) ? info.channels.join(', ') : 'some channels';
        const why = info.reason === 'expired'
          ? 'the events you missed are older than the history kept by the hub'
          : info.reason === 'unknown_id'
            ? 'the hub does not know the last event id'
            : `reason: ${info.reason ?? 'unknown'}`;
        show(el.resetInfo, `Reset on ${chans}: history could not cover the gap (${why}). ` +
          'Some events were missed; an application would reload its state now.');
        el.resetInfo.dataset.reason = info.reason ?? '';
        if (info.id != null && info.id !== '') st.lastId = String(info.id);
        break;
      }
      case 'shutdown':
        setNotice('The hub is shutting down; the browser will reconnect by itself.');
        break;
      case 'token_expired':
        onTokenExpired();
        break;
      default:
        break;
    }
  }

  async function onTokenExpired() {
    if (st.demoTokens) {
      setNotice('The token expired; fetching a new one and resuming…');
      closeStream();
      setState('reconnecting');
      if (await fetchDemoToken()) {
        connect({ resume: true, reconnecting: true });
      } else {
        disconnect();
      }
    } else {
      setNotice('The token expired. Paste a new token to continue.');
      disconnect();
    }
  }

  function onEvent(es, sseType, ev) {
    if (st.es !== es) return;
    const parsed = tryJson(ev.data);
    let channel = '';
    let type = sseType;
    let data = parsed.value;
    let published = null;
    const env = parsed.ok ? parsed.value : null;
    if (env && typeof env === 'object' && !Array.isArray(env) && 'channel' in env && 'data' in env) {
      channel = String(env.channel);
      type = env.type || sseType;
      data = env.data;
      published = env.time || null;
    }
    const id = ev.lastEventId || '';
    if (id) st.lastId = id;
    const duplicate = id !== '' && st.seenIds.has(id);
    if (id) st.seenIds.add(id);
    const replayed = !!(st.resume && !st.resume.done);
    if (replayed) st.resume.count += 1;
    addLogEntry({ control: false, id, channel, type, data, published, duplicate, replayed });
  }

  // -------------------------------------------------------------------- log

  function addLogEntry(e) {
    const li = document.createElement('li');
    li.dataset.id = e.id;
    li.dataset.channel = e.channel;
    li.dataset.type = e.type;
    if (e.control) li.classList.add('control');
    if (e.replayed) li.classList.add('replayed');
    if (e.duplicate) li.dataset.duplicate = 'true';

    const meta = document.createElement('div');
    meta.className = 'meta';
    const add = (cls, text, title) => {
      const s = document.createElement('span');
      s.className = cls;
      s.textContent = text;
      if (title) s.title = title;
      meta.appendChild(s);
      return s;
    };
    if (e.control) {
      add('ev-type', e.type);
      add('badge', 'hub');
    } else {
      add('ev-id', `#${e.id || '—'}`, 'event id');
      add('ev-channel', e.channel || '(no channel)', 'channel');
      add('ev-type', e.type, 'event type');
      add('badge', typeof e.data === 'string' ? 'text' : 'json');
      if (e.replayed) add('badge', 'replayed');
      if (e.duplicate) add('badge', 'duplicate');
    }
    const now = new Date();
    add('ev-time', fmtTime(now), e.published ? `published ${e.published}` : 'received');
    li.appendChild(meta);

    const pre = document.createElement('pre');
    pre.className = 'ev-data';
    pre.textContent = pretty(e.data);
    li.appendChild(pre);

    el.log.prepend(li);
    while (el.log.children.length > MAX_LOG) el.log.lastElementChild.remove();
    if (!e.control) st.eventCount += 1;
    el.logCount.textContent = `${st.eventCount} event${st.eventCount === 1 ? '' : 's'}`;
  }

  // ---------------------------------------------------------------- publish

  async function publish(evt) {
    evt.preventDefault();
    if (!st.token) {
      setPubResult('error', 'No token yet.');
      return;
    }
    const type = el.pubType.value.trim() || 'message';
    const raw = el.pubData.value;
    const parsed = tryJson(raw);
    const data = parsed.ok ? parsed.value : raw;
    const body = el.pubBroadcast.checked
      ? { broadcast: true, type, data }
      : { channel: el.pubChannel.value.trim(), type, data };
    if (!body.broadcast && !body.channel) {
      setPubResult('error', 'Enter a channel (or tick broadcast).');
      return;
    }
    addType(type);
    el.publish.disabled = true;
    setPubResult('pending', 'Publishing…');
    try {
      const res = await fetch('publish', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'application/json',
          Authorization: `Bearer ${st.token}`,
        },
        body: JSON.stringify(body),
      });
      if (res.ok) {
        const out = tryJson(await res.text());
        const id = out.ok && out.value ? out.value.id : undefined;
        const where = body.broadcast ? 'to everyone' : `to ${body.channel}`;
        const kind = parsed.ok ? 'JSON' : 'text';
        setPubResult('ok', `Published ${kind} ${where}${id != null ? ` as id ${id}` : ''}.`);
        el.pubResult.dataset.id = id != null ? String(id) : '';
      } else {
        setPubResult('error', `Publish failed: ${await errorMessage(res)}`);
      }
    } catch (err) {
      setPubResult('error', `Publish failed: ${err.message}`);
    } finally {
      updateButtons();
    }
  }

  function setPubResult(status, text) {
    el.pubResult.dataset.status = status;
    el.pubResult.textContent = text;
  }

  // ------------------------------------------------------------------ wiring

  el.connect.addEventListener('click', () => {
    if (st.wanted) {
      disconnect();
    } else {
      show(el.resumeInfo, '');
      show(el.resetInfo, '');
      connect();
    }
  });
  el.drop.addEventListener('click', dropConnection);
  el.channels.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      connect();
    }
  });
  el.getToken.addEventListener('click', renewToken);
  el.user.addEventListener('change', renewToken);
  el.useToken.addEventListener('click', usePastedToken);
  el.pubChannel.addEventListener('input', () => {
    st.pubChannelTouched = true;
  });
  el.pubBroadcast.addEventListener('change', () => {
    el.pubChannel.disabled = el.pubBroadcast.checked;
  });
  el.pubForm.addEventListener('submit', publish);
  el.pubData.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) el.pubForm.requestSubmit();
  });
  el.clearLog.addEventListener('click', () => {
    el.log.replaceChildren();
    st.eventCount = 0;
    el.logCount.textContent = '0 events';
  });

  async function renewToken() {
    if (!st.demoTokens) return;
    const wasConnected = st.wanted;
    if (await fetchDemoToken()) {
      if (wasConnected) connect();
    }
  }

  async function init() {
    el.user.value = params.get('user') || randomGuest();
    if (params.get('channels')) el.channels.value = params.get('channels');
    el.pubChannel.value = parseChannels(el.channels.value)[0] || '';
    setState('closed');
    if (await fetchDemoToken()) connect();
  }

  init();
})();
