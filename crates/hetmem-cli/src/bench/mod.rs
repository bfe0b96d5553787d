//! `hetmem bench`: what hetmem buys on this machine, each figure against a baseline measured in
//! the same run — as a table on stdout, and optionally JSON, Markdown and plots.

mod alloc;
mod buffer;
mod harness;
mod host;
mod instructions;
mod mapped;
mod opencl;
mod pattern;
mod pinned;
pub(crate) mod plot;
mod report;
mod transfer;
mod wgpu;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use hetmem::backend::{Backend, DeviceName, HostBackend};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;
use harness::Effort;
use report::{BackendReport, Machine, Measurement, Report};

#[derive(Args)]
pub struct BenchArgs {
    /// The backend to measure: host, opencl[:N], cuda[:N] or wgpu[:N] (N: the device's index).
    #[arg(long, default_value = "host")]
    backend: String,
    /// Fewer samples and shorter traces: under a minute on a 2-core machine.
    #[arg(long)]
    quick: bool,
    /// Only results whose id contains PATTERN (e.g. `transfer.h2d` or `alloc`).
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    #[command(flatten)]
    outputs: output::Outputs,
    /// Also draw bandwidth against size and the allocation latency distributions into DIR
    /// (bandwidth.svg/.png, alloc-latency.svg/.png).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
}

type CaseFn = dyn Fn(&Arc<dyn Backend>, Effort) -> hetmem::Result<Vec<Measurement>>;

/// One measurement routine and the result ids it produces.
struct Case {
    ids: Vec<String>,
    run: Box<CaseFn>,
}

/// Every case, in the order they run.
#[derive(Default)]
pub struct Suite {
    cases: Vec<Case>,
}

impl Suite {
    /// A case producing the one result `id`.
    fn case(
        &mut self,
        id: &str,
        run: impl Fn(&Arc<dyn Backend>, Effort) -> hetmem::Result<Measurement> + 'static,
    ) {
        self.cases.push(Case {
            ids: vec![id.to_owned()],
            run: Box::new(move |b, e| run(b, e).map(|m| vec![m])),
        });
    }

    /// A case producing the results `ids`, in that order.
    fn case_of_several(
        &mut self,
        ids: &[&str],
        run: impl Fn(&Arc<dyn Backend>, Effort) -> hetmem::Result<Vec<Measurement>> + 'static,
    ) {
        self.cases.push(Case {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            run: Box::new(run),
        });
    }

    fn all() -> Self {
        let mut suite = Suite::default();
        transfer::register(&mut suite);
        alloc::register(&mut suite);
        pattern::register(&mut suite);
        buffer::register(&mut suite);
        host::register(&mut suite);
        pinned::register(&mut suite);
        mapped::register(&mut suite);
        opencl::register(&mut suite);
        wgpu::register(&mut suite);
        instructions::register(&mut suite);
        suite
    }

    /// Every result id, in order.
    pub fn ids() -> Vec<String> {
        Self::all().cases.into_iter().flat_map(|c| c.ids).collect()
    }
}

/// `hetmem bench-loop`: one hot loop for `instructions.*` to count.
#[derive(Args)]
pub struct LoopArgs {
    /// The figure whose loop to run (`instructions.alloc.pool_hit`, …).
    id: String,
    /// `hetmem` or `baseline`.
    side: String,
    /// Iterations.
    iterations: u64,
}

pub fn run_loop(args: &LoopArgs) -> Result<(), Box<dyn std::error::Error>> {
    Ok(instructions::run_loop(
        &args.id,
        &args.side,
        args.iterations,
    )?)
}

/// Finds the backend named by `--backend` (`host`, `opencl:1`, …).
pub(crate) fn select(spec: &str) -> hetmem::Result<Arc<dyn Backend>> {
    spec.parse::<DeviceName>()?.open()
}

fn machine() -> Machine {
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        memory_bytes: HostBackend::new().info().total_memory,
        os,
    }
}

/// The schema of `bench --json`.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(report::Report)
}

pub fn run(args: &BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let backend = select(&args.backend)?;
    let effort = Effort::new(args.quick);
    let wanted = |id: &str| args.filter.as_deref().is_none_or(|f| id.contains(f));
    let cases: Vec<Case> = Suite::all()
        .cases
        .into_iter()
        .filter(|c| c.ids.iter().any(|id| wanted(id)))
        .collect();
    if cases.is_empty() {
        return Err(format!(
            "no result id contains {:?}; ids: {}",
            args.filter.as_deref().unwrap_or(""),
            Suite::ids().join(", ")
        )
        .into());
    }
    let bar = ProgressBar::new(cases.len() as u64).with_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    )?);
    let mut results = Vec::new();
    for case in &cases {
        bar.set_message(case.ids.join(", "));
        let measured =
            (case.run)(&backend, effort).map_err(|e| format!("{}: {e}", case.ids.join(", ")))?;
        results.extend(measured.into_iter().filter(|m| wanted(&m.id)));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let info = backend.info();
    let report = Report {
        version: 1,
        hetmem: env!("CARGO_PKG_VERSION"),
        quick: args.quick,
        backend: BackendReport {
            kind: info.kind,
            name: info.name.clone(),
            label: info.label(),
            vendor: info.vendor.clone(),
            total_memory: info.total_memory,
        },
        machine: machine(),
        results,
    };
    let table = format!("{}\n{}", report.title(), report.table());
    args.outputs.emit(&table, &report, || report.markdown())?;
    if let Some(dir) = &args.plot {
        for file in plot::write(&report, dir)? {
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}
