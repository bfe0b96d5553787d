//! Advice derived from what buffers actually did ([`Usage`]), never from fixed text: each rule
//! reads the record and fires only when the numbers say so.

use std::fmt;
use std::sync::Arc;

use super::registry::Usage;
use super::Placement;
use crate::backend::Capabilities;

/// Times a group must move its whole size before moving less is advised.
pub const ROUND_TRIPS: f64 = 4.0;
/// Transfers a group must make, averaging under [`SMALL_TRANSFER`] bytes, before batching is
/// advised.
pub const MANY_TRANSFERS: u64 = 256;
/// The transfer size under which per-call cost dominates.
pub const SMALL_TRANSFER: u64 = 16 << 10;

/// One piece of advice about the buffers of one label and placement.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Recommendation {
    /// The label the advice is about (`None`: unlabelled buffers).
    pub label: Option<Arc<str>>,
    /// The placement those buffers had.
    pub placement: Placement,
    /// Which rule fired.
    pub kind: Advice,
    /// The advice in words, with the figures behind it.
    pub message: String,
}

/// The rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Advice {
    /// Data crossed between host and device many times its size: keep one copy.
    MovesTooMuch,
    /// Many transfers, each small: per-call cost dominates.
    ManySmallTransfers,
    /// Buffers were made and never used.
    NeverUsed,
}

impl fmt::Display for Recommendation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The advice `usage` supports on a device with `caps`.
pub fn recommend(usage: &[Usage], caps: &Capabilities) -> Vec<Recommendation> {
    let mut advice = Vec::new();
    for u in usage {
        let name = u.label.as_deref().unwrap_or("(unlabelled)");
        let mut say = |kind, message: String| {
            advice.push(Recommendation {
                label: u.label.clone(),
                placement: u.placement,
                kind,
                message,
            })
        };
        let trips = u.round_trips();
        if trips >= ROUND_TRIPS && u.placement != Placement::Shared {
            let better = if caps.host_addressable {
                "use Placement::Shared: this device's memory is host memory, so nothing needs to move"
            } else if caps.shared_allocations {
                "use Placement::Shared: this device shares memory with the host (SVM, managed memory), so nothing needs to move"
            } else if caps.pinned_staging && u.placement != Placement::HostPinned {
                "use Placement::HostPinned so the transfers run at DMA speed, or keep the data on one side longer"
            } else {
                "keep the data on one side longer: write the changed ranges only, or do the work where the data is"
            };
            say(
                Advice::MovesTooMuch,
                format!(
                    "label {name} ({}) moved its whole size {trips:.0} times ({} bytes over {} buffers of {} bytes); {better}",
                    u.placement,
                    u.host_to_device.bytes + u.device_to_host.bytes,
                    u.buffers,
                    u.bytes
                ),
            );
        }
        let transfers = u.host_to_device.transfers + u.device_to_host.transfers;
        let moved = u.host_to_device.bytes + u.device_to_host.bytes;
        if transfers >= MANY_TRANSFERS && moved / transfers < SMALL_TRANSFER {
            say(
                Advice::ManySmallTransfers,
                format!(
                    "label {name} made {transfers} transfers averaging {} bytes; batch them \
                     (TransferScheduler::submit_batch) or sync once after many writes",
                    moved / transfers
                ),
            );
        }
        if u.unused > 0 {
            say(
                Advice::NeverUsed,
                format!(
                    "label {name}: {} of {} buffers were never accessed; allocate them when needed",
                    u.unused, u.buffers
                ),
            );
        }
    }
    advice
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::DirectionStats;

    fn usage(bytes: u64, h2d: (u64, u64), unused: u64) -> Usage {
        Usage {
            label: Some("x".into()),
            placement: Placement::Host,
            buffers: 2,
            bytes,
            unused,
            host_to_device: DirectionStats {
                transfers: h2d.0,
                bytes: h2d.1,
                ..DirectionStats::default()
            },
            device_to_host: DirectionStats::default(),
        }
    }

    fn discrete() -> Capabilities {
        Capabilities {
            unified_memory: false,
            peer_domain: None,
            async_copies: true,
            concurrent_queues: true,
            pinned_staging: true,
            host_addressable: false,
            mapped_access: false,
            mapped_reads: false,
            shared_allocations: false,
        }
    }

    fn kinds(u: Usage, caps: Capabilities) -> Vec<Advice> {
        recommend(&[u], &caps).iter().map(|r| r.kind).collect()
    }

    #[test]
    fn moving_the_whole_size_many_times_is_reported_with_the_figures() {
        let r = recommend(&[usage(1000, (40, 40_000), 0)], &discrete());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, Advice::MovesTooMuch);
        assert!(r[0].message.contains("40 times"), "{}", r[0].message);
        assert!(r[0].message.contains("HostPinned"), "{}", r[0].message);
        let shared = Capabilities {
            host_addressable: true,
            ..discrete()
        };
        let r = recommend(&[usage(1000, (40, 40_000), 0)], &shared);
        assert!(r[0].message.contains("Shared"), "{}", r[0].message);
    }

    #[test]
    fn moving_less_than_the_threshold_is_not_reported() {
        assert!(kinds(usage(1000, (3, 3_000), 0), discrete()).is_empty());
    }

    #[test]
    fn many_small_transfers_are_reported_and_few_or_large_ones_are_not() {
        let many_small = usage(1 << 30, (MANY_TRANSFERS, MANY_TRANSFERS * 64), 0);
        assert_eq!(kinds(many_small, discrete()), [Advice::ManySmallTransfers]);
        let few = usage(1 << 30, (MANY_TRANSFERS - 1, 64), 0);
        assert!(kinds(few, discrete()).is_empty());
        let large = usage(
            1 << 40,
            (MANY_TRANSFERS, MANY_TRANSFERS * SMALL_TRANSFER),
            0,
        );
        assert!(kinds(large, discrete()).is_empty());
    }

    #[test]
    fn unused_buffers_are_reported_with_their_count() {
        let r = recommend(&[usage(10, (0, 0), 1)], &discrete());
        assert_eq!(r[0].kind, Advice::NeverUsed);
        assert!(r[0].message.contains("1 of 2 buffers"), "{}", r[0].message);
    }
}
