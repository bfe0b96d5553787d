//! `hetmem bench --quick --json` on the host backend: the document follows its published schema and
//! holds every required result with a finite value and a same-run baseline. (No timing
//! thresholds: CI machines are noisy; the figures belong in benchmark reports.)

mod common;

use common::{hetmem, schema_errors};

const REQUIRED: &[&str] = &[
    "transfer.h2d_fresh.256MiB",
    "transfer.batch.h2d.4KiBx1000",
    "alloc.pool_hit",
    "alloc.pool_hit.free_list",
    "alloc.unpooled",
    "alloc.splitting.4MiB",
    "alloc.first_use.16MiB",
    "alloc.bulk",
    "alloc.array_pool.1MiB",
    // Run by the hetmem-mimalloc binary, which cargo builds beside hetmem for these tests.
    "alloc.array_pool.1MiB.mimalloc",
    "alloc.object_pool",
    "alloc.object_pool.opool",
    "alloc.manager",
    "alloc.manager.unparked",
    "pattern.concurrent.1threads",
    "pattern.concurrent.2threads",
    "pattern.replay.waste_pct",
    "pattern.replay.hit_rate_pct",
    "pattern.replay.peak_reserved_ratio",
    "pattern.replay.long.allocator_ns_per_event",
    "pattern.replay.mlp_training.hit_rate_pct",
    "pattern.replay.mlp_training.peak_reserved_ratio",
    "pattern.replay.mlp_training.compact.peak_reserved_ratio",
    "pattern.replay.kv_cache.hit_rate_pct",
    "pattern.replay.kv_cache.peak_reserved_ratio",
    "pattern.replay.kv_cache.compact.peak_reserved_ratio",
    "pattern.replay.batched_inference.hit_rate_pct",
    "pattern.replay.batched_inference.peak_reserved_ratio",
    "pattern.replay.batched_inference.compact.peak_reserved_ratio",
    "buffer.lazy_sync.bytes_ratio",
    "buffer.lazy_sync.speedup",
    "buffer.guard_ns",
    "host.huge_pages.touch",
    "host.huge_pages.random_read",
    "pinned.pool_hit",
    "host.shared_segment.open_read",
    "host.mapped_file.upload",
    // Host memory and PoCL both map and share (a device that cannot produces none of these).
    "map.read.16MiB",
    "map.write_discard.16MiB",
    "shared.host_then_device.16MiB",
];

#[test]
fn quick_json_has_every_required_result_on_the_host() {
    check_quick_run("host");
}

/// The same on the first OpenCL device, where one exists (required when
/// `HETMEM_REQUIRE_OPENCL=1`, as in CI).
#[test]
fn quick_json_has_every_required_result_on_opencl() {
    if present("opencl", "HETMEM_REQUIRE_OPENCL") {
        check_quick_run("opencl");
    }
}

/// The same on the first wgpu adapter, where one exists (required when
/// `HETMEM_REQUIRE_WGPU=1`, as in CI, on Vulkan's CPU driver).
#[test]
fn quick_json_has_every_required_result_on_wgpu() {
    if present("wgpu", "HETMEM_REQUIRE_WGPU") {
        check_quick_run("wgpu");
    }
}

/// Whether `hetmem info` finds a device of `kind`; a failure without one if `require` is set
/// to 1, a SKIPPED line otherwise.
fn present(kind: &str, require: &str) -> bool {
    let info = hetmem(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let present = info["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kind"] == kind && k["available"] == true);
    if !present {
        assert!(
            std::env::var_os(require).is_none_or(|v| v != "1"),
            "{require}=1 but no {kind} device"
        );
        eprintln!("SKIPPED bench on {kind}: no {kind} device");
    }
    present
}

/// `hetmem info`'s first device of `kind`.
fn first_device(kind: &str) -> serde_json::Value {
    let info = hetmem(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let backends = info["backends"].as_array().unwrap();
    let of_kind = backends.iter().find(|k| k["kind"] == kind).unwrap();
    of_kind["devices"][0].clone()
}

/// Whether valgrind is installed (the `instructions.*` figures need it; CI installs it).
fn valgrind_present() -> bool {
    let present = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present || std::env::var_os("HETMEM_REQUIRE_VALGRIND").is_none_or(|v| v != "1"),
        "HETMEM_REQUIRE_VALGRIND=1 but valgrind is not installed"
    );
    present
}

fn check_quick_run(backend: &str) {
    let dir = std::env::temp_dir().join(format!("hetmem-bench-{backend}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, markdown, plots) = (
        dir.join("bench.json"),
        dir.join("bench.md"),
        dir.join("plots"),
    );
    let out = hetmem(&[
        "bench",
        "--quick",
        "--backend",
        backend,
        "--json",
        json.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
        "--plot",
        plots.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("valid JSON");
    assert_eq!(schema_errors("bench", &doc), Vec::<String>::new());
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["hetmem"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["backend"]["kind"], backend);
    assert!(doc["backend"]["name"].is_string());
    assert!(doc["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(doc["machine"]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(!doc["machine"]["os"].as_str().unwrap().is_empty());

    let results = doc["results"].as_array().unwrap();
    let mut required: Vec<String> = REQUIRED.iter().map(|s| s.to_string()).collect();
    if backend == "wgpu" {
        // Storage buffers never share; they map where the adapter's memory is the host's.
        let maps = first_device(backend)["capabilities"]["mapped_access"] == true;
        required.retain(|id| !id.starts_with("shared.") && (maps || !id.starts_with("map.")));
        for way in ["h2d", "d2h"] {
            for size in ["4KiB", "64KiB", "1MiB", "16MiB", "256MiB"] {
                required.push(format!("wgpu.transfer.{way}.{size}"));
            }
        }
        required.push("wgpu.alloc.pool_hit".to_owned());
        required.push("wgpu.transfer.batch.h2d.4KiBx1000".to_owned());
    }
    for way in ["h2d", "d2h", "d2d"] {
        for size in ["4KiB", "64KiB", "1MiB", "16MiB", "256MiB"] {
            required.push(format!("transfer.{way}.{size}"));
        }
    }
    for way in ["h2d", "d2h"] {
        for size in ["64KiB", "1MiB", "16MiB", "256MiB"] {
            required.push(format!("pinned.{way}.{size}"));
        }
    }
    if backend == "opencl" {
        required.push("interop.opencl.kernel_arg".to_owned());
        required.push("interop.opencl.kernel_arg.view".to_owned());
        required.push("transfer.batch.h2d.4KiBx1000.handwritten".to_owned());
        required.push("transfer.batch.h2d.4KiBx1000.handwritten.held".to_owned());
    }
    if valgrind_present() {
        for hot in ["alloc.pool_hit", "alloc.manager", "alloc.array_pool.1MiB"] {
            required.push(format!("instructions.{hot}"));
        }
        for hot in ["alloc.object_pool", "buffer.guard", "transfer.h2d.4KiB"] {
            required.push(format!("instructions.{hot}"));
        }
    }
    for id in &required {
        let r = results
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("missing result {id}"));
        let value = r["value"].as_f64().unwrap();
        let baseline = r["baseline"]["value"].as_f64().unwrap();
        let ratio = r["ratio"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{id}: value {value}");
        assert!(
            baseline.is_finite() && baseline > 0.0,
            "{id}: baseline {baseline}"
        );
        assert!(ratio.is_finite() && ratio > 0.0, "{id}: ratio {ratio}");
        let expected = match r["better"].as_str().unwrap() {
            "higher" => value / baseline,
            "lower" => baseline / value,
            other => panic!("{id}: better = {other}"),
        };
        assert!(
            (ratio - expected).abs() <= 1e-9 * expected.abs(),
            "{id}: ratio"
        );
        assert_eq!(r["category"], id.split('.').next().unwrap());
        assert!(!r["unit"].as_str().unwrap().is_empty());
        assert!(!r["baseline"]["name"].as_str().unwrap().is_empty());
        if id.starts_with("alloc.") {
            check_samples(id, r);
        }
    }
    assert_eq!(results.len(), required.len(), "no unexpected results");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let md = std::fs::read_to_string(&markdown).unwrap();
    for id in &required {
        assert!(stdout.contains(id.as_str()), "table lacks {id}");
        assert!(md.contains(&format!("| {id} |")), "markdown lacks {id}");
    }
    check_plots(&plots, &["bandwidth", "alloc-latency"]);
    let bandwidth = std::fs::read_to_string(plots.join("bandwidth.svg")).unwrap();
    for text in ["H2D bandwidth", "D2H bandwidth", "D2D bandwidth", "256 MiB"] {
        assert!(bandwidth.contains(text), "bandwidth.svg lacks {text:?}");
    }
    let latency = std::fs::read_to_string(plots.join("alloc-latency.svg")).unwrap();
    for id in REQUIRED.iter().filter(|id| id.starts_with("alloc.")) {
        assert!(latency.contains(id), "alloc-latency.svg lacks {id}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A latency figure keeps its samples, and its value is their median.
fn check_samples(id: &str, r: &serde_json::Value) {
    for (side, value) in [
        ("hetmem", &r["value"]),
        ("baseline", &r["baseline"]["value"]),
    ] {
        let mut samples: Vec<f64> = r["samples"][side]
            .as_array()
            .unwrap_or_else(|| panic!("{id}: no {side} samples"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(samples.len() >= 3, "{id}: {} samples", samples.len());
        assert!(samples.iter().all(|v| v.is_finite() && *v > 0.0), "{id}");
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        let value = value.as_f64().unwrap();
        assert!(
            (median - value).abs() <= 1e-9 * value,
            "{id} {side}: median"
        );
    }
}

/// Each named plot exists as an SVG document and a PNG image, and nothing else was drawn.
fn check_plots(dir: &std::path::Path, names: &[&str]) {
    let mut expected: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("{n}.png"), format!("{n}.svg")])
        .collect();
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, expected);
    for name in names {
        let png = std::fs::read(dir.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png is a PNG");
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}

#[test]
fn filters_and_bad_backends_are_reported() {
    let plots = std::env::temp_dir().join(format!("hetmem-plots-{}", std::process::id()));
    let out = hetmem(&[
        "bench",
        "--quick",
        "--filter",
        "alloc.object_pool",
        "--plot",
        plots.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("alloc.object_pool"));
    assert!(!stdout.contains("transfer."));
    // No transfer figures, so no bandwidth plot.
    check_plots(&plots, &["alloc-latency"]);
    std::fs::remove_dir_all(&plots).unwrap();

    for (args, message) in [
        (&["bench", "--backend", "tpu"][..], "unknown backend"),
        (&["bench", "--backend", "host:7"][..], "no index 7"),
        (&["bench", "--backend", "opencl:x"][..], "bad device index"),
        (
            &["bench", "--filter", "no-such-id"][..],
            "no result id contains",
        ),
        (
            &[
                "bench",
                "--quick",
                "--filter",
                "alloc.object_pool",
                "--plot",
                "/proc/hetmem-plots",
            ][..],
            "cannot create /proc/hetmem-plots",
        ),
    ] {
        let out = hetmem(args);
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// `--backend cuda` measures the first GPU, or says why there is none.
#[test]
fn cuda_is_measured_or_its_absence_explained() {
    let info = hetmem(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let cuda = info["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "cuda")
        .unwrap()
        .clone();
    if cuda["available"] == true {
        check_quick_run("cuda");
        return;
    }
    let out = hetmem(&["bench", "--quick", "--backend", "cuda"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cuda backend unavailable")
            && stderr.contains(cuda["reason"].as_str().unwrap()),
        "{stderr}"
    );
}
