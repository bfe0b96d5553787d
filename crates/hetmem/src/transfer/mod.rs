//! Moving bytes between host memory and devices.
//!
//! [`TransferEngine`] picks a [`Plan`] per transfer from its size and the backend's capabilities
//! (direct, chunked over several queues, pipelined through a staging ring, mapped, batched,
//! peer or through the host across devices),
//! retries transient failures chunk by chunk under a [`RetryPolicy`], optionally verifies the
//! destination with a CRC-32, and keeps [`TransferStats`]. [`TransferScheduler`] runs submitted
//! [`TransferRequest`]s asynchronously on several queues, by [`Priority`], cancellable while
//! queued, each owning what it moves until its [`Submission`] gives it back. [`TransferHandle`] is the completion
//! of asynchronous work, as a `Future` and a blocking `wait()`.

mod background;
mod engine;
mod handle;
mod request;
mod retry;
mod scheduler;
mod stats;

pub(crate) use background::Background;
pub use background::OwnedTransfer;
pub(crate) use engine::Lane;
pub use engine::{
    plan, plan_batch, plan_read, BatchWrite, Plan, Strategy, TransferConfig, TransferEngine,
};
pub use handle::TransferHandle;
pub use request::{Failed, Outcome, Progress, TransferRequest};
pub use retry::RetryPolicy;
pub use scheduler::{Priority, SchedulerConfig, Submission, TransferScheduler};
pub(crate) use stats::DirectionCounters;
pub use stats::{Direction, DirectionStats, TransferStats};
