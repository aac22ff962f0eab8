import { createContext, createElement, useContext, type ReactNode } from 'react';
import type { HeraldClient } from '../client.js';
import type { EventMap } from '../types.js';

const HeraldContext = createContext<HeraldClient | null>(null);

export interface HeraldProviderProps<M extends EventMap = EventMap> {
  /** The client the hooks below use. The application creates it and closes it. */
  client: HeraldClient<M>;
  children?: ReactNode;
}

/** Makes `client` available to `useChannel`, `useConnectionState` and {@link useHeraldClient}. */
export function HeraldProvider<M extends EventMap>({ client, children }: HeraldProviderProps<M>): ReactNode {
  return createElement(HeraldContext.Provider, { value: client as unknown as HeraldClient }, children);
}

/** The client of the nearest {@link HeraldProvider}. */
export function useHeraldClient<M extends EventMap = EventMap>(): HeraldClient<M> {
  const client = useContext(HeraldContext);
  if (!client) throw new Error('useHeraldClient: no <HeraldProvider client={...}> above this component');
  return client as unknown as HeraldClient<M>;
}
