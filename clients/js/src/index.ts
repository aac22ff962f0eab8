export { HeraldClient } from './client.js';
export type { ClientOptions, PublishResult, TransportChoice } from './client.js';
export type { SubscribeOptions } from './subscriptions.js';
export { HeraldError } from './errors.js';
export { DEFAULT_BACKOFF, backoffDelay } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { sseTransport } from './sse/transport.js';
export type { SseTransportOptions } from './sse/transport.js';
export { wsTransport } from './ws/transport.js';
export type { WebSocketLike, WsTransportOptions } from './ws/transport.js';
export { autoTransport, pollTransport } from './poll/transport.js';
export type { AutoTransport, AutoTransportOptions, PollTransportOptions } from './poll/transport.js';
export type {
  HubMessage,
  Transport,
  TransportClose,
  TransportConnection,
  TransportRequest,
  TransportSink,
} from './transport.js';
export type {
  ConnectedInfo,
  ConnectionState,
  EventMap,
  EventOf,
  EventType,
  HeraldEvent,
  PresenceChange,
  PresenceMember,
  ResetNotice,
  TokenProvider,
  TokenRequestReason,
  Unsubscribe,
} from './types.js';
export { NotificationsApi, TasksApi, parseNotification, parseTask } from './inbox.js';
export type {
  HubFetch,
  InboxChange,
  ListNotificationsOptions,
  NewNotification,
  Notification,
  NotificationPage,
  NotificationType,
  Task,
  TaskStatus,
  TaskUpdate,
} from './inbox.js';
export {
  NotificationsFeed,
  TasksFeed,
  applyFirstPage,
  applyNextPage,
  applyNotificationChange,
  applyTask,
  applyTaskList,
  initialNotificationsState,
  initialTasksState,
  notificationChange,
  taskChange,
} from './inbox-state.js';
export type { FeedOptions, NotificationChange, NotificationsState, TasksState } from './inbox-state.js';
