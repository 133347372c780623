//! Wiring only: parse the command line, set up logging, run the subcommand.

use clap::Parser;
use pullprobe::cli::{self, exit, Cli, Command};

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pullprobe: cannot start the async runtime: {e}");
            std::process::exit(exit::USAGE);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => match cli::check::run(args).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("pullprobe check: {e}");
                    exit::USAGE
                }
            },
        }
    });
    std::process::exit(code);
}
