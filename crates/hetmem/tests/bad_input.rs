//! Bad input is a typed error, never a panic or an abort, and leaves what exists intact.

use std::time::Duration;

use hetmem::pool::{ArrayPool, SizeClasses};
use hetmem::transfer::{RetryPolicy, TransferConfig, TransferEngine};
use hetmem::{Error, HostBackend};

/// Sizes no allocator can supply: `vec!` would panic ("capacity overflow") or abort the
/// process ("memory allocation failed"); the pool says `OutOfMemory` and keeps working.
#[test]
fn array_pool_refuses_impossible_sizes() {
    let pool = ArrayPool::<u8>::new();
    let mut kept = pool.rent(1000).unwrap();
    kept[7] = 42;
    for len in [usize::MAX, usize::MAX / 2, 1 << 42] {
        match pool.rent(len) {
            Err(Error::OutOfMemory { .. } | Error::SizeOverflow { .. }) => {}
            other => panic!(
                "rent({len}): expected a typed error, got {:?}",
                other.map(|r| r.len())
            ),
        }
    }
    assert!(matches!(
        ArrayPool::<u64>::new().rent(usize::MAX / 4),
        Err(Error::SizeOverflow { .. })
    ));
    assert_eq!(kept[7], 42, "existing rentals are untouched");
    assert_eq!(pool.stats().rented, 1, "failed rents are not counted");
    drop(kept);
    assert_eq!(pool.rent(1000).unwrap().len(), 1000);
}

#[test]
fn size_classes_past_the_last_have_no_size() {
    let classes = SizeClasses::new(4, 256, 1 << 20).unwrap();
    let count = classes.count();
    assert!(classes.size(count - 1).is_some());
    for index in [count, count + 1, 1 << 20, usize::MAX] {
        assert_eq!(classes.size(index), None, "index {index}");
    }
    assert_eq!(classes.size(count - 1), Some(1 << 20));
    assert_eq!(classes.class(1 << 20), Some((count - 1, 1 << 20)));
    assert_eq!(classes.class((1 << 20) + 1), None);
}

#[test]
fn extreme_retry_policies_are_refused_at_construction() {
    let backend = std::sync::Arc::new(HostBackend::new());
    for retry in [
        RetryPolicy {
            max_delay: Duration::MAX,
            ..RetryPolicy::default()
        },
        RetryPolicy {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        RetryPolicy {
            multiplier: f64::NAN,
            ..RetryPolicy::default()
        },
    ] {
        let config = TransferConfig {
            retry,
            ..TransferConfig::default()
        };
        assert!(
            matches!(
                TransferEngine::with_config(backend.clone(), config),
                Err(Error::InvalidArgument(_))
            ),
            "{retry:?}"
        );
    }
}
