//! What `hetmem bench` reports: the JSON document (schema version 1), its table and Markdown.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use schemars::JsonSchema;
use serde::Serialize;

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// The baseline a figure is compared with, measured in the same run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Baseline {
    pub name: String,
    pub value: f64,
}

/// One result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Measurement {
    pub id: String,
    pub category: String,
    pub value: f64,
    pub unit: &'static str,
    pub better: Better,
    pub baseline: Baseline,
    /// hetmem's advantage: above 1 means hetmem is better, whichever way `better` points.
    pub ratio: f64,
    /// Every timed sample behind `value` and the baseline's, in `unit`, where the figure is a
    /// latency: what the distribution plots draw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<Samples>,
}

/// The samples of a latency figure, each the mean time per operation over one timed loop.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Samples {
    pub hetmem: Vec<f64>,
    pub baseline: Vec<f64>,
}

impl Measurement {
    pub fn new(
        id: &str,
        value: f64,
        unit: &'static str,
        better: Better,
        baseline: &str,
        baseline_value: f64,
    ) -> Self {
        let ratio = match better {
            Better::Higher => value / baseline_value,
            Better::Lower => baseline_value / value,
        };
        Measurement {
            id: id.to_owned(),
            category: id.split('.').next().unwrap_or(id).to_owned(),
            value,
            unit,
            better,
            baseline: Baseline {
                name: baseline.to_owned(),
                value: baseline_value,
            },
            ratio,
            samples: None,
        }
    }

    /// The same figure with the samples behind it.
    pub fn with_samples(self, samples: Samples) -> Self {
        Measurement {
            samples: Some(samples),
            ..self
        }
    }
}

/// The backend measured.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BackendReport {
    pub kind: hetmem::backend::BackendKind,
    pub name: String,
    pub label: String,
    pub vendor: String,
    pub total_memory: u64,
}

/// The machine it ran on.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub os: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    pub version: u32,
    pub hetmem: &'static str,
    pub quick: bool,
    pub backend: BackendReport,
    pub machine: Machine,
    pub results: Vec<Measurement>,
}

fn figure(v: f64) -> String {
    if !v.is_finite() {
        format!("{v}")
    } else if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.2e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    const HEADER: [&'static str; 5] = ["id", "hetmem", "baseline", "baseline value", "ratio"];

    fn rows(&self) -> impl Iterator<Item = [String; 5]> + '_ {
        self.results.iter().map(|m| {
            [
                m.id.clone(),
                format!("{} {}", figure(m.value), m.unit),
                m.baseline.name.clone(),
                format!("{} {}", figure(m.baseline.value), m.unit),
                format!("{}×", figure(m.ratio)),
            ]
        })
    }

    /// One line about what ran where.
    pub fn title(&self) -> String {
        format!(
            "hetmem {} bench on {} ({}), {} CPUs, {:.1} GiB, {}{}",
            self.hetmem,
            self.backend.label,
            self.backend.name,
            self.machine.cpus,
            self.machine.memory_bytes as f64 / (1u64 << 30) as f64,
            self.machine.os,
            if self.quick { ", --quick" } else { "" }
        )
    }

    /// The terminal table.
    pub fn table(&self) -> Table {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(Self::HEADER);
        for row in self.rows() {
            table.add_row(row);
        }
        table
    }

    /// The same as a Markdown document.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# {}\n\nRatio: hetmem's advantage over the baseline measured in the same run (> 1: hetmem is better).\n\n| {} |\n|{}\n",
            self.title(),
            Self::HEADER.join(" | "),
            " --- |".repeat(Self::HEADER.len())
        );
        for row in self.rows() {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}
