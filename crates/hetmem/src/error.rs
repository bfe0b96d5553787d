//! The one error type of hetmem.
//!
//! Every bad argument, every unavailable device and every driver failure is an [`Error`] value:
//! hetmem never panics on bad input. Errors from the optional driver crates (opencl3, cudarc) are
//! wrapped in [`BackendError`] so that no optional dependency leaks into the public API.

use std::fmt;

use crate::backend::{BackendId, BackendKind};

/// `Result` with hetmem's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hetmem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend is not present on this machine (no driver, no device, feature not compiled in).
    #[error("{backend} backend unavailable: {reason}")]
    BackendUnavailable {
        /// Which kind of backend was asked for.
        backend: BackendKind,
        /// Why it cannot be used, in words a user can act on.
        reason: String,
    },

    /// The device (or host) could not provide the memory.
    #[error("out of memory on {backend}: requested {requested} bytes{}",
        diagnosis.as_ref().map(|d| format!("; {d}")).unwrap_or_default())]
    OutOfMemory {
        /// The backend that ran out.
        backend: BackendKind,
        /// Bytes requested by the failing call.
        requested: u64,
        /// What the pool knew, when the failure came through a pool.
        diagnosis: Option<Box<crate::pool::OomDiagnosis>>,
    },

    /// An allocation would take the memory held under a [`MemoryLimit`](crate::resource::MemoryLimit)
    /// past it, even after every cache under the limit was released.
    #[error("memory limit of {limit} bytes exceeded: {requested} bytes requested, {in_use} bytes already in use (caches released)")]
    LimitExceeded {
        /// Bytes the failing allocation asked the backend for.
        requested: u64,
        /// The limit.
        limit: u64,
        /// Bytes held under the limit when it failed.
        in_use: u64,
    },

    /// A new memory limit below the memory still in use.
    #[error("memory limit of {limit} bytes is below the {in_use} bytes in use (caches released)")]
    LimitBelowUse {
        /// The limit asked for.
        limit: u64,
        /// Bytes in use.
        in_use: u64,
    },

    /// A buffer was given to a memory manager that did not make it.
    #[error("{what}: the buffer was not made by this memory manager")]
    ForeignBuffer {
        /// What was attempted.
        what: &'static str,
    },

    /// A single allocation larger than the device allows.
    #[error(
        "allocation of {requested} bytes exceeds the device's largest allocation of {max} bytes"
    )]
    AllocationTooLarge {
        /// Bytes requested.
        requested: u64,
        /// The device's largest single allocation.
        max: u64,
    },

    /// A byte range does not fit inside a block, a buffer or a staging area.
    #[error("{what}: range {offset}..{offset}+{len} is out of bounds for size {size}")]
    OutOfRange {
        /// What was being accessed ("write destination", "copy source", …).
        what: &'static str,
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// Size of the object the range must fit in.
        size: u64,
    },

    /// A zero-sized allocation or transfer, which devices reject and which is almost always a bug.
    #[error("{what}: zero length is not allowed")]
    ZeroLength {
        /// What was zero-sized.
        what: &'static str,
    },

    /// A size computation overflowed (`count * size_of::<T>()`, `offset + len`, rounding).
    #[error("size arithmetic overflowed: {what}")]
    SizeOverflow {
        /// The computation that overflowed.
        what: &'static str,
    },

    /// Two lengths that must agree do not.
    #[error("{what}: length mismatch, expected {expected}, got {actual}")]
    LengthMismatch {
        /// What was being compared.
        what: &'static str,
        /// Length required.
        expected: u64,
        /// Length given.
        actual: u64,
    },

    /// Data of one element type met a buffer of another: an MPI message whose bytes are no
    /// whole number of the buffer's elements, ranks passing different types to a collective.
    #[error("{what}: element type mismatch, the buffer holds {expected}, found {found}")]
    TypeMismatch {
        /// What was being done.
        what: &'static str,
        /// The buffer's element type.
        expected: &'static str,
        /// What was found instead.
        found: String,
    },

    /// A block, queue, event or staging buffer was handed to a backend that did not create it.
    #[error("{what} belongs to backend {found}, not to backend {expected}")]
    ForeignHandle {
        /// The kind of handle.
        what: &'static str,
        /// The backend that was called.
        expected: BackendId,
        /// The backend that created the handle.
        found: BackendId,
    },

    /// A block was released to (or adopted into a buffer of) a backend that did not make it.
    /// The block travels back in the error, unreleased, so that it can still be given to its
    /// owner.
    #[error("device block of backend {} given to backend {expected}", block.backend())]
    ReleasedToWrongBackend {
        /// The backend that was called.
        expected: BackendId,
        /// The block, still owned by its backend.
        block: crate::backend::DeviceBlock,
    },

    /// A view ([`Backend::view`](crate::backend::Backend::view)) was given to `release`, or an
    /// allocation to `release_view`. The block travels back in the error, unreleased.
    #[error("{} given to {called}: views go to release_view, allocations to release",
        if block.is_view() { "a view" } else { "an allocation" })]
    ReleasedAsWrongKind {
        /// The call that refused it.
        called: &'static str,
        /// The block, still owned by its backend.
        block: crate::backend::DeviceBlock,
    },

    /// A buffer view cannot be reinterpreted as the requested element type.
    #[error("cannot view {bytes} bytes at byte offset {offset} as {to} (size {size}, alignment {align}): {reason}")]
    IncompatibleCast {
        /// The target element type's name.
        to: &'static str,
        /// Its size in bytes.
        size: usize,
        /// Its alignment in bytes.
        align: usize,
        /// The view's length in bytes.
        bytes: usize,
        /// The view's offset in bytes from the start of its buffer.
        offset: usize,
        /// Which rule fails.
        reason: &'static str,
    },

    /// Memory that must start on a device alignment does not: a view whose offset in its
    /// OpenCL buffer is no multiple of the device's base address alignment cannot become a
    /// sub-buffer.
    #[error(
        "{what}: byte offset {offset} is not a multiple of the device's {alignment}-byte alignment"
    )]
    Misaligned {
        /// What needed the alignment.
        what: &'static str,
        /// The offset.
        offset: u64,
        /// The alignment required, in bytes.
        alignment: u64,
    },

    /// The buffer context (or the memory manager owning it) that made a buffer was closed or
    /// dropped: the buffer keeps its memory and its host data, but can no longer allocate,
    /// transfer or hand out device access.
    #[error("{what}: the buffer context that made this buffer is closed")]
    ContextClosed {
        /// What was attempted.
        what: &'static str,
    },

    /// A queued transfer was cancelled (by its submission, or by dropping its scheduler)
    /// before it started.
    #[error("{what}: cancelled before it started")]
    Cancelled {
        /// What was cancelled.
        what: &'static str,
    },

    /// A transfer's destination did not match its source (checked when verification is on).
    #[error("{what}: checksum mismatch, sent CRC-32 {expected:#010x}, found {actual:#010x}")]
    IntegrityMismatch {
        /// Which transfer.
        what: &'static str,
        /// CRC-32 of the source.
        expected: u32,
        /// CRC-32 of what arrived.
        actual: u32,
    },

    /// Host memory could not be locked in RAM: the process may lock at most `limit` bytes
    /// (`RLIMIT_MEMLOCK`; `None` where it is unlimited and the kernel still refused).
    #[error("cannot lock {requested} bytes of host memory in RAM (RLIMIT_MEMLOCK {}); raise the limit (ulimit -l) or run with CAP_IPC_LOCK",
        limit.map_or_else(|| "unlimited".to_owned(), |l| format!("{l} bytes")))]
    MemoryLockLimit {
        /// Bytes asked to be locked.
        requested: u64,
        /// The process's locked-memory limit.
        limit: Option<u64>,
    },

    /// The device cannot do what was asked: its [`Capabilities`](crate::backend::Capabilities)
    /// do not include it (mapping a CUDA device block, `Placement::Shared` on a device without
    /// shared allocations).
    #[error("{backend:?} device cannot {what}")]
    Unsupported {
        /// The family of the device.
        backend: BackendKind,
        /// What was asked.
        what: &'static str,
    },

    /// A trace file could not be read: the line, and what is wrong with it.
    #[error("trace line {line}: {reason}")]
    BadTrace {
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// A coherence rule refused the operation (invalidating the only valid copy).
    #[error(transparent)]
    Coherence(#[from] crate::buffer::CoherenceError),

    /// Any other invalid argument, with an explanation.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The device or its driver reported a failure.
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// An operating-system call failed.
    #[error("operating system error: {0}")]
    Os(#[from] std::io::Error),
}

impl Error {
    /// Whether the same operation may succeed if tried again later (a transient driver failure,
    /// memory that may be freed meanwhile). Permanent errors — bad arguments, missing backends —
    /// return `false` and should fail fast.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::OutOfMemory { .. }
            | Error::LimitExceeded { .. }
            | Error::IntegrityMismatch { .. } => true,
            Error::Backend(e) => e.retryable,
            Error::Os(e) => matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// A failure reported by a device API, with the API's own code and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// The backend kind that failed.
    pub backend: BackendKind,
    /// The API call that failed (`"clEnqueueWriteBuffer"`).
    pub operation: &'static str,
    /// The API's numeric status code.
    pub code: i64,
    /// The API's symbolic name for the code (`"CL_OUT_OF_RESOURCES"`).
    pub name: &'static str,
    /// Whether a retry may succeed.
    pub retryable: bool,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} call {} failed: {} ({})",
            self.backend, self.operation, self.name, self.code
        )
    }
}

impl std::error::Error for BackendError {}
