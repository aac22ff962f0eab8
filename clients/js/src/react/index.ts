export { HeraldProvider, useHeraldClient } from './context.js';
export type { HeraldProviderProps } from './context.js';
export { useChannel, useConnectionState } from './hooks.js';
export { useNotifications, useTasks } from './inbox.js';
export type { InboxHookOptions, UseNotifications, UseTasks } from './inbox.js';
