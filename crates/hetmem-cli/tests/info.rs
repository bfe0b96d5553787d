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
    let info = info_json();
    let kinds = info["backends"].as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["host", "opencl", "cuda", "wgpu"]);

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

    if std::env::var("HETMEM_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
        let wgpu = &kinds[3];
        assert_eq!(wgpu["available"], true, "{wgpu}");
        let device = &wgpu["devices"][0];
        assert_eq!(device["label"], "wgpu:0");
        assert!(device["info"]["max_allocation"].as_u64().unwrap() > 0);
        // One queue: copies do not overlap across hetmem's queues. Blocks map in place only
        // where the adapter's memory is the host's, and llvmpipe (CI's) offers it.
        let caps = &device["capabilities"];
        assert_eq!(caps["concurrent_queues"], false);
        assert!(caps["mapped_access"] == false || caps["unified_memory"] == true);
        if device["info"]["name"]
            .as_str()
            .unwrap()
            .contains("llvmpipe")
        {
            assert_eq!(caps["mapped_access"], true, "{device}");
        }
    }
}

/// The host-memory facts match the kernel's own files.
#[test]
fn info_json_reports_host_memory_as_the_kernel_does() {
    let host = info_json()["host_memory"].clone();
    assert_eq!(host["page_size"], 4096, "{host}");
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok();
    match thp {
        Some(text) => assert!(
            text.contains(&format!(
                "[{}]",
                host["transparent_huge_pages"].as_str().unwrap()
            )),
            "{text} vs {host}"
        ),
        None => assert!(host["transparent_huge_pages"].is_null()),
    }
    let reserved: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(host["reserved_huge_pages"], reserved);
    assert!(!host["numa_nodes"].as_array().unwrap().is_empty());
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
    assert!(text.contains("transparent huge pages"), "{text}");
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
