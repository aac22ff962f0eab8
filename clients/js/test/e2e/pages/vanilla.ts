// The page of the vanilla-client tests: a HeraldClient driven by the test through
// `window.harness`, recording everything it sees.
import {
  HeraldClient,
  HeraldError,
  autoTransport,
  pollTransport,
  sseTransport,
  wsTransport,
  type Transport,
  type TransportConnection,
  type TransportSink,
} from '@herald/client';
import type { Harness, HarnessStart } from './harness-types.js';

/** A transport, plus a way to drop its connections as a network failure would. */
function droppable(inner: Transport): { transport: Transport; dropAll(): void } {
  const live = new Map<TransportConnection, TransportSink>();
  return {
    transport: {
      name: inner.name,
      open(request, sink) {
        const connection: TransportConnection = inner.open(request, {
          message: (message) => sink.message(message),
          closed: (reason) => {
            live.delete(connection);
            sink.closed(reason);
          },
        });
        live.set(connection, sink);
        const wrapped: TransportConnection = {
          close: () => {
            live.delete(connection);
            connection.close();
          },
        };
        // What only some transports can do goes straight through.
        if (connection.setChannels) wrapped.setChannels = connection.setChannels.bind(connection);
        if (connection.publish) wrapped.publish = connection.publish.bind(connection);
        if (connection.presence) wrapped.presence = connection.presence.bind(connection);
        return wrapped;
      },
    },
    dropAll() {
      for (const [connection, sink] of [...live]) {
        live.delete(connection);
        connection.close();
        sink.closed({ kind: 'network', message: 'dropped by the test' });
      }
    },
  };
}

let client: HeraldClient | null = null;
let dropAll = (): void => {};
const stops = new Map<string, Array<() => void>>();
let hidden = false;
Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });

function need(): HeraldClient {
  if (!client) throw new Error('harness.start() first');
  return client;
}

function track(channel: string, stop: () => void): void {
  stops.set(channel, [...(stops.get(channel) ?? []), stop]);
}

const harness: Harness = {
  received: [],
  states: [],
  resets: [],
  errors: [],
  tokenReasons: [],
  presenceChanges: [],

  start(options: HarnessStart) {
    const inner =
      options.transport === 'ws'
        ? wsTransport()
        : options.transport === 'poll'
          ? pollTransport()
          : options.transport === 'auto'
            ? autoTransport(options.fallbackAfterMs === undefined ? {} : { fallbackAfterMs: options.fallbackAfterMs })
            : sseTransport();
    const wrapped = droppable(inner);
    dropAll = wrapped.dropAll;
    const token = options.tokenFromTest
      ? ({ reason }: { reason: string }) => {
          harness.tokenReasons.push(reason);
          if (!window.mintTestToken) throw new Error('no token source');
          return window.mintTestToken();
        }
      : options.token;
    client = new HeraldClient({
      url: options.url,
      transport: wrapped.transport,
      ...(token === undefined ? {} : { token }),
      ...(options.reconnect ? { reconnect: options.reconnect } : {}),
      ...(options.pauseAfterMs === undefined ? {} : { pauseWhenHidden: { afterMs: options.pauseAfterMs } }),
    });
    client.onStateChange((state) => harness.states.push(state));
    client.onError((error) => harness.errors.push({ code: error.code, channels: error.channels }));
    harness.subscribe(options.channels);
  },

  subscribe(channels) {
    const c = need();
    for (const channel of channels) {
      const stop = c.subscribe(
        channel,
        (event) => harness.received.push({ ...event, via: channel }),
        {
          // The refetch hook: reload the channel's state, here from its history.
          onReset: (notice) => {
            void c.history(channel, { limit: 10 }).then((events) => {
              harness.resets.push({ channel, reason: notice.reason, id: notice.id, refetched: events.length });
            });
          },
        },
      );
      track(channel, stop);
    }
  },

  subscribeType(channel, type) {
    track(channel, need().subscribe(channel, type, (event) => harness.received.push({ ...event, via: `${channel}#${type}` })));
  },

  unsubscribe(channel) {
    for (const stop of stops.get(channel) ?? []) stop();
    stops.delete(channel);
  },

  drop: () => dropAll(),

  setHidden(value) {
    hidden = value;
    document.dispatchEvent(new Event('visibilitychange'));
  },

  state: () => need().state,
  lastEventId: () => need().lastEventId,
  connectedChannels: () => need().connection?.channels ?? [],
  transportInUse: () => need().connection?.transport ?? null,
  publish: (channel, type, data) =>
    need()
      .publish(channel, type, data)
      .then(
        (result) => result.id,
        (error: unknown) => `error:${error instanceof HeraldError ? error.code : String(error)}`,
      ),
  presence: (channel) =>
    need()
      .presence(channel)
      .catch((error: unknown) => `error:${error instanceof HeraldError ? error.code : String(error)}`),
  watchPresence(channel) {
    track(channel, need().onPresence(channel, (change) => harness.presenceChanges.push(change)));
  },
};

window.harness = harness;
