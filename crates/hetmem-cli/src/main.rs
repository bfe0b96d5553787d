//! `hetmem`: the command-line face of the hetmem library.

mod bench;
mod info;
mod output;
mod replay;
mod schema;

use clap::{Parser, Subcommand};

/// Memory for heterogeneous compute: backends, pools, unified buffers and transfers.
#[derive(Parser)]
#[command(name = "hetmem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List this machine's backends (host, OpenCL, CUDA) with their memory and capabilities.
    Info(info::InfoArgs),
    /// Measure hetmem against same-run baselines: transfers, allocation, usage patterns,
    /// unified buffers.
    Bench(bench::BenchArgs),
    /// Replay a recorded allocation trace (`HETMEM_TRACE`, or RMM's CSV log) against several
    /// allocator configurations: hit rate, backend allocations, peak reserved, fragmentation.
    Replay(replay::ReplayArgs),
    /// Print the JSON schema of what `info --json`, `bench --json` or `replay --json` writes.
    Schema(schema::SchemaArgs),
    /// Run one of `bench`'s hot loops for valgrind to count (`bench` starts it).
    #[command(hide = true)]
    BenchLoop(bench::LoopArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::BenchLoop(args) => bench::run_loop(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hetmem: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
