//! `hetmem schema`: the JSON schema of what `info --json`, `bench --json` and `replay --json`
//! write, generated from the types that write it (schemars), so that it cannot drift from them.
//! `docs/schemas/` publishes the same schemas; a test keeps the two equal.

use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct SchemaArgs {
    /// The command whose JSON to describe.
    command: Described,
}

#[derive(Clone, Copy, ValueEnum)]
enum Described {
    Info,
    Bench,
    Replay,
}

pub fn run(args: &SchemaArgs) -> Result<(), Box<dyn std::error::Error>> {
    let schema = match args.command {
        Described::Info => crate::info::schema(),
        Described::Bench => crate::bench::schema(),
        Described::Replay => crate::replay::schema(),
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}
