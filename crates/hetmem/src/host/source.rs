//! [`HostSource`]: how host memory is made — its alignment, its pages, its NUMA node, and
//! whether it is locked in RAM — and what the system granted for one allocation ([`Granted`]).

use crate::error::{Error, Result};

/// The page size huge-page requests are aligned to (x86-64 and aarch64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// Which pages back host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Pages {
    /// The system's base pages (4 KiB here).
    #[default]
    Base,
    /// Transparent huge pages: a 2 MiB-aligned mapping marked `MADV_HUGEPAGE`, which the kernel
    /// backs with huge pages where it can (THP in `always` or `madvise` mode).
    Transparent,
    /// Explicit huge pages (`MAP_HUGETLB`) from the pool reserved in `vm.nr_hugepages`; where
    /// none are reserved, transparent huge pages, then base pages, with the reason recorded.
    Huge,
}

/// Where host memory's pages live on a machine with several NUMA nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Numa {
    /// The thread's policy (usually: the node the first touch runs on).
    #[default]
    Local,
    /// Only on this node (`MPOL_BIND`): an allocation fails rather than spill.
    Bind(usize),
    /// On this node where it has room, elsewhere otherwise (`MPOL_PREFERRED`).
    Prefer(usize),
}

/// How host memory is made. The default is what the host backend always did: zeroed heap
/// memory aligned to a cache line. Anything else is an anonymous mapping of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HostSource {
    /// Alignment of every allocation's start: a power of two, from 1 byte to 1 GiB (above the
    /// page size, an over-sized mapping trimmed to the aligned part).
    pub alignment: usize,
    /// Which pages back it.
    pub pages: Pages,
    /// Which NUMA node its pages come from.
    pub numa: Numa,
    /// Locked in RAM (`mlock`): never swapped, faulted in at allocation. Limited by
    /// `RLIMIT_MEMLOCK` unless the process has `CAP_IPC_LOCK`.
    pub locked: bool,
}

/// The largest alignment a source accepts.
const MAX_ALIGNMENT: usize = 1 << 30;

impl Default for HostSource {
    fn default() -> Self {
        HostSource {
            alignment: 64,
            pages: Pages::Base,
            numa: Numa::Local,
            locked: false,
        }
    }
}

impl HostSource {
    /// A typed error when the alignment is not a power of two from 1 byte to 1 GiB.
    pub fn check(&self) -> Result<()> {
        let a = self.alignment;
        if !a.is_power_of_two() || a > MAX_ALIGNMENT {
            return Err(Error::invalid(format!(
                "host alignment must be a power of two from 1 byte to 1 GiB, got {a}"
            )));
        }
        Ok(())
    }

    /// Whether the heap serves it: base pages, no NUMA policy, not locked, aligned to at most
    /// a page (a mapping costs a system call; the heap reuses memory).
    pub(crate) fn is_heap(&self, page: usize) -> bool {
        self.pages == Pages::Base
            && self.numa == Numa::Local
            && !self.locked
            && self.alignment <= page
    }
}

/// What the system granted for one allocation from a [`HostSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Granted {
    /// The pages asked for or, after a fallback, the pages used instead.
    pub pages: Pages,
    /// Why the pages asked for were not used, where they were not.
    pub fallback: Option<String>,
    /// The node the pages were bound or preferred to, where a policy was set.
    pub node: Option<usize>,
    /// Whether the memory is locked in RAM.
    pub locked: bool,
}

/// What a source granted over many allocations: blocks per kind of page, bytes locked, and the
/// last fallback's reason — what `hetmem info` and a backend's statistics report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SourceStats {
    /// Allocations on base pages.
    pub base_pages: u64,
    /// Allocations on transparent huge pages.
    pub transparent_huge_pages: u64,
    /// Allocations on explicit huge pages.
    pub huge_pages: u64,
    /// Bytes locked in RAM now.
    pub locked_bytes: u64,
    /// Why the last allocation that fell back did.
    pub last_fallback: Option<String>,
}

impl SourceStats {
    /// Counts one allocation that got `granted` (the caller keeps `locked_bytes`).
    pub(crate) fn record(&mut self, granted: &Granted) {
        match granted.pages {
            Pages::Base => self.base_pages += 1,
            Pages::Transparent => self.transparent_huge_pages += 1,
            Pages::Huge => self.huge_pages += 1,
        }
        if let Some(why) = &granted.fallback {
            self.last_fallback = Some(why.clone());
        }
    }
}
