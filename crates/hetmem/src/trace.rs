//! `tracing` spans where the `tracing` feature is on, and nothing at all where it is off.

/// Enters a debug span named `$name` with `$fields` until the end of the enclosing block.
macro_rules! span {
    ($name:literal $(, $($fields:tt)*)?) => {
        #[cfg(feature = "tracing")]
        let _span = tracing::debug_span!($name $(, $($fields)*)?).entered();
    };
}

pub(crate) use span;
