//! `instructions.*`: instructions per operation on each hot path and on the floor it is held
//! against, counted by valgrind's callgrind — figures that hold still where times drift (a
//! 2-core VM, a busy machine). Each loop runs in a child process (`hetmem bench-loop`, hidden)
//! under callgrind, which counts only inside [`counted`] (`--toggle-collect`): set-up and other
//! threads stay out. On the host backend, whichever `--backend` is measured; without valgrind
//! the figures are left out, with a note on stderr.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::buffer::{BufferContext, Residency};
use hetmem::pool::{ArrayPool, CachingAllocator, ObjectPool};
use hetmem::transfer::TransferEngine;
use hetmem::{Error, MemoryManager, Result};

use super::harness::{Effort, Side};
use super::report::{Better, Measurement};
use super::Suite;

const MIB: usize = 1 << 20;

/// A hot path and the floor it is compared with.
struct HotLoop {
    id: &'static str,
    baseline: &'static str,
}

const LOOPS: [HotLoop; 6] = [
    HotLoop {
        id: "instructions.alloc.pool_hit",
        baseline: "pop + push on a thread's own Vec free list",
    },
    HotLoop {
        id: "instructions.alloc.manager",
        baseline: "a caching allocator's pool hit",
    },
    HotLoop {
        id: "instructions.alloc.array_pool.1MiB",
        baseline: "pop + push on a thread's own Vec free list",
    },
    HotLoop {
        id: "instructions.alloc.object_pool",
        baseline: "pop + push on a thread's own Vec free list",
    },
    HotLoop {
        id: "instructions.buffer.guard",
        baseline: "plain slice borrow",
    },
    HotLoop {
        id: "instructions.transfer.h2d.4KiB",
        baseline: "memcpy (copy_from_slice)",
    },
];

pub fn register(suite: &mut Suite) {
    let ids: Vec<&str> = LOOPS.iter().map(|l| l.id).collect();
    suite.case_of_several(&ids, |_, effort| measure(effort));
}

fn measure(effort: Effort) -> Result<Vec<Measurement>> {
    let present = Command::new("valgrind").arg("--version").output();
    if !present.is_ok_and(|o| o.status.success()) {
        eprintln!("instructions.*: left out, valgrind is not installed");
        return Ok(Vec::new());
    }
    let n = 2_000 * effort.scale as u64;
    LOOPS
        .iter()
        .map(|l| {
            let ours = per_iteration(l.id, Side::Hetmem, n)?;
            let floor = per_iteration(l.id, Side::Baseline, n)?;
            Ok(Measurement::new(
                l.id,
                ours,
                "instructions",
                Better::Lower,
                l.baseline,
                floor,
            ))
        })
        .collect()
}

/// Instructions per iteration of `id`'s loop on `side`, over `n` iterations.
fn per_iteration(id: &str, side: Side, n: u64) -> Result<f64> {
    let out = std::env::temp_dir().join(format!(
        "hetmem-callgrind-{}-{id}-{side:?}-{n}",
        std::process::id()
    ));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*instructions::counted*")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe()?)
        .args(["bench-loop", id, side_name(side), &n.to_string()])
        .output()?;
    if !status.status.success() {
        return Err(failed(format!(
            "valgrind on {id}: {}",
            String::from_utf8_lossy(&status.stderr)
        )));
    }
    let total = totals(&out);
    let _ = std::fs::remove_file(&out);
    Ok(total? as f64 / n as f64)
}

/// The `totals:` line of a callgrind output file.
fn totals(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| failed(format!("no totals in {}", path.display())))
}

fn failed(message: String) -> Error {
    Error::Os(std::io::Error::other(message))
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Hetmem => "hetmem",
        Side::Baseline => "baseline",
    }
}

/// Runs `op` `n` times: the only function whose instructions callgrind counts.
#[inline(never)]
fn counted(n: u64, mut op: impl FnMut() -> Result<()>) -> Result<()> {
    for _ in 0..n {
        op()?;
    }
    Ok(())
}

/// `hetmem bench-loop ID SIDE N`: runs one loop `n` times (what valgrind counts).
pub fn run_loop(id: &str, side: &str, n: u64) -> Result<()> {
    let hetmem = match side {
        "hetmem" => true,
        "baseline" => false,
        other => return Err(Error::InvalidArgument(format!("no side {other:?}"))),
    };
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let free_list = |n: u64| {
        let mut list = vec![vec![0u8; 64]];
        counted(n, || {
            let item = black_box(&mut list).pop();
            list.push(black_box(item.unwrap_or_default()));
            Ok(())
        })
    };
    match (id, hetmem) {
        ("instructions.alloc.pool_hit", true) => {
            let pool = CachingAllocator::new(backend);
            drop(pool.allocate(MIB)?);
            counted(n, || pool.allocate(MIB).map(|x| drop(black_box(x))))
        }
        ("instructions.alloc.manager", true) => {
            let manager = MemoryManager::new(backend)?;
            drop(manager.alloc::<u8>(MIB)?);
            counted(n, || manager.alloc::<u8>(MIB).map(|x| drop(black_box(x))))
        }
        ("instructions.alloc.manager", false) => {
            let pool = CachingAllocator::new(backend);
            drop(pool.allocate(MIB)?);
            counted(n, || pool.allocate(MIB).map(|x| drop(black_box(x))))
        }
        ("instructions.alloc.array_pool.1MiB", true) => {
            let pool = ArrayPool::<f32>::new();
            drop(pool.rent(MIB / 4)?);
            counted(n, || pool.rent(MIB / 4).map(|x| drop(black_box(x))))
        }
        ("instructions.alloc.object_pool", true) => {
            let pool = ObjectPool::builder(|| Vec::<u8>::with_capacity(4096))
                .reset(|v: &mut Vec<u8>| {
                    v.clear();
                    true
                })
                .build()?;
            pool.get().push(1);
            counted(n, || {
                pool.get().push(black_box(1));
                Ok(())
            })
        }
        (
            "instructions.alloc.pool_hit"
            | "instructions.alloc.array_pool.1MiB"
            | "instructions.alloc.object_pool",
            false,
        ) => free_list(n),
        ("instructions.buffer.guard", true) => {
            let ctx = BufferContext::new(backend);
            let mut buf = ctx.alloc_with::<f32>(1 << 18, Residency::Mirrored)?;
            buf.host_discard()?.fill(1.0);
            buf.sync()?.wait()?;
            black_box(buf.host()?[7]);
            counted(n, || {
                black_box(buf.host()?[7]);
                Ok(())
            })
        }
        ("instructions.buffer.guard", false) => {
            let plain = vec![1.0f32; 1 << 18];
            counted(n, || {
                black_box(black_box(&plain[..])[7]);
                Ok(())
            })
        }
        ("instructions.transfer.h2d.4KiB", true) => {
            let engine = TransferEngine::new(backend.clone());
            let mut block = backend.allocate(4096)?;
            let host = vec![7u8; 4096];
            engine.write(&mut block, 0, &host)?;
            counted(n, || engine.write(&mut block, 0, black_box(&host)))?;
            backend.release(block)
        }
        ("instructions.transfer.h2d.4KiB", false) => {
            let (host, mut copy) = (vec![7u8; 4096], vec![0u8; 4096]);
            counted(n, || {
                black_box(&mut copy[..]).copy_from_slice(black_box(&host));
                Ok(())
            })
        }
        (other, _) => Err(Error::InvalidArgument(format!("no hot loop {other:?}"))),
    }
}
