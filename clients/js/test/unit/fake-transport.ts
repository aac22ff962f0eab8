import type {
  HubMessage,
  Transport,
  TransportClose,
  TransportConnection,
  TransportRequest,
  TransportSink,
} from '../../src/transport.js';
import type { ConnectedInfo } from '../../src/types.js';

/** A transport whose connections the test drives by hand. */
export class FakeTransport implements Transport {
  readonly name: string = 'fake';
  readonly connections: FakeConnection[] = [];

  open(request: TransportRequest, sink: TransportSink): TransportConnection {
    const connection = new FakeConnection(request, sink);
    this.connections.push(connection);
    return connection;
  }

  get last(): FakeConnection {
    const last = this.connections.at(-1);
    if (!last) throw new Error('no connection was opened');
    return last;
  }

  /** Connections not closed by the client. */
  get active(): FakeConnection[] {
    return this.connections.filter((c) => !c.closedByClient);
  }
}

export class FakeConnection implements TransportConnection {
  closedByClient = false;

  constructor(
    readonly request: TransportRequest,
    readonly sink: TransportSink,
  ) {}

  close(): void {
    this.closedByClient = true;
  }

  send(message: HubMessage): this {
    if (this.closedByClient) throw new Error('the client closed this connection');
    this.sink.message(message);
    return this;
  }

  connected(info: Partial<ConnectedInfo> = {}): this {
    return this.send({
      kind: 'connected',
      info: { connectionId: '1', user: 'u', channels: [...this.request.channels], heartbeatMs: 30_000, lastEventId: null, transport: 'fake', ...info },
    });
  }

  event(channel: string, id: string, data: unknown = id, type = 'message'): this {
    return this.send({ kind: 'event', event: { channel, type, data, time: '2026-01-01T00:00:00.000Z', id } });
  }

  reset(channels: string[], id: string, reason = 'unknown_id'): this {
    return this.send({ kind: 'reset', notice: { reason, channels, id } });
  }

  fail(reason: TransportClose): void {
    this.sink.closed(reason);
  }

  reject(status: number, code: string, retryAfterMs: number | null = null): void {
    this.fail({ kind: 'rejected', status, code, message: code, retryAfterMs });
  }
}
