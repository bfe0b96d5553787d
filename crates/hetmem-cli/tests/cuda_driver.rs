//! The CUDA backend on machines where the driver is missing, too old or sees no GPU: `hetmem
//! info` reports CUDA as unavailable with the reason, and nothing panics (cudarc itself panics
//! on a missing library or symbol). Stand-in `libcuda.so` files built here with the C compiler
//! play the broken drivers; a real GPU machine runs the real thing (`tests/cuda.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The symbols hetmem checks for, read from its source so that the list cannot drift.
fn required_symbols() -> Vec<String> {
    let source = include_str!("../../hetmem/src/backend/cuda/driver.rs");
    let list = source
        .split_once("REQUIRED_SYMBOLS: &[&str] = &[")
        .and_then(|(_, rest)| rest.split_once("];"))
        .expect("driver.rs lists REQUIRED_SYMBOLS")
        .0;
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Builds `libcuda.so` from `c` into a fresh directory.
fn stub_driver(name: &str, c: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hetmem-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("stub.c");
    std::fs::write(&source, c).unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join("libcuda.so"))
        .arg(&source)
        .status()
        .expect("a C compiler (cc) is installed, as Rust's linker needs one");
    assert!(built.success());
    dir
}

/// `hetmem info --json`'s CUDA entry with the loader pointed at `dir`.
fn cuda_entry(dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hetmem"))
        .args(["info", "--json"])
        .env("LD_LIBRARY_PATH", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hetmem info failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cuda = info["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "cuda")
        .unwrap()
        .clone();
    assert_eq!(cuda["available"], false, "{cuda}");
    assert!(cuda["devices"].as_array().unwrap().is_empty());
    cuda
}

fn reason(cuda: &serde_json::Value) -> &str {
    cuda["reason"].as_str().unwrap()
}

#[test]
fn a_driver_without_the_needed_symbols_is_reported_not_called() {
    let dir = stub_driver(
        "old-cuda",
        "int cuDriverGetVersion(int *v) { *v = 9000; return 0; }\n",
    );
    let cuda = cuda_entry(&dir);
    assert!(reason(&cuda).contains("lacks cuInit"), "{}", reason(&cuda));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_driver_that_sees_no_gpu_is_reported() {
    // Every entry point answers CUDA_ERROR_NO_DEVICE (100), as a driver without a GPU does.
    let c: String = required_symbols()
        .iter()
        .map(|s| format!("int {s}() {{ return 100; }}\n"))
        .collect();
    let dir = stub_driver("no-gpu", &c);
    let cuda = cuda_entry(&dir);
    assert!(reason(&cuda).contains("sees no GPU"), "{}", reason(&cuda));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_failing_driver_is_reported_with_its_error_name() {
    // cuInit fails with CUDA_ERROR_NOT_INITIALIZED (3); the name comes from cuGetErrorName.
    let c: String = required_symbols()
        .iter()
        .map(|s| match s.as_str() {
            "cuInit" => "int cuInit(unsigned f) { return 3; }\n".to_owned(),
            "cuGetErrorName" => {
                "int cuGetErrorName(int e, const char **s) { *s = \"STUB_NOT_INITIALIZED\"; \
                 return 0; }\n"
                    .to_owned()
            }
            other => format!("int {other}() {{ return 3; }}\n"),
        })
        .collect();
    let dir = stub_driver("failing-cuda", &c);
    let cuda = cuda_entry(&dir);
    let reason = reason(&cuda);
    assert!(reason.contains("failed to initialise"), "{reason}");
    assert!(
        reason.contains("cuInit") && reason.contains("STUB_NOT_INITIALIZED"),
        "{reason}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
