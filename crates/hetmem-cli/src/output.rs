//! Where a command's results go: its table, and the JSON and Markdown files it is asked for —
//! a path, or standard output for `-`.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

/// The files a command writes its results to.
#[derive(Args)]
pub struct Outputs {
    /// Also write the results as JSON to FILE (`-`: standard output, the table then going to
    /// standard error).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the results as a Markdown table to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

impl Outputs {
    /// Prints `table` (to standard error when the JSON takes standard output), then writes
    /// `report` as JSON and `markdown()` where asked.
    pub fn emit(
        &self,
        table: &str,
        report: &impl Serialize,
        markdown: impl FnOnce() -> String,
    ) -> Result<(), Box<dyn Error>> {
        match self.json.as_deref() == Some(Path::new("-")) {
            true => eprintln!("{table}"),
            false => println!("{table}"),
        }
        if let Some(path) = &self.json {
            write(path, &serde_json::to_string_pretty(report)?)?;
        }
        if let Some(path) = &self.markdown {
            write(path, &markdown())?;
        }
        Ok(())
    }
}

/// Writes `contents` to `path`, or to standard output when `path` is `-`; a failure names the
/// file.
fn write(path: &Path, contents: &str) -> Result<(), String> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return (out.write_all(contents.as_bytes()))
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| format!("cannot write to standard output: {e}"));
    }
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
