//! `hetmem replay FILE`: a recorded allocation trace (hetmem's JSON lines, or RMM's CSV log)
//! replayed against several allocator configurations in one run, on any backend — as a table,
//! JSON, Markdown and a plot of reserved against live bytes.

mod plot;

use std::path::PathBuf;

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hetmem::manager::bytes;
use hetmem::pool::SegmentSnapshot;
use hetmem::record::{replay, AllocatorConfig, ReplayOptions, ReplayOutcome, Trace};
use schemars::JsonSchema;
use serde::Serialize;

use crate::bench::select;
use crate::output;

#[derive(Args)]
pub struct ReplayArgs {
    /// The trace: JSON lines (hetmem's format, `HETMEM_TRACE`), or RMM's CSV log when the name
    /// ends in `.csv`.
    file: PathBuf,
    /// The backend to replay on: host, opencl[:N] or cuda[:N].
    #[arg(long, default_value = "host")]
    backend: String,
    /// A memory limit in bytes: a configuration that runs out under it reports the event and
    /// the command exits non-zero.
    #[arg(long)]
    limit: Option<u64>,
    /// Only these configurations (comma-separated): default, compact, classes, power-of-two,
    /// unpooled.
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    #[command(flatten)]
    outputs: output::Outputs,
    /// Also draw reserved against live bytes over the trace for each configuration into DIR
    /// (replay.svg, replay.png).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Show the default configuration's segments, block by block, after event N.
    #[arg(long, value_name = "N")]
    snapshot_at: Option<usize>,
}

/// The JSON document (schema version 1).
#[derive(Serialize, JsonSchema)]
struct Report<'a> {
    version: u32,
    trace: TraceSummary,
    backend: String,
    limit: Option<u64>,
    results: &'a [ReplayOutcome],
}

#[derive(Serialize, JsonSchema)]
struct TraceSummary {
    file: String,
    events: usize,
    peak_live: u64,
}

fn configs(names: &[String]) -> Result<Vec<AllocatorConfig>, String> {
    if names.is_empty() {
        return Ok(AllocatorConfig::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            (AllocatorConfig::ALL.into_iter())
                .find(|c| c.name() == name)
                .ok_or_else(|| {
                    format!("unknown configuration {name:?}: use default, compact, classes, power-of-two or unpooled")
                })
        })
        .collect()
}

/// The schema of `replay --json`.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Report<'static>)
}

pub fn run(args: &ReplayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let backend = select(&args.backend)?;
    let configs = configs(&args.configs)?;
    let trace = Trace::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let options = ReplayOptions {
        limit: args.limit,
        curve_points: 400,
        snapshot_at: args.snapshot_at,
    };
    let mut results = Vec::new();
    for config in configs {
        results.push(replay(&trace, backend.clone(), config, options)?);
    }
    let label = backend.info().label();
    let title = format!(
        "{}: {} events, peak live {}, on {label}{}",
        args.file.display(),
        trace.events.len(),
        bytes(trace.peak_live()),
        args.limit
            .map_or_else(String::new, |l| format!(", limit {}", bytes(l)))
    );
    let mut text = format!("{title}\n{}", table(&results));
    for outcome in &results {
        if let Some(segments) = &outcome.snapshot {
            text.push_str(&format!(
                "\nsegments of `{}` after event {}:\n{}",
                outcome.config.name(),
                args.snapshot_at.unwrap_or(0),
                picture(segments)
            ));
        }
    }
    let report = Report {
        version: 1,
        trace: TraceSummary {
            file: args.file.display().to_string(),
            events: trace.events.len(),
            peak_live: trace.peak_live(),
        },
        backend: label,
        limit: args.limit,
        results: &results,
    };
    args.outputs
        .emit(&text, &report, || markdown(&title, &results))?;
    if let Some(dir) = &args.plot {
        for file in plot::write(&results, dir, &title)? {
            eprintln!("wrote {}", file.display());
        }
    }
    let failed: Vec<&str> = (results.iter())
        .filter(|r| r.failure.is_some())
        .map(|r| r.config.name())
        .collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(format!("ran out of memory under the limit: {}", failed.join(", ")).into()),
    }
}

/// One row per configuration: the figures the table and the Markdown share.
fn rows(results: &[ReplayOutcome]) -> Vec<[String; 9]> {
    results
        .iter()
        .map(|r| {
            [
                r.config.name().to_owned(),
                format!("{:.1} %", 100.0 * r.hit_rate),
                format!("{} + {}", r.backend_allocations, r.commits),
                bytes(r.peak_live),
                bytes(r.peak_reserved),
                format!("{:.2}×", r.reserved_ratio()),
                format!("{:.1} %", 100.0 * r.fragmentation),
                format!("{:.0} ({:.0})", r.ns_per_event, r.backend_ns_per_event),
                r.failure.as_ref().map_or_else(
                    || "-".to_owned(),
                    |f| {
                        format!(
                            "event {}: {} with {} live",
                            f.event,
                            bytes(f.bytes),
                            bytes(f.live)
                        )
                    },
                ),
            ]
        })
        .collect()
}

const HEADER: [&str; 9] = [
    "configuration",
    "hit rate",
    "allocs + commits",
    "peak live",
    "peak reserved",
    "reserved/live",
    "fragmentation",
    "ns/event (backend)",
    "first failure",
];

fn table(results: &[ReplayOutcome]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(HEADER);
    for row in rows(results) {
        table.add_row(row);
    }
    table.to_string()
}

fn markdown(title: &str, results: &[ReplayOutcome]) -> String {
    let mut out = format!(
        "### {title}\n\n| {} |\n|{}\n",
        HEADER.join(" | "),
        " --- |".repeat(9)
    );
    for row in rows(results) {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// Each segment as a bar of 64 cells: `#` where blocks are in use, `.` where free (a cell is
/// `#` if any of it is used).
fn picture(segments: &[SegmentSnapshot]) -> String {
    const CELLS: u64 = 64;
    if segments.is_empty() {
        return "  (no segments: nothing above the splitting threshold is live or cached)\n".into();
    }
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        let cell = segment.size.div_ceil(CELLS).max(1);
        let bar: String = (0..CELLS)
            .map(|c| {
                let (start, end) = (c * cell, ((c + 1) * cell).min(segment.size));
                let used = segment
                    .ranges
                    .iter()
                    .any(|r| r.used && r.offset < end && r.offset + r.len > start);
                if start >= segment.size {
                    ' '
                } else if used {
                    '#'
                } else {
                    '.'
                }
            })
            .collect();
        let in_use: u64 = segment
            .ranges
            .iter()
            .filter(|r| r.used)
            .map(|r| r.len)
            .sum();
        let expandable = match segment.expandable {
            true => format!(" (expandable, {} committed)", bytes(segment.committed)),
            false => String::new(),
        };
        out.push_str(&format!(
            "{i:>3} [{bar}] {} of {} in use, {} blocks{expandable}\n",
            bytes(in_use),
            bytes(segment.size),
            segment.ranges.iter().filter(|r| r.used).count()
        ));
    }
    out
}
