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
      return isRecord(json) ? { kind: 'connected', info: connectedInfo(json, 'sse') } : null;
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
  return eventFromJson(json, 'type', frame.id, frame.event);
}

/**
 * An event from its JSON form (`channel`, type under `typeKey`, `data`, `time`,
 * `id`, and `channels` when it came on several), as the SSE envelope, the long-poll
 * answer and the WebSocket frame all carry it.
 */
export function eventFromJson(json: unknown, typeKey: string, fallbackId: string | null, fallbackType: string): HeraldEvent | null {
  if (!isRecord(json) || typeof json.channel !== 'string') return null;
  const id = typeof json.id === 'string' ? json.id : fallbackId;
  if (id === null) return null;
  const type = json[typeKey];
  const event = {
    channel: json.channel,
    type: typeof type === 'string' ? type : fallbackType,
    data: json.data,
    time: typeof json.time === 'string' ? json.time : '',
    id,
  };
  const channels = stringArray(json.channels);
  return channels.length > 1 ? { ...event, channels } : event;
}

/** The `connected` information, as the SSE event and the WebSocket frame carry it. */
export function connectedInfo(json: Record<string, unknown>, transport: string): ConnectedInfo {
  const id = json.connection_id;
  return {
    connectionId: typeof id === 'string' || typeof id === 'number' ? String(id) : '',
    user: typeof json.user === 'string' ? json.user : null,
    channels: stringArray(json.channels),
    heartbeatMs: typeof json.heartbeat_ms === 'number' ? json.heartbeat_ms : transport === 'sse' ? 30_000 : 0,
    lastEventId: typeof json.last_event_id === 'string' ? json.last_event_id : null,
    transport,
  };
}

export function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
