//! What a caller can ask of one allocation: [`AllocOptions`], [`Placement`], [`AccessPattern`].

use std::fmt;
use std::sync::Arc;

/// Where a buffer's memory lives. [`Placement::Auto`] resolves through one decision table
/// ([`decide`](super::decide)); the others are requests that the table only maps onto what the
/// device can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Placement {
    /// Chosen from the access pattern, the size and the device's capabilities.
    #[default]
    Auto,
    /// Lives on the host; a device copy is made when the device first uses it.
    Host,
    /// Lives on the host, and its transfers go through the device's page-locked staging memory
    /// (DMA at full speed) at every size.
    HostPinned,
    /// Lives on the device; a host copy is made when the host first uses it.
    Device,
    /// One allocation both sides use, never a transfer: where device memory is host memory,
    /// or the device allocates memory it shares with the host (OpenCL fine-grained SVM, CUDA
    /// managed memory, cached in a pool of their own).
    Shared,
}

impl Placement {
    /// Every placement, in declaration order.
    pub const ALL: [Placement; 5] = [
        Placement::Auto,
        Placement::Host,
        Placement::HostPinned,
        Placement::Device,
        Placement::Shared,
    ];

    /// The placement's name as written in code.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Auto => "Auto",
            Placement::Host => "Host",
            Placement::HostPinned => "HostPinned",
            Placement::Device => "Device",
            Placement::Shared => "Shared",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a buffer's memory is allocated (the seeds' `AllocationMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum AllocMode {
    /// From the manager's caching pools (the default): a reused block costs nanoseconds.
    #[default]
    Pooled,
    /// A fresh backend allocation for each side, released when the buffer drops; nothing is
    /// cached. For one-off buffers that should not stay reserved in a pool, and for measuring.
    Unpooled,
    /// Pooled, living on the host with every transfer through page-locked staging memory:
    /// [`Placement::HostPinned`].
    Pinned,
    /// One allocation both sides use, never a transfer: [`Placement::Shared`] (where the
    /// device's memory is host memory, pooled; where it allocates shared memory, SVM or
    /// managed memory).
    Unified,
}

impl AllocMode {
    /// The placement this mode asks for, where it asks for one.
    pub(crate) fn placement(self) -> Option<Placement> {
        match self {
            AllocMode::Pooled | AllocMode::Unpooled => None,
            AllocMode::Pinned => Some(Placement::HostPinned),
            AllocMode::Unified => Some(Placement::Shared),
        }
    }
}

/// How a buffer will be used: a hint for [`Placement::Auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum AccessPattern {
    /// Nothing known.
    #[default]
    Unknown,
    /// Read or written front to back, mostly by kernels.
    Sequential,
    /// Scattered small accesses, mostly from the host.
    Random,
    /// Written once, then read many times (weights, lookup tables).
    ReadMostly,
    /// Written once and handed to the device (results of a one-off upload).
    WriteOnce,
    /// New data every iteration flowing host → device (or back): input batches, frames.
    Streaming,
}

impl AccessPattern {
    /// Every pattern, in declaration order.
    pub const ALL: [AccessPattern; 6] = [
        AccessPattern::Unknown,
        AccessPattern::Sequential,
        AccessPattern::Random,
        AccessPattern::ReadMostly,
        AccessPattern::WriteOnce,
        AccessPattern::Streaming,
    ];
}

/// Options for [`MemoryManager::alloc_with`](super::MemoryManager::alloc_with).
///
/// ```
/// use hetmem::manager::{AccessPattern, AllocOptions, Placement};
///
/// let options = AllocOptions::new()
///     .placement(Placement::Device)
///     .access(AccessPattern::ReadMostly)
///     .label("weights");
/// assert_eq!(options.label_str(), Some("weights"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocOptions {
    /// Where the memory lives.
    pub placement: Placement,
    /// How it is allocated. [`AllocMode::Pinned`] and [`AllocMode::Unified`] choose the
    /// placement, and a different explicit placement beside them is an error.
    pub mode: AllocMode,
    /// How it will be used.
    pub access: AccessPattern,
    /// Whether the buffer reads as zeros until written (the default). Off, its first use skips
    /// zero-filling and its contents are whatever the pooled memory held.
    pub zeroed: bool,
    /// A name for statistics, leak reports and recommendations.
    pub label: Option<Arc<str>>,
}

impl Default for AllocOptions {
    fn default() -> Self {
        AllocOptions {
            placement: Placement::Auto,
            mode: AllocMode::Pooled,
            access: AccessPattern::Unknown,
            zeroed: true,
            label: None,
        }
    }
}

impl AllocOptions {
    /// Automatic placement, pooled, unknown access, zeroed, no label.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `placement`.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// With the allocation mode `mode`.
    pub fn mode(mut self, mode: AllocMode) -> Self {
        self.mode = mode;
        self
    }

    /// The placement asked for, the mode's included: an explicit placement that contradicts
    /// the mode is an error.
    pub(crate) fn resolved_placement(&self) -> crate::Result<Placement> {
        match (self.mode.placement(), self.placement) {
            (None, placement) => Ok(placement),
            (Some(wanted), Placement::Auto) => Ok(wanted),
            (Some(wanted), placement) if placement == wanted => Ok(wanted),
            (Some(_), placement) => Err(crate::Error::invalid(format!(
                "allocation mode {:?} conflicts with placement {placement}",
                self.mode
            ))),
        }
    }

    /// With the access hint `access`.
    pub fn access(mut self, access: AccessPattern) -> Self {
        self.access = access;
        self
    }

    /// Zeroed or not.
    pub fn zeroed(mut self, zeroed: bool) -> Self {
        self.zeroed = zeroed;
        self
    }

    /// With `label`.
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// The label, if any.
    pub fn label_str(&self) -> Option<&str> {
        self.label.as_deref()
    }
}
