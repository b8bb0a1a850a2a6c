//! The `rebox` executable: parse the command line, run the command, report errors.

use std::process::ExitCode;

use clap::Parser;
use rebox::{cli, commands, ui};

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    rebox::init_crypto();
    let cli = cli::Cli::parse();
    ui::init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            ui::report_error(&err);
            ExitCode::from(1)
        }
    }
}
