//! Moving bytes between host and devices.
//!
//! For now this holds the handle every asynchronous operation returns; the transfer engine
//! (plans, staging ring, batching, retries) grows here.

mod handle;

pub use handle::TransferHandle;
