export { HeraldProvider, useHeraldClient } from './context.js';
export type { HeraldProviderProps } from './context.js';
export { applyPresence, useChannel, useConnectionState, usePresence } from './hooks.js';
export type { PresenceState } from './hooks.js';
export { useNotifications, useTasks } from './inbox.js';
export type { InboxHookOptions, UseNotifications, UseTasks } from './inbox.js';
