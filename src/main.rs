use std::process::ExitCode;

use clap::Parser;

/// glibc's allocator spends a replay's time giving pages back and faulting them in again
/// as each batch of JSON is parsed and dropped; mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    execops::telemetry::init_logging();
    match execops::cli::run(execops::cli::Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("execops: {error:#}");
            ExitCode::FAILURE
        }
    }
}
