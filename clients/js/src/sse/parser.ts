/** One event of a `text/event-stream`, as the WHATWG HTML standard defines them. */
export interface SseFrame {
  /** The `event:` field; `message` when absent. */
  event: string;
  /** The `data:` lines, joined with `\n`. */
  data: string;
  /** The `id:` field of this event, if it had one. */
  id: string | null;
  /** The `retry:` field, if it had a valid one. */
  retry: number | null;
}

/**
 * An incremental `text/event-stream` parser: feed it chunks as they arrive, cut
 * anywhere (inside a line, between `\r` and `\n`, inside a UTF-8 sequence), and
 * it calls `onFrame` for each complete event. Comments and events without data
 * are not reported, as in `EventSource`.
 */
export class SseParser {
  readonly #onFrame: (frame: SseFrame) => void;
  readonly #decoder = new TextDecoder('utf-8');
  #buffer = '';
  /** The previous chunk ended in `\r`: a `\n` starting the next one belongs to it. */
  #pendingCr = false;
  #data: string[] = [];
  #event = '';
  #id: string | null = null;
  #retry: number | null = null;

  constructor(onFrame: (frame: SseFrame) => void) {
    this.#onFrame = onFrame;
  }

  /** Feeds a chunk of the stream (bytes, or text already decoded). */
  push(chunk: Uint8Array | string): void {
    let text = typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true });
    if (this.#pendingCr && text.startsWith('\n')) text = text.slice(1);
    this.#pendingCr = false;
    this.#buffer += text;

    let start = 0;
    const buffer = this.#buffer;
    for (;;) {
      const cr = buffer.indexOf('\r', start);
      const lf = buffer.indexOf('\n', start);
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (end === -1) break;
      this.#line(buffer.slice(start, end));
      if (buffer[end] === '\r') {
        if (end + 1 === buffer.length) {
          this.#pendingCr = true;
          start = end + 1;
          break;
        }
        start = buffer[end + 1] === '\n' ? end + 2 : end + 1;
      } else {
        start = end + 1;
      }
    }
    this.#buffer = buffer.slice(start);
  }

  #line(line: string): void {
    if (line === '') {
      this.#dispatch();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.#data.push(value);
        break;
      case 'event':
        this.#event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.#id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.#retry = Number(value);
        break;
      default:
        break;
    }
  }

  #dispatch(): void {
    const data = this.#data;
    const frame: SseFrame = { event: this.#event || 'message', data: data.join('\n'), id: this.#id, retry: this.#retry };
    this.#data = [];
    this.#event = '';
    this.#id = null;
    this.#retry = null;
    if (data.length > 0) this.#onFrame(frame);
  }
}
