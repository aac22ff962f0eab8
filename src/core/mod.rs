//! The core of the hub: channels, events, history, the clock it ages by, and fan-out.
//!
//! Nothing here knows about HTTP, JWT, Redis or SQL: transports, brokers and
//! credentials are adapters around these types.

pub mod channel;
pub mod clock;
pub mod event;
pub mod fanout;
pub mod history;
pub mod partition;
pub mod policy;
pub mod presence;

pub use channel::{BROADCAST, ChannelError, ChannelName, ChannelPattern};
pub use clock::{Clock, ManualClock};
pub use event::{ChannelSet, Event, EventError, EventLimits, FrameFormat, NewEvent, Payload};
pub use fanout::{
    Delivered, Demand, Fanout, Item, Overflow, OverflowSignal, Reset, ResetReason, Subscription,
};
pub use history::{ChannelLog, ChannelLogs, HistoryPolicy, KnownId, Resumed};
pub use partition::{Cursor, Partition, Partitions, Position, Split};
pub use policy::{Denied, Grants, NamespacePolicy, Policies, SubscribeRule};
pub use presence::{ClusterView, Member, Presence, Transition};
