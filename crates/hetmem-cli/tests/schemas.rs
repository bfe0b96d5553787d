//! The published JSON schemas (`docs/schemas/`): exactly what `hetmem schema` generates from the
//! types that write the JSON, and the JSON the commands write conforms to them (`bench`'s is
//! checked where `tests/bench.rs` runs it).

mod common;

use common::{hetmem, published_schema, schema_errors};

#[test]
fn published_schemas_are_the_generated_ones() {
    for command in ["info", "bench", "replay"] {
        let out = hetmem(&["schema", command]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            generated,
            published_schema(command),
            "docs/schemas/{command}.schema.json is stale: regenerate it with `hetmem schema \
             {command}`"
        );
    }
}

#[test]
fn info_json_conforms() {
    let out = hetmem(&["info", "--json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema_errors("info", &doc), Vec::<String>::new());
}

#[test]
fn replay_json_conforms_and_a_broken_document_does_not() {
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/traces/candle-kv-cache-decoding.jsonl"
    );
    let out = hetmem(&[
        "replay",
        trace,
        "--configs",
        "default,classes",
        "--json",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema_errors("replay", &doc), Vec::<String>::new());
    doc["results"][0]["hit_rate"] = serde_json::json!("high");
    doc["trace"].as_object_mut().unwrap().remove("peak_live");
    let errors = schema_errors("replay", &doc);
    assert_eq!(errors.len(), 2, "{errors:?}");
}
