//! Element types and overflow-checked size arithmetic.
//!
//! Device memory is bytes; typed views sit above the backend. [`Element`] is the bound that makes
//! a type safe to copy to a device and back: `bytemuck::Pod` means no padding, no pointers, and
//! every bit pattern valid.

use crate::backend::HOST_ALIGNMENT;
use crate::error::{Error, Result};

/// A type that can live in device memory: plain old data, shareable across threads.
pub trait Element: bytemuck::Pod + Send + Sync {}

impl<T: bytemuck::Pod + Send + Sync> Element for T {}

/// `count * size_of::<T>()`, or [`Error::SizeOverflow`].
///
/// The size checks here match rather than `ok_or`: an error built eagerly is dropped on every
/// success, and `Error`'s drop is an out-of-line call (~30 instructions on the manager's
/// allocation path).
pub fn byte_len<T: Element>(count: usize) -> Result<usize> {
    match count.checked_mul(std::mem::size_of::<T>()) {
        Some(bytes) => Ok(bytes),
        None => Err(Error::SizeOverflow {
            what: "element count * element size",
        }),
    }
}

/// Checks that `offset..offset + len` lies inside an object of `size` bytes.
///
/// `len == 0` is rejected with [`Error::ZeroLength`]: a zero-byte device operation is always a
/// caller bug and several drivers reject it with an unhelpful code.
pub fn check_range(what: &'static str, offset: usize, len: usize, size: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::ZeroLength { what });
    }
    let Some(end) = offset.checked_add(len) else {
        return Err(Error::SizeOverflow { what });
    };
    if end > size {
        return Err(Error::OutOfRange {
            what,
            offset: offset as u64,
            len: len as u64,
            size: size as u64,
        });
    }
    Ok(())
}

/// Rounds `value` up to a multiple of `align` (a power of two), or [`Error::SizeOverflow`].
pub fn align_up(value: usize, align: usize) -> Result<usize> {
    debug_assert!(align.is_power_of_two());
    match value.checked_add(align - 1) {
        Some(v) => Ok(v & !(align - 1)),
        None => Err(Error::SizeOverflow {
            what: "alignment rounding",
        }),
    }
}

/// The length in elements of `U` of `bytes` bytes at byte `offset` of buffer (or block)
/// memory, or why they are no slice of `U`s.
pub(crate) fn cast_len<U: Element>(offset: usize, bytes: usize) -> Result<usize> {
    let (size, align) = (std::mem::size_of::<U>(), std::mem::align_of::<U>());
    let fail = |reason| Error::IncompatibleCast {
        to: std::any::type_name::<U>(),
        size,
        align,
        bytes,
        offset,
        reason,
    };
    if size == 0 {
        return Err(fail("zero-sized elements"));
    }
    if bytes % size != 0 {
        return Err(fail("the length is not a multiple of the element size"));
    }
    if align > HOST_ALIGNMENT {
        return Err(fail(
            "the alignment exceeds the 64-byte alignment of buffer memory",
        ));
    }
    if offset % align != 0 {
        return Err(fail("the offset is not a multiple of the alignment"));
    }
    Ok(bytes / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_len_multiplies_and_detects_overflow() {
        assert_eq!(byte_len::<u32>(10).unwrap(), 40);
        assert_eq!(byte_len::<u8>(usize::MAX).unwrap(), usize::MAX);
        assert!(matches!(
            byte_len::<u64>(usize::MAX / 4),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn check_range_accepts_exact_fit_and_rejects_the_rest() {
        assert!(check_range("t", 0, 10, 10).is_ok());
        assert!(check_range("t", 9, 1, 10).is_ok());
        assert!(matches!(
            check_range("t", 9, 2, 10),
            Err(Error::OutOfRange {
                offset: 9,
                len: 2,
                size: 10,
                ..
            })
        ));
        assert!(matches!(
            check_range("t", 0, 0, 10),
            Err(Error::ZeroLength { .. })
        ));
        assert!(matches!(
            check_range("t", usize::MAX, 2, 10),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0, 64).unwrap(), 0);
        assert_eq!(align_up(1, 64).unwrap(), 64);
        assert_eq!(align_up(64, 64).unwrap(), 64);
        assert_eq!(align_up(65, 64).unwrap(), 128);
        assert!(align_up(usize::MAX - 3, 64).is_err());
    }
}
