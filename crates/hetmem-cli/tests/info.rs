//! `hetmem info` lists every backend kind, with devices or the reason they are missing.

use std::process::Command;

fn info_json() -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hetmem"))
        .args(["info", "--json"])
        .output()
        .expect("hetmem runs");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn info_json_reports_every_kind() {
    let kinds = info_json();
    let kinds = kinds.as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["host", "opencl", "cuda"]);

    let host = &kinds[0];
    assert_eq!(host["available"], true);
    assert_eq!(host["devices"][0]["label"], "host:0");
    assert!(host["devices"][0]["info"]["total_memory"].as_u64().unwrap() > 0);

    for kind in kinds {
        if kind["available"] == false {
            assert!(!kind["reason"].as_str().unwrap().is_empty(), "{kind}");
            assert!(kind["devices"].as_array().unwrap().is_empty());
        }
    }

    if std::env::var("HETMEM_REQUIRE_OPENCL").is_ok_and(|v| v == "1") {
        let opencl = &kinds[1];
        assert_eq!(opencl["available"], true, "{opencl}");
        let devices = opencl["devices"].as_array().unwrap();
        if let Ok(spec) = std::env::var("POCL_DEVICES") {
            assert!(devices.len() >= spec.split_whitespace().count());
        }
        for (i, d) in devices.iter().enumerate() {
            assert_eq!(d["label"], format!("opencl:{i}"));
            assert_eq!(d["capabilities"]["async_copies"], true);
        }
    }
}

#[test]
fn info_table_names_each_backend() {
    let out = Command::new(env!("CARGO_BIN_EXE_hetmem"))
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("host:0"), "{text}");
    assert!(text.contains("cuda"), "{text}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_hetmem"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
