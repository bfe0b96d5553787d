//! What the machine offers host memory, read from `/sys` and `/proc`: huge pages, NUMA nodes,
//! the locked-memory limit — and where an allocation's pages actually are.

use std::fs;

use rustix::process::{getrlimit, Resource};

/// The host-memory facilities of this machine, as `hetmem info` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
pub struct HostSystem {
    /// The base page size in bytes.
    pub page_size: usize,
    /// Transparent huge pages: `always`, `madvise` or `never` (`None` where the kernel has none).
    pub transparent_huge_pages: Option<String>,
    /// Explicit huge pages reserved (`vm.nr_hugepages`), of 2 MiB.
    pub reserved_huge_pages: u64,
    /// The NUMA nodes online (`[0]` on a single-node machine).
    pub numa_nodes: Vec<usize>,
    /// Bytes the process may lock in RAM (`None`: unlimited).
    pub memlock_limit: Option<u64>,
}

/// Reads the machine's host-memory facilities.
pub fn host_system() -> HostSystem {
    HostSystem {
        page_size: rustix::param::page_size(),
        transparent_huge_pages: thp_mode(),
        reserved_huge_pages: reserved_huge_pages(),
        numa_nodes: numa_nodes(),
        memlock_limit: memlock_limit(),
    }
}

/// The bracketed word of `/sys/kernel/mm/transparent_hugepage/enabled` (`always [madvise] never`).
pub(crate) fn thp_mode() -> Option<String> {
    let text = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

pub(crate) fn reserved_huge_pages() -> u64 {
    fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The online NUMA nodes, from `/sys/devices/system/node/online` (`0`, `0-3`, `0,2-3`); `[0]`
/// where the kernel has no NUMA support.
pub(crate) fn numa_nodes() -> Vec<usize> {
    fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|list| parse_list(list.trim()))
        .unwrap_or_else(|| vec![0])
}

/// A kernel CPU/node list (`0-2,5`), or `None` if malformed.
fn parse_list(list: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().ok()?..=b.parse().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

pub(crate) fn memlock_limit() -> Option<u64> {
    getrlimit(Resource::Memlock).current
}

/// Bytes of the mapping that holds `address` backed by transparent huge pages
/// (`AnonHugePages` in `/proc/self/smaps`); `None` where the address is in no mapping.
pub fn anon_huge_bytes(address: *const u8) -> Option<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps").ok()?;
    let address = address as usize;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (start..end).contains(&address);
                    continue;
                }
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|k| k * 1024);
            }
        }
    }
    None
}

/// The NUMA node of each page of `len` bytes at `address` (`move_pages` with no target: a
/// query), in page order; a page not yet touched has no node and reads as a negative errno.
pub fn page_nodes(address: *const u8, len: usize) -> std::io::Result<Vec<i32>> {
    let page = rustix::param::page_size();
    let first = address as usize & !(page - 1);
    let pages: Vec<*const libc::c_void> = (first..address as usize + len)
        .step_by(page)
        .map(|p| p as *const libc::c_void)
        .collect();
    let mut status = vec![0i32; pages.len()];
    // SAFETY: `pages` and `status` have `pages.len()` entries; a null `nodes` makes this a
    // query that moves nothing; pid 0 is this process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages.len(),
            pages.as_ptr(),
            std::ptr::null::<i32>(),
            status.as_mut_ptr(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(status)
}

/// Nanoseconds on the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: the last scheduler
/// tick, 1–4 ms), read in a few nanoseconds where the precise clock costs ~20; elsewhere than
/// Linux, and under Miri, the precise clock. Through the C library, whose clock works under
/// valgrind too (rustix's own vDSO lookup does not).
#[inline]
pub(crate) fn coarse_nanos() -> u64 {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec for the call's duration; the clock id is
        // one Linux has had since 2.6.32, and a failure leaves `t` zeroed.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

/// Times hot-path work (every transfer): the time-stamp counter through `quanta` where it is
/// invariant — a start and a stop cost 18 ns on the 2-vCPU VM, against 37 ns for
/// `std::time::Instant` — and the OS clock elsewhere (`std`'s under Miri, which cannot run
/// `cpuid`); or, for work too short to pay even that, the coarse clock ([`coarse_nanos`]).
#[derive(Clone, Copy)]
pub(crate) enum Stopwatch {
    #[cfg(not(miri))]
    Exact(quanta::Instant),
    #[cfg(miri)]
    Exact(std::time::Instant),
    /// Started at this [`coarse_nanos`] reading.
    Coarse(u64),
}

impl Stopwatch {
    /// Transfers from this size up are timed exactly; shorter ones cost less than an exact
    /// start and stop ([`Stopwatch::for_transfer`]).
    const EXACT_FROM: usize = 64 << 10;

    /// Started now, on the exact clock.
    #[inline]
    pub(crate) fn start() -> Self {
        #[cfg(not(miri))]
        return Stopwatch::Exact(quanta::Instant::now());
        #[cfg(miri)]
        return Stopwatch::Exact(std::time::Instant::now());
    }

    /// Started now for a transfer of `bytes`: on the exact clock from [`Stopwatch::EXACT_FROM`]
    /// bytes up, where its cost is under a percent of the copy; below, on the coarse clock,
    /// whose readings cost a few nanoseconds. A short transfer then reads as zero
    /// or as whole clock ticks (1–4 ms), with a chance of straddling a tick equal to its length
    /// over the tick's — so a sum over many is right, and any one is not.
    #[inline]
    pub(crate) fn for_transfer(bytes: usize) -> Self {
        if bytes >= Self::EXACT_FROM {
            Self::start()
        } else {
            Stopwatch::Coarse(coarse_nanos())
        }
    }

    /// Time since the start.
    #[inline]
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        match self {
            Stopwatch::Exact(start) => start.elapsed(),
            Stopwatch::Coarse(start) => {
                std::time::Duration::from_nanos(coarse_nanos().saturating_sub(*start))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_list("0"), Some(vec![0]));
        assert_eq!(parse_list("0-3"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_list("0,2-3,7"), Some(vec![0, 2, 3, 7]));
        assert_eq!(parse_list("x"), None);
        assert_eq!(parse_list("1-y"), None);
    }
}
