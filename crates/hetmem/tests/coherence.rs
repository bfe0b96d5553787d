//! The coherence table against a model that tracks actual values: every (state, event) pair,
//! then random event sequences. A side's "value" is the version of the data it holds; a write
//! makes a new version, so a stale copy declared valid or a lost newest copy shows up at once.

use hetmem::buffer::coherence::{table_markdown, transition};
use hetmem::buffer::{CoherenceError, CoherenceEvent, CoherenceState, Effect, Side};
use proptest::prelude::*;

/// Device memory fresh from the allocator holds garbage, never a real version.
const GARBAGE: u64 = u64::MAX;

/// What each side really holds (`None`: not allocated) and the newest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Model {
    host: Option<u64>,
    device: Option<u64>,
    newest: u64,
}

impl Model {
    /// A model consistent with `state`, newest version 5.
    fn of(state: CoherenceState) -> Model {
        use CoherenceState::*;
        let (host, device) = match state {
            Uninitialized => return Model::default(),
            HostOnly => (Some(5), None),
            DeviceOnly => (None, Some(5)),
            Synchronized => (Some(5), Some(5)),
            HostDirty => (Some(5), Some(4)),
            DeviceDirty => (Some(4), Some(5)),
        };
        Model {
            host,
            device,
            newest: 5,
        }
    }

    fn get(&self, side: Side) -> Option<u64> {
        match side {
            Side::Host => self.host,
            Side::Device => self.device,
        }
    }

    fn side(&mut self, side: Side) -> &mut Option<u64> {
        match side {
            Side::Host => &mut self.host,
            Side::Device => &mut self.device,
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Allocate(side) => {
                assert!(self.side(side).is_none(), "allocating an allocated side");
                // Host memory comes zeroed (version 0), device memory does not.
                *self.side(side) = Some(if side == Side::Host { 0 } else { GARBAGE });
            }
            Effect::Zero(side) => {
                assert!(self.side(side).is_some(), "zeroing unallocated memory");
                *self.side(side) = Some(0);
            }
            Effect::Upload => {
                assert!(
                    self.host.is_some() && self.device.is_some(),
                    "upload needs both"
                );
                self.device = self.host;
            }
            Effect::Download => {
                assert!(
                    self.host.is_some() && self.device.is_some(),
                    "download needs both"
                );
                self.host = self.device;
            }
            Effect::Release(side) => {
                assert!(self.side(side).is_some(), "releasing an unallocated side");
                *self.side(side) = None;
            }
            Effect::Reallocate(side) => {
                assert!(
                    self.side(side).is_some(),
                    "reallocating an unallocated side"
                );
            }
        }
    }

    /// The model agrees with what `state` claims.
    fn check(&mut self, state: CoherenceState, context: &str) {
        for side in [Side::Host, Side::Device] {
            let held = self.get(side);
            assert_eq!(
                held.is_some(),
                state.is_allocated(side),
                "{context}: allocation of {side:?}"
            );
            if state.is_valid(side) {
                assert_eq!(held, Some(self.newest), "{context}: {side:?} claimed valid");
            }
        }
        let kept = self.host == Some(self.newest) || self.device == Some(self.newest);
        let nothing_written = state == CoherenceState::Uninitialized && self.newest == 0;
        assert!(
            kept || nothing_written,
            "{context}: the newest data was lost"
        );
    }

    /// Runs `event` through the table and the model; `Err` when the table refused it.
    fn step(
        &mut self,
        state: CoherenceState,
        event: CoherenceEvent,
    ) -> Result<CoherenceState, CoherenceError> {
        let context = format!("{state:?} + {event}");
        let t = match transition(state, event) {
            Ok(t) => t,
            Err(e) => {
                // Refused exactly when the side is the only one declared valid (the other may
                // hold equal bytes after an explicit invalidation; the table stays conservative).
                let CoherenceEvent::Invalidate(side) = event else {
                    panic!("{context}: only invalidation may be refused");
                };
                assert!(
                    state.is_valid(side) && !state.is_valid(side.other()),
                    "{context}"
                );
                assert_eq!(self.get(side), Some(self.newest), "{context}");
                return Err(e);
            }
        };
        for &effect in t.effects {
            self.apply(effect);
        }
        // A write-only side becomes newest through the write itself.
        if !matches!(event, CoherenceEvent::Discard(_)) {
            self.check(t.state, &context);
        }
        match event {
            CoherenceEvent::Read(side) | CoherenceEvent::Prefetch(side) => {
                assert_eq!(self.get(side), Some(self.newest), "{context}: reads newest");
            }
            CoherenceEvent::Write(side) => {
                assert_eq!(
                    self.get(side),
                    Some(self.newest),
                    "{context}: modifies newest"
                );
                self.newest += 1;
                *self.side(side) = Some(self.newest);
            }
            CoherenceEvent::Discard(side) => {
                self.newest += 1;
                *self.side(side) = Some(self.newest);
            }
            CoherenceEvent::Sync => {
                if t.state != CoherenceState::Uninitialized {
                    assert_eq!(
                        (self.host, self.device),
                        (Some(self.newest), Some(self.newest))
                    );
                }
            }
            CoherenceEvent::Compact => assert_eq!(self.device, None, "{context}"),
            CoherenceEvent::Invalidate(_) | CoherenceEvent::Resize => {}
        }
        self.check(t.state, &format!("{context}, after the access"));
        Ok(t.state)
    }
}

fn transfers(state: CoherenceState, event: CoherenceEvent) -> usize {
    transition(state, event).map_or(0, |t| {
        t.effects
            .iter()
            .filter(|e| matches!(e, Effect::Upload | Effect::Download))
            .count()
    })
}

#[test]
fn every_state_and_event_keeps_the_newest_data() {
    let mut refused = 0;
    for state in CoherenceState::ALL {
        for event in CoherenceEvent::ALL {
            if Model::of(state).step(state, event).is_err() {
                refused += 1;
            }
        }
    }
    // HostOnly, HostDirty refuse "invalidate host"; DeviceOnly, DeviceDirty "invalidate device".
    assert_eq!(refused, 4);
}

#[test]
fn a_valid_side_never_moves_data() {
    for state in CoherenceState::ALL {
        for side in [Side::Host, Side::Device] {
            let reads = transfers(state, CoherenceEvent::Read(side));
            assert_eq!(
                reads,
                usize::from(!state.is_valid(side) && state != CoherenceState::Uninitialized)
            );
            assert_eq!(
                transfers(state, CoherenceEvent::Discard(side)),
                0,
                "write-only never moves data"
            );
        }
        assert!(transfers(state, CoherenceEvent::Sync) <= 1);
        assert_eq!(transfers(state, CoherenceEvent::Resize), 0);
    }
}

/// `HETMEM_BLESS=1 cargo test --test coherence` rewrites the documented table.
#[test]
fn the_documented_table_is_the_implemented_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/coherence-table.md");
    if std::env::var_os("HETMEM_BLESS").is_some() {
        std::fs::write(path, table_markdown()).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        table_markdown(),
        "docs/coherence-table.md is stale: rerun this test with HETMEM_BLESS=1"
    );
}

fn event() -> impl Strategy<Value = CoherenceEvent> {
    (0..CoherenceEvent::ALL.len()).prop_map(|i| CoherenceEvent::ALL[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random lives of a buffer from its creation: the table never loses or fakes data.
    #[test]
    fn random_event_sequences_agree_with_the_model(events in prop::collection::vec(event(), 1..60)) {
        let mut model = Model::default();
        let mut state = CoherenceState::Uninitialized;
        for e in events {
            if let Ok(next) = model.step(state, e) {
                state = next;
            }
        }
    }
}
