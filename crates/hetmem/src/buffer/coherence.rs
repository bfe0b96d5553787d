//! The coherence state machine of a unified buffer, as a pure function: `(state, event) →
//! (new state, effects)`. No backend, no memory: [`UnifiedBuffer`](super) performs the effects,
//! and this module can be tested exhaustively on its own.
//!
//! Two rules hold for every transition (checked for every pair by the tests, against a model that
//! tracks actual values):
//! - no transition declares a side valid whose bytes are not the newest;
//! - none discards the only valid copy: invalidating it is [`CoherenceError::OnlyValidCopy`].
//!
//! Write-only access (`HostDiscard`, `DeviceDiscard`) is the one way to make a stale or missing
//! side newest without a transfer: the caller promises to overwrite every element it covers.
//!
//! The whole table, generated from [`transition`] by [`table_markdown`]:
//!
#![doc = include_str!("../../../../docs/coherence-table.md")]

use std::fmt;

/// Where a buffer's bytes live and which copy is newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum CoherenceState {
    /// Nothing allocated, nothing written: reads see zeros.
    Uninitialized,
    /// Only the host copy exists.
    HostOnly,
    /// Only the device copy exists.
    DeviceOnly,
    /// Both exist and are equal.
    Synchronized,
    /// Both exist; the host copy is newer.
    HostDirty,
    /// Both exist; the device copy is newer.
    DeviceDirty,
}

/// One side of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Side {
    /// Host memory.
    Host,
    /// Device memory.
    Device,
}

/// Something about to happen to a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoherenceEvent {
    /// Reading one side: it must be valid first.
    Read(Side),
    /// Reading and writing one side (read-modify-write): it must be valid first, the other side
    /// becomes stale.
    Write(Side),
    /// Overwriting one side entirely without reading it: no transfer, the other side goes stale.
    Discard(Side),
    /// Making both sides valid.
    Sync,
    /// Making one side valid ahead of use (as a read would).
    Prefetch(Side),
    /// Declaring one side's copy stale (for example after a kernel the buffer did not see wrote
    /// the other side); refused for the only valid copy.
    Invalidate(Side),
    /// Dropping the device copy, keeping the data on the host.
    Compact,
    /// Changing the length: each valid side is reallocated keeping its prefix; stale copies are
    /// released rather than resized.
    Resize,
}

/// What the buffer must do, in order, to carry out a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Allocate a side (host memory is zeroed; device memory gets the data by a transfer or is
    /// written whole, or zero-filled when the buffer is `Uninitialized`).
    Allocate(Side),
    /// Fill a side with zeros (first use of an `Uninitialized` buffer).
    Zero(Side),
    /// Copy host → device (the stale ranges only).
    Upload,
    /// Copy device → host (the stale ranges only).
    Download,
    /// Give a side's memory back.
    Release(Side),
    /// Reallocate a valid side at the new length, copying the prefix within that side.
    Reallocate(Side),
}

/// A transition: the state after the event and the effects that get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state once the effects are done.
    pub state: CoherenceState,
    /// What to do, in order.
    pub effects: &'static [Effect],
}

/// A transition that would break a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CoherenceError {
    /// Invalidating this side would discard the only valid copy.
    #[error("invalidating the {side:?} copy in state {state:?} would discard the only valid copy")]
    OnlyValidCopy {
        /// The side asked to be invalidated.
        side: Side,
        /// The state at the time.
        state: CoherenceState,
    },
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Host => Side::Device,
            Side::Device => Side::Host,
        }
    }
}

impl CoherenceState {
    /// Every state, for exhaustive tests and the table.
    pub const ALL: [CoherenceState; 6] = [
        CoherenceState::Uninitialized,
        CoherenceState::HostOnly,
        CoherenceState::DeviceOnly,
        CoherenceState::Synchronized,
        CoherenceState::HostDirty,
        CoherenceState::DeviceDirty,
    ];

    /// Whether `side` is allocated.
    pub fn is_allocated(self, side: Side) -> bool {
        use CoherenceState::*;
        !matches!(
            (self, side),
            (Uninitialized, _) | (HostOnly, Side::Device) | (DeviceOnly, Side::Host)
        )
    }

    /// Whether `side` holds the newest data.
    pub fn is_valid(self, side: Side) -> bool {
        use CoherenceState::*;
        matches!(
            (self, side),
            (Synchronized, _)
                | (HostOnly | HostDirty, Side::Host)
                | (DeviceOnly | DeviceDirty, Side::Device)
        )
    }

    /// The state where exactly `side` is valid, given what is allocated.
    fn newest_on(side: Side, other_allocated: bool) -> CoherenceState {
        use CoherenceState::*;
        match (side, other_allocated) {
            (Side::Host, false) => HostOnly,
            (Side::Host, true) => HostDirty,
            (Side::Device, false) => DeviceOnly,
            (Side::Device, true) => DeviceDirty,
        }
    }
}

impl CoherenceEvent {
    /// Every event, for exhaustive tests and the table.
    pub const ALL: [CoherenceEvent; 13] = [
        CoherenceEvent::Read(Side::Host),
        CoherenceEvent::Write(Side::Host),
        CoherenceEvent::Discard(Side::Host),
        CoherenceEvent::Read(Side::Device),
        CoherenceEvent::Write(Side::Device),
        CoherenceEvent::Discard(Side::Device),
        CoherenceEvent::Sync,
        CoherenceEvent::Prefetch(Side::Host),
        CoherenceEvent::Prefetch(Side::Device),
        CoherenceEvent::Invalidate(Side::Host),
        CoherenceEvent::Invalidate(Side::Device),
        CoherenceEvent::Compact,
        CoherenceEvent::Resize,
    ];
}

/// The effects that make `side` valid from `state` (nothing when it already is).
fn make_valid(state: CoherenceState, side: Side) -> &'static [Effect] {
    use CoherenceState::*;
    use Effect::*;
    match (state, side) {
        (Uninitialized, Side::Host) => &[Allocate(Side::Host)],
        (Uninitialized, Side::Device) => &[Allocate(Side::Device), Zero(Side::Device)],
        (DeviceOnly, Side::Host) => &[Allocate(Side::Host), Download],
        (DeviceDirty, Side::Host) => &[Download],
        (HostOnly, Side::Device) => &[Allocate(Side::Device), Upload],
        (HostDirty, Side::Device) => &[Upload],
        _ => &[],
    }
}

/// The transition for `event` in `state`.
#[inline]
pub fn transition(
    state: CoherenceState,
    event: CoherenceEvent,
) -> Result<Transition, CoherenceError> {
    use CoherenceEvent::*;
    use CoherenceState::*;
    use Effect::*;
    let t = |state, effects| Ok(Transition { state, effects });
    match event {
        Read(side) | Prefetch(side) => {
            let effects = make_valid(state, side);
            let next = match state {
                Uninitialized => CoherenceState::newest_on(side, false),
                stale if !stale.is_valid(side) => Synchronized,
                valid => valid,
            };
            t(next, effects)
        }
        Write(side) => {
            let effects = make_valid(state, side);
            t(
                CoherenceState::newest_on(side, state.is_allocated(side.other())),
                effects,
            )
        }
        Discard(side) => {
            let effects: &'static [Effect] = if state.is_allocated(side) {
                &[]
            } else {
                match side {
                    Side::Host => &[Allocate(Side::Host)],
                    Side::Device => &[Allocate(Side::Device)],
                }
            };
            t(
                CoherenceState::newest_on(side, state.is_allocated(side.other())),
                effects,
            )
        }
        Sync => match state {
            Uninitialized | Synchronized => t(state, &[]),
            HostOnly | HostDirty => t(Synchronized, make_valid(state, Side::Device)),
            DeviceOnly | DeviceDirty => t(Synchronized, make_valid(state, Side::Host)),
        },
        Invalidate(side) => match state {
            Synchronized => t(CoherenceState::newest_on(side.other(), true), &[]),
            _ if state.is_valid(side) => Err(CoherenceError::OnlyValidCopy { side, state }),
            _ => t(state, &[]),
        },
        Compact => match state {
            Uninitialized | HostOnly => t(state, &[]),
            DeviceOnly => t(
                HostOnly,
                &[Allocate(Side::Host), Download, Release(Side::Device)],
            ),
            DeviceDirty => t(HostOnly, &[Download, Release(Side::Device)]),
            Synchronized | HostDirty => t(HostOnly, &[Release(Side::Device)]),
        },
        Resize => match state {
            Uninitialized => t(state, &[]),
            HostOnly => t(state, &[Reallocate(Side::Host)]),
            DeviceOnly => t(state, &[Reallocate(Side::Device)]),
            Synchronized => t(state, &[Reallocate(Side::Host), Reallocate(Side::Device)]),
            HostDirty => t(HostOnly, &[Release(Side::Device), Reallocate(Side::Host)]),
            DeviceDirty => t(DeviceOnly, &[Release(Side::Host), Reallocate(Side::Device)]),
        },
    }
}

impl fmt::Display for CoherenceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: &Side| match s {
            Side::Host => "host",
            Side::Device => "device",
        };
        match self {
            CoherenceEvent::Read(s) => write!(f, "{} read", side(s)),
            CoherenceEvent::Write(s) => write!(f, "{} write", side(s)),
            CoherenceEvent::Discard(s) => write!(f, "{} write-only", side(s)),
            CoherenceEvent::Sync => write!(f, "sync"),
            CoherenceEvent::Prefetch(s) => write!(f, "prefetch to {}", side(s)),
            CoherenceEvent::Invalidate(s) => write!(f, "invalidate {}", side(s)),
            CoherenceEvent::Compact => write!(f, "compact"),
            CoherenceEvent::Resize => write!(f, "resize"),
        }
    }
}

/// The full table as Markdown: one row per event, one column per state; each cell is the new
/// state and the effects, or "refused". `docs/coherence-table.md` is this text (a test keeps them
/// equal).
pub fn table_markdown() -> String {
    let mut out = String::from("| event |");
    for s in CoherenceState::ALL {
        out += &format!(" {s:?} |");
    }
    out += "\n| --- |";
    out += &" --- |".repeat(CoherenceState::ALL.len());
    out += "\n";
    for e in CoherenceEvent::ALL {
        out += &format!("| {e} |");
        for s in CoherenceState::ALL {
            let cell = match transition(s, e) {
                Err(_) => "refused: only valid copy".to_owned(),
                Ok(t) if t.effects.is_empty() => format!("{:?}", t.state),
                Ok(t) => {
                    let effects: Vec<String> = t.effects.iter().map(|x| format!("{x:?}")).collect();
                    format!("{:?} ← {}", t.state, effects.join(", "))
                }
            };
            out += &format!(" {cell} |");
        }
        out += "\n";
    }
    out
}
