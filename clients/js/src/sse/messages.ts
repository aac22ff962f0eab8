import { isRecord } from '../errors.js';
import type { HubMessage } from '../transport.js';
import type { ConnectedInfo, HeraldEvent, ResetNotice } from '../types.js';
import type { SseFrame } from './parser.js';

/**
 * Translates an SSE frame of an `envelope=1` stream into a hub message: the
 * hub's own events by their SSE event name, any other name is an application
 * event whose data is the JSON envelope. Returns `null` for frames it does not
 * understand (a newer hub's control events, malformed data).
 */
export function frameToMessage(frame: SseFrame): HubMessage | null {
  const json = parseJson(frame.data);
  switch (frame.event) {
    case 'connected':
      return isRecord(json) ? { kind: 'connected', info: connectedInfo(json) } : null;
    case 'reset': {
      if (!isRecord(json) || frame.id === null) return null;
      const notice: ResetNotice = {
        reason: typeof json.reason === 'string' ? json.reason : 'unknown_id',
        channels: stringArray(json.channels),
        id: frame.id,
      };
      return { kind: 'reset', notice };
    }
    case 'shutdown': {
      const retry = isRecord(json) && typeof json.retry_ms === 'number' ? json.retry_ms : frame.retry;
      return { kind: 'shutdown', retryMs: retry };
    }
    case 'token_expired':
      return { kind: 'token_expired' };
    case 'error':
      return null;
    default: {
      const event = envelope(json, frame);
      return event ? { kind: 'event', event } : null;
    }
  }
}

function envelope(json: unknown, frame: SseFrame): HeraldEvent | null {
  if (!isRecord(json) || typeof json.channel !== 'string') return null;
  const id = typeof json.id === 'string' ? json.id : frame.id;
  if (id === null) return null;
  return {
    channel: json.channel,
    type: typeof json.type === 'string' ? json.type : frame.event,
    data: json.data,
    time: typeof json.time === 'string' ? json.time : '',
    id,
  };
}

function connectedInfo(json: Record<string, unknown>): ConnectedInfo {
  const id = json.connection_id;
  return {
    connectionId: typeof id === 'string' || typeof id === 'number' ? String(id) : '',
    user: typeof json.user === 'string' ? json.user : null,
    channels: stringArray(json.channels),
    heartbeatMs: typeof json.heartbeat_ms === 'number' ? json.heartbeat_ms : 30_000,
  };
}

function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
