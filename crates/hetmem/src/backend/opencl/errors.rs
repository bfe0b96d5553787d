//! Driver statuses as hetmem errors.

use opencl3::error_codes::{
    error_text, CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY, CL_OUT_OF_RESOURCES,
};
use opencl3::types::cl_int;

use crate::backend::BackendKind;
use crate::error::{BackendError, Error};

pub(super) fn unavailable(reason: &str) -> Error {
    Error::BackendUnavailable {
        backend: BackendKind::OpenCl,
        reason: reason.to_owned(),
    }
}

/// A driver status as a hetmem error.
pub(crate) fn cl_error(operation: &'static str, code: cl_int) -> Error {
    Error::Backend(BackendError {
        backend: BackendKind::OpenCl,
        operation,
        code: code.into(),
        name: error_text(code),
        retryable: matches!(
            code,
            CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY | CL_MEM_OBJECT_ALLOCATION_FAILURE
        ),
    })
}

pub(super) fn allocation_error(operation: &'static str, code: cl_int, bytes: usize) -> Error {
    match code {
        CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY | CL_MEM_OBJECT_ALLOCATION_FAILURE => {
            Error::OutOfMemory {
                backend: BackendKind::OpenCl,
                requested: bytes as u64,
                diagnosis: None,
            }
        }
        _ => cl_error(operation, code),
    }
}
