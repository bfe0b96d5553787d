//! `hetmem info`: what backends this machine has, as a table or as JSON.

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hetmem::backend::{BackendKind, Capabilities, DeviceInfo};
use hetmem::manager::bytes;
use serde::Serialize;

#[derive(Args)]
pub struct InfoArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One backend kind as `info` reports it.
#[derive(Serialize)]
struct KindReport {
    kind: BackendKind,
    available: bool,
    /// Why the kind is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    devices: Vec<DeviceReport>,
}

#[derive(Serialize)]
struct DeviceReport {
    label: String,
    info: DeviceInfo,
    capabilities: Capabilities,
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

pub fn run(args: &InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let kinds = report();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&kinds)?);
    } else {
        println!("{}", table(&kinds));
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

fn capabilities(c: &Capabilities) -> String {
    let flags = [
        (c.unified_memory, "unified-memory"),
        (c.peer_domain.is_some(), "peer-copies"),
        (c.async_copies, "async-copies"),
        (c.pinned_staging, "pinned-staging"),
        (c.host_addressable, "host-addressable"),
        (c.mapped_access, "mapped-access"),
    ];
    let on: Vec<&str> = flags.iter().filter(|(f, _)| *f).map(|(_, n)| *n).collect();
    if on.is_empty() {
        "-".into()
    } else {
        on.join(", ")
    }
}
