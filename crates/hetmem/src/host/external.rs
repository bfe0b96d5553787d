//! [`ExternalHost`]: host memory the caller owns, handed to hetmem — a `Vec` (safe, owned) or
//! raw memory with a release callback — to be a buffer's host copy without a copy.

use std::any::Any;
use std::ptr::NonNull;

use super::HostMemory;
use crate::element::Element;
use crate::error::{Error, Result};

/// Memory from outside hetmem, released when hetmem lets it go: the owner is dropped, or the
/// release callback runs, exactly once.
pub struct ExternalHost {
    ptr: NonNull<u8>,
    len: usize,
    /// What keeps the memory alive (a `Vec`), dropped after the callback.
    _owner: Option<Box<dyn Any + Send + Sync>>,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

// SAFETY: the memory is owned (or lent for good) by this value; see the constructors.
unsafe impl Send for ExternalHost {}
// SAFETY: see `Send`.
unsafe impl Sync for ExternalHost {}

impl ExternalHost {
    /// The elements of `vec`, in place. An empty vector is [`Error::ZeroLength`].
    pub fn from_vec<T: Element>(mut vec: Vec<T>) -> Result<Self> {
        if vec.is_empty() {
            return Err(Error::ZeroLength {
                what: "external host memory",
            });
        }
        let len = std::mem::size_of_val(vec.as_slice());
        let ptr = NonNull::new(vec.as_mut_ptr().cast::<u8>()).ok_or(Error::ZeroLength {
            what: "external host memory",
        })?;
        // Moving the vector into the box leaves its heap buffer where it is.
        Ok(ExternalHost {
            ptr,
            len,
            _owner: Some(Box::new(vec)),
            release: None,
        })
    }

    /// `len` bytes at `ptr`, with `release` called once when hetmem lets them go.
    ///
    /// # Safety
    /// `ptr` is non-null and `len` bytes from it are initialised, readable and writable until
    /// `release` is called, and nothing else in this process accesses them meanwhile.
    pub unsafe fn from_raw_parts(
        ptr: *mut u8,
        len: usize,
        release: impl FnOnce() + Send + Sync + 'static,
    ) -> Result<Self> {
        let ptr = NonNull::new(ptr).ok_or(Error::invalid("external host memory at null"))?;
        if len == 0 {
            return Err(Error::ZeroLength {
                what: "external host memory",
            });
        }
        Ok(ExternalHost {
            ptr,
            len,
            _owner: None,
            release: Some(Box::new(release)),
        })
    }
}

// SAFETY: the constructors guarantee `len` live bytes at `ptr` until drop.
unsafe impl HostMemory for ExternalHost {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for ExternalHost {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for ExternalHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalHost")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Runs under Miri: the vector stays in place, raw memory is given back exactly once.
    #[test]
    fn vectors_stay_in_place_and_raw_memory_goes_back_once() {
        let v: Vec<u64> = (0..100).collect();
        let address = v.as_ptr() as usize;
        let held = ExternalHost::from_vec(v).unwrap();
        assert_eq!((held.as_ptr() as usize, held.len()), (address, 800));
        // SAFETY: 800 bytes of the vector, owned by `held`.
        let seen = unsafe { std::slice::from_raw_parts(held.as_ptr().cast::<u64>(), 100) };
        assert_eq!(seen[99], 99);
        drop(held);

        let calls = Arc::new(AtomicUsize::new(0));
        let memory = Box::leak(vec![1u8; 64].into_boxed_slice());
        let (address, counter) = (memory.as_mut_ptr().expose_provenance(), calls.clone());
        let release = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let ptr = std::ptr::with_exposed_provenance_mut::<u8>(address);
            let slice = std::ptr::slice_from_raw_parts_mut(ptr, 64);
            // SAFETY: the slice leaked above, given back once.
            drop(unsafe { Box::from_raw(slice) });
        };
        let ptr = std::ptr::with_exposed_provenance_mut::<u8>(address);
        // SAFETY: 64 leaked bytes, released by `release`.
        let raw = unsafe { ExternalHost::from_raw_parts(ptr, 64, release) };
        drop(raw.unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
