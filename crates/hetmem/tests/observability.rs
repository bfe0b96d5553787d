//! The `metrics` and `tracing` features against real recorders and subscribers.

#[cfg(feature = "metrics")]
#[test]
fn publish_metrics_reaches_a_real_recorder_with_the_snapshot_values() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;

    let manager = hetmem::MemoryManager::host();
    let _a = manager.alloc::<u8>(3000).unwrap();
    let b = manager.alloc::<u8>(1000).unwrap();
    drop(b);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || manager.publish_metrics());
    let values: Vec<_> = snapshotter.snapshot().into_vec();
    let find = |kind: MetricKind, name: &str| {
        values
            .iter()
            .find(|(k, ..)| k.kind() == kind && k.key().name() == name)
            .map(|(k, _, _, v)| {
                (
                    k.key()
                        .labels()
                        .map(|l| l.value().to_owned())
                        .collect::<Vec<_>>(),
                    v,
                )
            })
            .unwrap_or_else(|| panic!("{name} was not published"))
    };
    let (labels, current) = find(MetricKind::Gauge, "hetmem_bytes_current");
    assert_eq!(labels, ["host"]);
    assert_eq!(current, &DebugValue::Gauge(3000.0.into()));
    let (_, allocations) = find(MetricKind::Counter, "hetmem_allocations_total");
    assert_eq!(allocations, &DebugValue::Counter(2));
    let (_, releases) = find(MetricKind::Counter, "hetmem_releases_total");
    assert_eq!(releases, &DebugValue::Counter(1));
    let directions = values
        .iter()
        .filter(|(k, ..)| k.key().name() == "hetmem_transfer_bytes_total")
        .count();
    assert_eq!(directions, 3, "one series per direction");
}

#[cfg(feature = "tracing")]
#[test]
fn pool_misses_and_transfers_open_spans() {
    use std::sync::{Arc, Mutex};

    use hetmem::{Backend, HostBackend};
    use tracing::span::{Attributes, Id};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Records the name of every span opened.
    struct Names(Arc<Mutex<Vec<String>>>);
    impl<S: Subscriber> Layer<S> for Names {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(attrs.metadata().name().to_owned());
        }
    }

    let names = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Names(names.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let manager = hetmem::MemoryManager::host();
        let first = manager.alloc::<u8>(4096).unwrap(); // a miss: the pool is empty
        drop(first);
        let _hit = manager.alloc::<u8>(4096).unwrap(); // a hit: no span
        let backend = Arc::new(HostBackend::new());
        let engine = hetmem::transfer::TransferEngine::new(backend.clone());
        let mut block = backend.allocate(64).unwrap();
        engine.write(&mut block, 0, &[1; 64]).unwrap();
        backend.release(block).unwrap();
    });
    let names = names.lock().unwrap();
    assert_eq!(
        names.iter().filter(|n| *n == "hetmem.pool_miss").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "hetmem.transfer").count(),
        1,
        "{names:?}"
    );
}

#[cfg(feature = "serde")]
#[test]
fn snapshots_serialise_with_every_figure() {
    let manager = hetmem::MemoryManager::host();
    let _a = manager.alloc::<u8>(2048).unwrap();
    let json = serde_json::to_value(manager.stats()).unwrap();
    assert_eq!(json["allocations"], 1);
    assert_eq!(json["bytes_current"], 2048);
    assert_eq!(json["device"]["bytes_in_use"], 2048);
    assert!(json["transfers"]["host_to_device"]["bytes"].is_number());
    let usage = serde_json::to_value(manager.usage()).unwrap();
    assert_eq!(usage[0]["placement"], "Shared");
}
