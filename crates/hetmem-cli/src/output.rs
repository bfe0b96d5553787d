//! Where a command's files go: a path, or standard output for `-`.

use std::io::Write;
use std::path::Path;

/// Whether `path` means standard output.
pub fn is_stdout(path: Option<&Path>) -> bool {
    path.is_some_and(|p| p == Path::new("-"))
}

/// Writes `contents` to `path`, or to standard output when `path` is `-`; a failure names the
/// file.
pub fn write(path: &Path, contents: &str) -> Result<(), String> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return (out.write_all(contents.as_bytes()))
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| format!("cannot write to standard output: {e}"));
    }
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
