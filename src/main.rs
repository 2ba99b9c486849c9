use std::process::ExitCode;

use clap::Parser;

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
