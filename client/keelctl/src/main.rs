//! `keelctl`: the Keel command line. Parses arguments, runs the command on
//! a single-threaded runtime and turns failures into an exit code; all the
//! work lives in `keelctl::cli`.

use clap::Parser;
use keelctl::cli::{self, Cli, error::EXIT_USAGE};
use std::process::ExitCode;

/// Exit code when the process cannot even start its runtime.
const EXIT_STARTUP_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout (exit 0) and usage
            // errors to stderr (exit 2).
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: RUNTIME_FAILED: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    match runtime.block_on(cli::run(cli, &mut stdout, &mut stderr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = error.report(&mut stderr);
            ExitCode::from(error.exit_code())
        }
    }
}
