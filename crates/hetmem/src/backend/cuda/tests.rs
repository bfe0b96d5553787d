//! The CUDA backend's pure helpers, and its absence reported as an error.

use super::*;
use crate::backend::BackendKind;

#[test]
fn fill_patterns_shrink_to_their_period() {
    assert_eq!(shortest_period(&[0; 16]), &[0]);
    assert_eq!(shortest_period(&[1, 2, 1, 2, 1, 2, 1, 2]), &[1, 2]);
    assert_eq!(shortest_period(&[1, 2, 3, 4, 1, 2, 3, 4]), &[1, 2, 3, 4]);
    assert_eq!(
        shortest_period(&[1, 2, 3, 4, 5, 6, 7, 8]),
        &[1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(shortest_period(&[9]), &[9]);
}

/// Without a driver the backend reports why, instead of cudarc's panic.
#[test]
fn absence_is_an_error_not_a_panic() {
    match CudaBackend::all() {
        Ok(all) => assert!(!all.is_empty()),
        Err(Error::BackendUnavailable { backend, reason }) => {
            assert_eq!(backend, BackendKind::Cuda);
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("expected BackendUnavailable, got {other}"),
    }
}
