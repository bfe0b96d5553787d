//! `HETMEM_TRACE=path`: every manager of the process records into one trace, which reads back
//! as a valid trace (ids never collide between managers). One test in its own binary: it sets
//! the variable before any manager reads it.

use hetmem::record::{Action, Trace};
use hetmem::MemoryManager;

#[test]
fn every_manager_streams_to_the_one_trace() {
    let dir = std::env::temp_dir().join(format!("hetmem-trace-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.jsonl");
    // No other thread of this binary reads the environment now (setting it is unsafe from
    // edition 2024 on for that reason).
    std::env::set_var("HETMEM_TRACE", &path);
    let (first, second) = (MemoryManager::host(), MemoryManager::host());
    let a = first.alloc::<u8>(4096).unwrap();
    let b = second.alloc::<u8>(8192).unwrap();
    drop((a, b));
    first.recorder().unwrap().flush().unwrap();
    let trace = Trace::read(&path).expect("a valid trace: no id used twice while live");
    let allocations: Vec<u64> = (trace.events.iter())
        .filter(|e| e.action == Action::Alloc)
        .map(|e| e.bytes)
        .collect();
    assert_eq!(allocations, [4096, 8192]);
    assert_eq!(trace.live_bytes().last(), Some(&0));
    std::fs::remove_dir_all(&dir).unwrap();
}
