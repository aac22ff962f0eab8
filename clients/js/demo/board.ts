// The task board's state: the `card.*` events of the board channel, applied in
// order, each once (an event seen both in the history and live counts once).
import type { HeraldEvent } from '@herald/client';
import { COLUMNS, type Card, type Column } from './account.js';

export interface BoardState {
  readonly cards: readonly Card[];
  /** Ids of the events applied. */
  readonly seen: ReadonlySet<string>;
}

export const emptyBoard: BoardState = { cards: [], seen: new Set() };

const isColumn = (value: unknown): value is Column => typeof value === 'string' && (COLUMNS as readonly string[]).includes(value);

/** Applies one event of the board channel; others and repeats change nothing. */
export function applyBoardEvent(state: BoardState, event: HeraldEvent): BoardState {
  if (state.seen.has(event.id)) return state;
  const data = (typeof event.data === 'object' && event.data !== null ? event.data : {}) as Record<string, unknown>;
  const seen = new Set(state.seen).add(event.id);
  if (event.type === 'card.created' && typeof data.id === 'string' && typeof data.title === 'string') {
    if (state.cards.some((card) => card.id === data.id)) return { ...state, seen };
    const card: Card = {
      id: data.id,
      title: data.title,
      column: isColumn(data.column) ? data.column : 'next',
      by: typeof data.by === 'string' ? data.by : '',
    };
    return { cards: [...state.cards, card], seen };
  }
  if (event.type === 'card.moved' && typeof data.id === 'string' && isColumn(data.column)) {
    const column = data.column;
    return { cards: state.cards.map((card) => (card.id === data.id ? { ...card, column } : card)), seen };
  }
  return { ...state, seen };
}

/** The board rebuilt from the channel's kept history, then the live events that overtook it. */
export function boardFromHistory(history: readonly HeraldEvent[], live: readonly HeraldEvent[]): BoardState {
  return [...history, ...live].reduce(applyBoardEvent, emptyBoard);
}
