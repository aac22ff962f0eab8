export { HeraldProvider, useHeraldClient } from './context.js';
export type { HeraldProviderProps } from './context.js';
export { useChannel, useConnectionState } from './hooks.js';
