//! The trace formats: JSON lines (native, every field) and RMM's CSV log
//! (`Thread,Time,Action,Pointer,Size,Stream`), read with line-numbered errors.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};

use super::{Action, Checker, Trace, TraceEvent};
use crate::error::{Error, Result};

/// RMM's column names, in order (`Stream` may be missing in old logs).
const RMM_COLUMNS: [&str; 6] = ["Thread", "Time", "Action", "Pointer", "Size", "Stream"];

impl Trace {
    /// Reads JSON lines, one [`TraceEvent`] per line (blank lines are skipped).
    pub fn read_jsonl(reader: impl BufRead) -> Result<Trace> {
        let mut checker = Checker::default();
        let mut events = Vec::new();
        for (index, line) in reader.lines().enumerate() {
            let line_no = index + 1;
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event: TraceEvent = serde_json::from_str(&line).map_err(|e| Error::BadTrace {
                line: line_no,
                reason: e.to_string(),
            })?;
            checker.check(line_no, &event)?;
            events.push(event);
        }
        Ok(Trace { events })
    }

    /// Writes JSON lines.
    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Reads an RMM CSV log. Threads become small numbers in order of appearance, times
    /// nanoseconds since the first event, pointers the allocations' ids; a `deallocate` of a
    /// pointer that is not live, an unknown action, a negative or non-numeric size, or a row
    /// with the wrong number of columns is an error naming its line.
    pub fn read_rmm_csv(reader: impl Read) -> Result<Trace> {
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        let headers = csv.headers().map_err(|e| csv_error(&e, 1))?.clone();
        let names: Vec<&str> = headers.iter().collect();
        if names.len() < 5 || names[..] != RMM_COLUMNS[..names.len().min(6)] {
            return Err(Error::BadTrace {
                line: 1,
                reason: format!(
                    "expected the columns {} (RMM's log), found {}",
                    RMM_COLUMNS.join(","),
                    names.join(",")
                ),
            });
        }
        let mut checker = Checker::default();
        let mut threads: HashMap<String, u32> = HashMap::new();
        let mut start: Option<u128> = None;
        let mut events = Vec::new();
        for record in csv.records() {
            let record = record.map_err(|e| csv_error(&e, 0))?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            let bad = |reason: String| Error::BadTrace { line, reason };
            let field = |i: usize| record.get(i).unwrap_or("");
            let next = threads.len() as u32;
            let thread = *threads.entry(field(0).to_owned()).or_insert(next);
            let time =
                parse_time(field(1)).ok_or_else(|| bad(format!("bad time {:?}", field(1))))?;
            let start = *start.get_or_insert(time);
            let action = match field(2).to_ascii_lowercase().as_str() {
                "allocate" => Action::Alloc,
                "free" | "deallocate" => Action::Free,
                "allocate failure" | "allocation failure" | "allocate_failure" => {
                    Action::AllocFailed
                }
                other => return Err(bad(format!("unknown action {other:?}"))),
            };
            let id =
                parse_number(field(3)).ok_or_else(|| bad(format!("bad pointer {:?}", field(3))))?;
            let size = field(4);
            if size.starts_with('-') {
                return Err(bad(format!("negative size {size}")));
            }
            let bytes: u64 = size
                .parse()
                .map_err(|_| bad(format!("bad size {size:?}")))?;
            let stream = record
                .get(5)
                .map(|s| parse_number(s).ok_or_else(|| bad(format!("bad stream {s:?}"))));
            let event = TraceEvent {
                time_ns: u64::try_from(time.saturating_sub(start)).unwrap_or(u64::MAX),
                thread,
                action,
                id,
                bytes,
                stream: stream.transpose()?,
                label: None,
                placement: None,
            };
            checker.check(line, &event)?;
            events.push(event);
        }
        Ok(Trace { events })
    }

    /// Writes RMM's CSV log: a resize becomes a deallocate and an allocate of the same pointer;
    /// trims, which RMM's log has no row for, are left out.
    pub fn write_rmm_csv(&self, writer: impl Write) -> Result<()> {
        let mut csv = csv::Writer::from_writer(writer);
        let io = |e: csv::Error| Error::Os(std::io::Error::other(e));
        csv.write_record(RMM_COLUMNS).map_err(io)?;
        let mut sizes: HashMap<u64, u64> = HashMap::new();
        for e in &self.events {
            let row = |action: &str, bytes: u64| {
                [
                    e.thread.to_string(),
                    format!("{:.9}", e.time_ns as f64 / 1e9),
                    action.to_owned(),
                    format!("{:#x}", e.id),
                    bytes.to_string(),
                    format!("{:#x}", e.stream.unwrap_or(0)),
                ]
            };
            match e.action {
                Action::Alloc => {
                    sizes.insert(e.id, e.bytes);
                    csv.write_record(row("allocate", e.bytes)).map_err(io)?;
                }
                Action::Free => {
                    let bytes = sizes.remove(&e.id).unwrap_or(e.bytes);
                    csv.write_record(row("free", bytes)).map_err(io)?;
                }
                Action::AllocFailed => csv
                    .write_record(row("allocate failure", e.bytes))
                    .map_err(io)?,
                Action::Resize => {
                    let old = sizes.insert(e.id, e.bytes).unwrap_or(0);
                    csv.write_record(row("free", old)).map_err(io)?;
                    csv.write_record(row("allocate", e.bytes)).map_err(io)?;
                }
                // RMM's log has no rows for these.
                Action::Trim | Action::Upload | Action::Download | Action::DeviceCopy => {}
            }
        }
        csv.flush()?;
        Ok(())
    }
}

/// A CSV reader's error as a trace error, at its own line where it knows it.
fn csv_error(e: &csv::Error, fallback: usize) -> Error {
    let line = e.position().map_or(fallback, |p| p.line() as usize);
    let reason = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} columns where the header has {expected_len}")
        }
        _ => e.to_string(),
    };
    Error::BadTrace { line, reason }
}

/// `0x`-prefixed hexadecimal or decimal.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None if text.is_empty() => Some(0),
        None => text.parse().ok(),
    }
}

/// Nanoseconds, from seconds as RMM writes them: since the epoch (`1634567890.123456`) or a
/// clock time (`18:03:52.123456`). Exact: a float would lose microseconds at epoch scale.
fn parse_time(text: &str) -> Option<u128> {
    let (clock, seconds) = match text.rsplit_once(':') {
        Some((clock, seconds)) => (Some(clock), seconds),
        None => (None, text),
    };
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ns = whole.parse::<u128>().ok()? * 1_000_000_000;
    ns += format!("{fraction:0<9}").parse::<u128>().ok()?;
    if let Some(clock) = clock {
        let (h, m) = clock.split_once(':')?;
        ns += (h.parse::<u128>().ok()? * 3600 + m.parse::<u128>().ok()? * 60) * 1_000_000_000;
    }
    Some(ns)
}
