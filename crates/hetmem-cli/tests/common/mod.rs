//! What the CLI's tests share: running the binary, and checking JSON against the published
//! schemas (`docs/schemas/`).
// Each test crate compiles this module and uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `hetmem` with `args`.
pub fn hetmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetmem"))
        .args(args)
        .output()
        .expect("hetmem runs")
}

/// The published schema of `command`'s JSON.
pub fn published_schema(command: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../docs/schemas/{command}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("a schema is JSON")
}

/// The ways `doc` breaks the published schema of `command`'s JSON (none: it conforms).
pub fn schema_errors(command: &str, doc: &serde_json::Value) -> Vec<String> {
    let schema = published_schema(command);
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    (validator.iter_errors(doc))
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}
