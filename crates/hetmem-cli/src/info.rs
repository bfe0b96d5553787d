//! `hetmem info`: what backends this machine has, and what it offers host memory (huge pages,
//! NUMA nodes, the locked-memory limit), as tables or as JSON.

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hetmem::backend::{BackendKind, Capabilities, DeviceInfo};
use hetmem::host::{host_system, HostSystem};
use hetmem::manager::bytes;
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Args)]
pub struct InfoArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One backend kind as `info` reports it.
#[derive(Serialize, JsonSchema)]
struct KindReport {
    kind: BackendKind,
    available: bool,
    /// Why the kind is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    devices: Vec<DeviceReport>,
}

#[derive(Serialize, JsonSchema)]
struct DeviceReport {
    label: String,
    info: DeviceInfo,
    capabilities: Capabilities,
}

/// Everything `info` reports.
#[derive(Serialize, JsonSchema)]
struct Report {
    backends: Vec<KindReport>,
    host_memory: HostSystem,
}

fn report() -> Vec<KindReport> {
    hetmem::backend::probe()
        .into_iter()
        .map(|probe| match probe.outcome {
            Ok(backends) => KindReport {
                kind: probe.kind,
                available: true,
                reason: None,
                devices: backends
                    .iter()
                    .map(|b| {
                        let info = b.info();
                        DeviceReport {
                            label: info.label(),
                            info,
                            capabilities: b.capabilities(),
                        }
                    })
                    .collect(),
            },
            Err(e) => KindReport {
                kind: probe.kind,
                available: false,
                reason: Some(e.to_string()),
                devices: Vec::new(),
            },
        })
        .collect()
}

/// The schema of `info --json`.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Report)
}

pub fn run(args: &InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = Report {
        backends: report(),
        host_memory: host_system(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", table(&report.backends));
        println!("{}", host_table(&report.host_memory));
    }
    Ok(())
}

fn table(kinds: &[KindReport]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "backend",
        "device",
        "vendor",
        "memory",
        "free",
        "max alloc",
        "align",
        "capabilities",
    ]);
    for kind in kinds {
        if let Some(reason) = &kind.reason {
            table.add_row([kind.kind.to_string(), format!("unavailable: {reason}")]);
        }
        for d in &kind.devices {
            table.add_row([
                d.label.clone(),
                d.info.name.clone(),
                d.info.vendor.clone(),
                bytes(d.info.total_memory),
                d.info.free_memory.map_or_else(|| "-".into(), bytes),
                bytes(d.info.max_allocation),
                d.info.alignment.to_string(),
                capabilities(&d.capabilities),
            ]);
        }
    }
    table
}

fn host_table(h: &HostSystem) -> Table {
    let mut table = Table::new();
    let or = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_owned());
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["host memory", ""]);
    table.add_row(["page size".to_owned(), bytes(h.page_size as u64)]);
    table.add_row([
        "transparent huge pages".to_owned(),
        or(h.transparent_huge_pages.clone(), "not supported"),
    ]);
    table.add_row([
        "explicit huge pages reserved".to_owned(),
        match h.reserved_huge_pages {
            0 => "none (vm.nr_hugepages = 0: Pages::Huge falls back)".to_owned(),
            n => format!("{n} of 2 MiB"),
        },
    ]);
    table.add_row(["NUMA nodes".to_owned(), format!("{:?}", h.numa_nodes)]);
    table.add_row([
        "locked-memory limit".to_owned(),
        or(h.memlock_limit.map(bytes), "unlimited"),
    ]);
    table
}

fn capabilities(c: &Capabilities) -> String {
    let flags = [
        (c.unified_memory, "unified-memory"),
        (c.peer_domain.is_some(), "peer-copies"),
        (c.async_copies, "async-copies"),
        (c.pinned_staging, "pinned-staging"),
        (c.host_addressable, "host-addressable"),
        (c.mapped_access, "mapped-access"),
        (c.shared_allocations, "shared-allocations"),
        (c.concurrent_queues, "concurrent-queues"),
    ];
    let on: Vec<&str> = flags.iter().filter(|(f, _)| *f).map(|(_, n)| *n).collect();
    if on.is_empty() {
        "-".into()
    } else {
        on.join(", ")
    }
}
