//! Publishing a manager's statistics through the `metrics` crate (feature `metrics`), to whatever
//! recorder the application installed (Prometheus, StatsD, …).

use metrics::{counter, gauge};

use super::MemoryManager;
use crate::transfer::DirectionStats;

impl MemoryManager {
    /// Publishes the statistics now: gauges for what is current, counters for what only grows.
    /// Every series carries a `backend` label. Call it as often as the exporter scrapes.
    ///
    /// Gauges: `hetmem_buffers_live`, `hetmem_bytes_current`, `hetmem_bytes_peak`,
    /// `hetmem_bytes_reserved`, `hetmem_bytes_in_use`, `hetmem_bytes_cached`,
    /// `hetmem_pool_hit_rate`, `hetmem_fragmentation`, `hetmem_transfers_in_flight`,
    /// `hetmem_buffers_parked`.
    /// Counters: `hetmem_allocations_total`, `hetmem_releases_total`, `hetmem_parked_reuses_total`,
    /// `hetmem_transfer_bytes_total` and `hetmem_transfers_total` (label `direction`),
    /// `hetmem_transfer_retries_total`, `hetmem_transfer_failures_total`.
    pub fn publish_metrics(&self) {
        let s = self.stats();
        let backend = self.backend().info().kind.to_string();
        let b = [("backend", backend)];
        gauge!("hetmem_buffers_live", &b).set(s.live_buffers() as f64);
        gauge!("hetmem_bytes_current", &b).set(s.bytes_current as f64);
        gauge!("hetmem_bytes_peak", &b).set(s.bytes_peak as f64);
        gauge!("hetmem_bytes_reserved", &b).set(s.reserved_bytes() as f64);
        gauge!("hetmem_bytes_in_use", &b).set(s.in_use_bytes() as f64);
        gauge!("hetmem_bytes_cached", &b).set(s.cached_bytes() as f64);
        gauge!("hetmem_pool_hit_rate", &b).set(s.hit_rate());
        gauge!("hetmem_fragmentation", &b).set(s.fragmentation());
        gauge!("hetmem_transfers_in_flight", &b).set(s.transfers.in_flight as f64);
        gauge!("hetmem_buffers_parked", &b).set(s.parked.buffers as f64);
        counter!("hetmem_allocations_total", &b).absolute(s.allocations);
        counter!("hetmem_releases_total", &b).absolute(s.releases);
        counter!("hetmem_parked_reuses_total", &b).absolute(s.parked.reuses);
        counter!("hetmem_transfer_retries_total", &b).absolute(s.transfers.retries);
        counter!("hetmem_transfer_failures_total", &b).absolute(s.transfers.failures);
        let t = &s.transfers;
        let directions: [(&str, &DirectionStats); 3] = [
            ("h2d", &t.host_to_device),
            ("d2h", &t.device_to_host),
            ("d2d", &t.device_to_device),
        ];
        for (direction, d) in directions {
            let labels = [
                ("backend", b[0].1.clone()),
                ("direction", direction.to_string()),
            ];
            counter!("hetmem_transfer_bytes_total", &labels).absolute(d.bytes);
            counter!("hetmem_transfers_total", &labels).absolute(d.transfers);
        }
    }
}
