//! The placement decision table: one pure function from what was asked and what the device can
//! do to how a buffer is built. Documented row by row in `docs/placement.md`; each row has a
//! test below.

use super::{AccessPattern, Placement};
use crate::backend::Capabilities;
use crate::buffer::{Residency, Side};
use crate::error::{Error, Result};
use crate::transfer::Strategy;

/// From this size up, sequential data of unknown direction is kept on the device: large arrays
/// are what kernels stream through, and re-uploading them is what costs.
pub const LARGE_SEQUENTIAL: usize = 1 << 20;

/// How one buffer is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The placement the request resolved to (never `Auto`).
    pub placement: Placement,
    /// One shared allocation, or two copies.
    pub residency: Residency,
    /// The side whose memory is taken when the buffer is made.
    pub home: Side,
    /// The transfer strategy for the buffer's large syncs, when not the engine's own.
    pub strategy: Option<Strategy>,
}

/// The decision for `placement` with the hint `access`, for a buffer of `bytes` bytes on a
/// device with `caps`.
///
/// | request | device | decision |
/// |---|---|---|
/// | any but `Shared` | host-addressable memory | `Shared`: one allocation, no transfers |
/// | `Shared` | host-addressable memory | `Shared` |
/// | `Shared` | separate memory with shared allocations (SVM, managed) | `Shared`: one shared allocation |
/// | `Shared` | separate memory, no shared allocations | error: nothing to share |
/// | `Host` | separate memory | two copies, home on the host |
/// | `HostPinned` | separate, pinned staging | two copies, home on the host in the device's page-locked memory (the engine's pinned pool): syncs move by DMA straight from it, one call each on a discrete GPU |
/// | `HostPinned` | separate, no pinned staging | as `Host` |
/// | `Device` | separate memory | two copies, home on the device |
/// | `Auto` + `Streaming` | separate, pinned staging, not unified | `HostPinned` |
/// | `Auto` + `Streaming` | otherwise | `Host` |
/// | `Auto` + `ReadMostly` / `WriteOnce` | separate memory | `Device` |
/// | `Auto` + `Sequential`, ≥ [`LARGE_SEQUENTIAL`] | separate memory | `Device` |
/// | `Auto` + `Sequential` (small) / `Random` / `Unknown` | separate memory | `Host` |
pub fn decide(
    placement: Placement,
    access: AccessPattern,
    caps: &Capabilities,
    bytes: usize,
) -> Result<Decision> {
    if caps.host_addressable {
        return Ok(shared());
    }
    let staged = caps.pinned_staging;
    let resolved =
        match placement {
            Placement::Shared if caps.shared_allocations => return Ok(shared()),
            Placement::Shared => return Err(Error::invalid(
                "Placement::Shared needs a device whose memory is host memory or that allocates \
                 memory shared with the host (SVM, managed memory); this device does neither \
                 (use Host, HostPinned or Device)",
            )),
            Placement::Auto => match access {
                AccessPattern::Streaming if staged && !caps.unified_memory => Placement::HostPinned,
                AccessPattern::Streaming => Placement::Host,
                AccessPattern::ReadMostly | AccessPattern::WriteOnce => Placement::Device,
                AccessPattern::Sequential if bytes >= LARGE_SEQUENTIAL => Placement::Device,
                AccessPattern::Sequential | AccessPattern::Random | AccessPattern::Unknown => {
                    Placement::Host
                }
            },
            Placement::HostPinned if !staged => Placement::Host,
            other => other,
        };
    Ok(match resolved {
        Placement::Device => mirrored(Placement::Device, Side::Device, None),
        Placement::HostPinned => {
            // Staging a pinned host copy through more pinned memory would only add a copy.
            let direct = (!caps.unified_memory).then_some(Strategy::Direct);
            mirrored(Placement::HostPinned, Side::Host, direct)
        }
        _ => mirrored(Placement::Host, Side::Host, None),
    })
}

fn shared() -> Decision {
    Decision {
        placement: Placement::Shared,
        residency: Residency::Shared,
        home: Side::Device,
        strategy: None,
    }
}

fn mirrored(placement: Placement, home: Side, strategy: Option<Strategy>) -> Decision {
    Decision {
        placement,
        residency: Residency::Mirrored,
        home,
        strategy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PeerDomain;

    /// Host memory as device memory (the host backend).
    fn addressable() -> Capabilities {
        Capabilities {
            unified_memory: true,
            peer_domain: None,
            async_copies: false,
            concurrent_queues: false,
            pinned_staging: false,
            host_addressable: true,
            mapped_access: true,
            mapped_reads: false,
            shared_allocations: false,
        }
    }

    /// A discrete GPU.
    fn discrete() -> Capabilities {
        Capabilities {
            unified_memory: false,
            peer_domain: Some(PeerDomain::unique()),
            async_copies: true,
            concurrent_queues: true,
            pinned_staging: true,
            host_addressable: false,
            mapped_access: false,
            mapped_reads: false,
            shared_allocations: false,
        }
    }

    /// A CPU OpenCL device such as PoCL: unified memory behind opaque handles.
    fn unified_opaque() -> Capabilities {
        Capabilities {
            unified_memory: true,
            host_addressable: false,
            ..discrete()
        }
    }

    fn no_pinned() -> Capabilities {
        Capabilities {
            pinned_staging: false,
            ..discrete()
        }
    }

    fn placed(p: Placement, a: AccessPattern, caps: Capabilities, bytes: usize) -> Placement {
        decide(p, a, &caps, bytes).unwrap().placement
    }

    #[test]
    fn row_host_addressable_devices_share_one_allocation_whatever_is_asked() {
        for p in Placement::ALL {
            for a in AccessPattern::ALL {
                let d = decide(p, a, &addressable(), 64).unwrap();
                assert_eq!(d, shared(), "{p:?} {a:?}");
            }
        }
    }

    #[test]
    fn row_shared_on_separate_memory_is_an_error_naming_the_alternatives() {
        let err = decide(Placement::Shared, AccessPattern::Unknown, &discrete(), 64).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.to_string().contains("HostPinned"), "{err}");
    }

    #[test]
    fn row_shared_on_a_device_with_shared_allocations_is_one_shared_allocation() {
        let svm = Capabilities {
            shared_allocations: true,
            ..unified_opaque()
        };
        for a in AccessPattern::ALL {
            assert_eq!(decide(Placement::Shared, a, &svm, 64).unwrap(), shared());
            // Only when asked: other placements keep two copies.
            let host = decide(Placement::Host, a, &svm, 64).unwrap();
            assert_eq!(host.residency, Residency::Mirrored, "{a:?}");
        }
    }

    #[test]
    fn row_host_is_two_copies_with_home_on_the_host() {
        let d = decide(Placement::Host, AccessPattern::Unknown, &discrete(), 64).unwrap();
        assert_eq!(d, mirrored(Placement::Host, Side::Host, None));
    }

    #[test]
    fn row_host_pinned_moves_straight_from_pinned_memory() {
        let d = decide(
            Placement::HostPinned,
            AccessPattern::Unknown,
            &discrete(),
            64,
        )
        .unwrap();
        assert_eq!(d.home, Side::Host);
        assert_eq!(d.strategy, Some(Strategy::Direct));
    }

    #[test]
    fn row_host_pinned_without_pinned_staging_is_host() {
        let p = placed(
            Placement::HostPinned,
            AccessPattern::Unknown,
            no_pinned(),
            64,
        );
        assert_eq!(p, Placement::Host);
    }

    #[test]
    fn row_device_is_two_copies_with_home_on_the_device() {
        let d = decide(Placement::Device, AccessPattern::Random, &discrete(), 64).unwrap();
        assert_eq!(d, mirrored(Placement::Device, Side::Device, None));
    }

    #[test]
    fn row_auto_streaming_is_pinned_in_front_of_a_discrete_device() {
        let p = placed(Placement::Auto, AccessPattern::Streaming, discrete(), 64);
        assert_eq!(p, Placement::HostPinned);
    }

    #[test]
    fn row_auto_streaming_is_host_on_unified_memory_or_without_pinned_staging() {
        let s = AccessPattern::Streaming;
        assert_eq!(
            placed(Placement::Auto, s, unified_opaque(), 64),
            Placement::Host
        );
        assert_eq!(placed(Placement::Auto, s, no_pinned(), 64), Placement::Host);
    }

    #[test]
    fn row_auto_read_mostly_and_write_once_live_on_the_device() {
        for a in [AccessPattern::ReadMostly, AccessPattern::WriteOnce] {
            assert_eq!(
                placed(Placement::Auto, a, discrete(), 64),
                Placement::Device
            );
        }
    }

    #[test]
    fn row_auto_large_sequential_lives_on_the_device_small_on_the_host() {
        let s = AccessPattern::Sequential;
        let large = placed(Placement::Auto, s, discrete(), LARGE_SEQUENTIAL);
        let small = placed(Placement::Auto, s, discrete(), LARGE_SEQUENTIAL - 1);
        assert_eq!((large, small), (Placement::Device, Placement::Host));
    }

    #[test]
    fn row_auto_random_and_unknown_live_on_the_host() {
        for a in [AccessPattern::Random, AccessPattern::Unknown] {
            let big = 1 << 30;
            assert_eq!(placed(Placement::Auto, a, discrete(), big), Placement::Host);
        }
    }

    #[test]
    fn decisions_are_never_auto() {
        for caps in [addressable(), discrete(), unified_opaque(), no_pinned()] {
            for p in Placement::ALL {
                for a in AccessPattern::ALL {
                    if let Ok(d) = decide(p, a, &caps, 4096) {
                        assert_ne!(d.placement, Placement::Auto);
                    }
                }
            }
        }
    }
}
