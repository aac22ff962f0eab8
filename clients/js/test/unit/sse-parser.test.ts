import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SseParser, type SseFrame } from '../../src/sse/parser.js';

function parse(chunks: (string | Uint8Array)[]): SseFrame[] {
  const frames: SseFrame[] = [];
  const parser = new SseParser((frame) => frames.push(frame));
  for (const chunk of chunks) parser.push(chunk);
  return frames;
}

const frame = (f: Partial<SseFrame>): SseFrame => ({ event: 'message', data: '', id: null, retry: null, ...f });

describe('SseParser', () => {
  it('reads fields, joins data lines and defaults the event name', () => {
    const frames = parse([
      'retry: 3000\nevent: connected\ndata: {"a":1}\n\n',
      'id: e-1\ndata: one\ndata:two\ndata: \n\n',
    ]);
    assert.deepEqual(frames, [
      frame({ event: 'connected', data: '{"a":1}', retry: 3000 }),
      frame({ data: 'one\ntwo\n', id: 'e-1' }),
    ]);
  });

  it('skips comments and events without data, keeps an empty data line', () => {
    const frames = parse([':\n\n: heartbeat\n\nevent: nothing\n\ndata\n\n']);
    assert.deepEqual(frames, [frame({ data: '' })]);
  });

  it('accepts CRLF, CR and LF line ends and ignores unknown fields and bad retry values', () => {
    const frames = parse(['data: a\r\nfoo: bar\rretry: 1x\ndata: b\r\r\n']);
    assert.deepEqual(frames, [frame({ data: 'a\nb' })]);
  });

  it('keeps only the first space after the colon and ids without NUL', () => {
    assert.deepEqual(parse(['data:  two spaces\nid: a\0b\n\n']), [frame({ data: ' two spaces' })]);
  });

  it('strips a byte order mark at the start', () => {
    const bytes = new TextEncoder().encode('\uFEFFdata: x\n\n');
    assert.deepEqual(parse([bytes]), [frame({ data: 'x' })]);
  });

  it('gives the same frames whatever the chunk boundaries', () => {
    const stream =
      'retry: 3000\r\nevent: connected\r\ndata: {"user":"zoë"}\r\n\r\n' +
      ': heartbeat\n\n' +
      'id: 5f-1\ndata: {"channel":"a","data":"ünï€ode 🎉"}\n\n' +
      'id: 5f-2\revent: task.done\rdata: line1\rdata: line2\r\r' +
      'id: 5f-3\ndata\n\n';
    const bytes = new TextEncoder().encode(stream);
    const whole = parse([bytes]);
    assert.deepEqual(whole.map((f) => f.id), [null, '5f-1', '5f-2', '5f-3']);
    assert.ok(whole[1]?.data.includes('🎉'));
    assert.deepEqual(whole[2], frame({ event: 'task.done', data: 'line1\nline2', id: '5f-2' }));

    // Every single cut, including inside multi-byte characters and between CR and LF.
    for (let cut = 1; cut < bytes.length; cut++) {
      assert.deepEqual(parse([bytes.slice(0, cut), bytes.slice(cut)]), whole);
    }
    // Byte by byte.
    assert.deepEqual(parse([...bytes].map((b) => Uint8Array.of(b))), whole);
    // Random chunkings.
    let seed = 7;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 200; round++) {
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < bytes.length; ) {
        const size = 1 + Math.floor(random() * 12);
        chunks.push(bytes.slice(at, at + size));
        at += size;
      }
      assert.deepEqual(parse(chunks), whole);
    }
  });

  it('does not dispatch an unterminated event', () => {
    assert.deepEqual(parse(['data: partial\n']), []);
  });
});
