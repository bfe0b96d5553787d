//! Mapped access: a range of a `cl_mem` mapped into host memory (`clEnqueueMapBuffer`, zero-copy
//! on devices that share memory with the host) until unmapped. PoCL 3.1 crashes (SIGSEGV in the
//! copy out of the mapping) when one buffer is mapped twice at once — seen here within 20,000
//! concurrent 64 KiB read maps — so a buffer is mapped once at a time: a second map waits for
//! the first to end. Different buffers map concurrently.

use std::collections::HashSet;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Condvar, Mutex};

use opencl3::command_queue::{self as clq, CommandQueue};
use opencl3::event::Event as ClEventHandle;
use opencl3::memory::{CL_MAP_READ, CL_MAP_WRITE, CL_MAP_WRITE_INVALIDATE_REGION};
use opencl3::types::{cl_mem, CL_BLOCKING};

use super::{cl_error, discard};
use crate::backend::MapMode;
use crate::error::Result;
use crate::sync::Unpoison;

/// The buffers mapped now, by `cl_mem` address.
#[derive(Default)]
pub(super) struct Mapped {
    buffers: Mutex<HashSet<usize>>,
    unmapped: Condvar,
}

impl Mapped {
    /// Maps `offset..offset + len` of `mem` on `queue` (blocking: after the work enqueued
    /// there), once no other mapping of `mem` is live.
    ///
    /// # Safety
    /// `mem` is a live buffer of the queue's context and the range lies inside it.
    pub(super) unsafe fn map(
        &self,
        queue: &CommandQueue,
        mem: cl_mem,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8> {
        let flags = match mode {
            MapMode::Read => CL_MAP_READ,
            MapMode::Write => CL_MAP_READ | CL_MAP_WRITE,
            MapMode::WriteDiscard => CL_MAP_WRITE_INVALIDATE_REGION,
        };
        let mut buffers = self.buffers.lock().unpoisoned();
        while buffers.contains(&(mem as usize)) {
            buffers = self.unmapped.wait(buffers).unpoisoned();
        }
        buffers.insert(mem as usize);
        drop(buffers);
        let mut mapped: *mut c_void = ptr::null_mut();
        // SAFETY: blocking map of a range inside the buffer (the caller's guarantee); `mapped`
        // receives the host pointer, valid until the unmap.
        let outcome = unsafe {
            clq::enqueue_map_buffer(
                queue.get(),
                mem,
                CL_BLOCKING,
                flags,
                offset,
                len,
                &mut mapped,
                0,
                ptr::null(),
            )
        };
        match outcome {
            Ok(event) => {
                discard(event);
                Ok(mapped.cast())
            }
            Err(code) => {
                self.ended(mem);
                Err(cl_error("clEnqueueMapBuffer", code))
            }
        }
    }

    /// Unmaps the mapping at `ptr` of `mem` on `queue` and waits, so that the device sees what
    /// was written.
    ///
    /// # Safety
    /// `ptr` is a live mapping of `mem` made by [`Mapped::map`].
    pub(super) unsafe fn unmap(
        &self,
        queue: &CommandQueue,
        mem: cl_mem,
        ptr: *mut u8,
    ) -> Result<()> {
        // SAFETY: unmaps a live mapping (the caller's guarantee), once.
        let enqueued =
            unsafe { clq::enqueue_unmap_mem_object(queue.get(), mem, ptr.cast(), 0, ptr::null()) };
        let outcome = enqueued
            .map_err(|code| cl_error("clEnqueueUnmapMemObject", code))
            .and_then(|raw| {
                ClEventHandle::new(raw)
                    .wait()
                    .map_err(|e| cl_error("clWaitForEvents", e.0))
            });
        self.ended(mem);
        outcome
    }

    fn ended(&self, mem: cl_mem) {
        self.buffers.lock().unpoisoned().remove(&(mem as usize));
        self.unmapped.notify_all();
    }
}
