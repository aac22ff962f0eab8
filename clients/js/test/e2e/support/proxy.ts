// A reverse proxy in front of the hub that buffers event streams until they end,
// as some corporate proxies and antivirus filters do: a `text/event-stream`
// response reaches the browser only once it is complete, which for a live stream
// is never. Everything else passes through unchanged.
import { createServer, request as forward, type Server } from 'node:http';

export interface BufferingProxy {
  /** `http://127.0.0.1:PORT`, to use as the hub's URL. */
  readonly url: string;
  /** How many event streams it held back. */
  buffered(): number;
  close(): Promise<void>;
}

export async function startBufferingProxy(target: string): Promise<BufferingProxy> {
  const upstream = new URL(target);
  let held = 0;
  const server: Server = createServer((req, res) => {
    const outgoing = forward(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: upstream.host },
      },
      (answer) => {
        const type = String(answer.headers['content-type'] ?? '');
        if (!type.startsWith('text/event-stream')) {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        held += 1;
        const chunks: Buffer[] = [];
        answer.on('data', (chunk: Buffer) => chunks.push(chunk));
        answer.on('end', () => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.end(Buffer.concat(chunks));
        });
        res.on('close', () => answer.destroy());
      },
    );
    outgoing.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(outgoing);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    buffered: () => held,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
