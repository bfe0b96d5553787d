//! The `metrics` and `serde` features against a real recorder and serialiser.

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
    let (_, parked) = find(MetricKind::Gauge, "hetmem_buffers_parked");
    assert_eq!(parked, &DebugValue::Gauge(1.0.into()), "b is parked");
    let (_, reuses) = find(MetricKind::Counter, "hetmem_parked_reuses_total");
    assert_eq!(reuses, &DebugValue::Counter(0));
    let directions = values
        .iter()
        .filter(|(k, ..)| k.key().name() == "hetmem_transfer_bytes_total")
        .count();
    assert_eq!(directions, 3, "one series per direction");
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
