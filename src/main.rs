//! Wiring only: parse the command line, set up logging, run the subcommand. A fatal
//! agent error is also written to /dev/termination-log so `kubectl describe pod` shows it.

use clap::{CommandFactory, FromArgMatches};
use pullprobe::cli::{self, exit, Cli, Command};

fn init_cli_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() {
    // As the kubectl plugin (`kubectl-pullprobe`), kubectl passes the words after
    // `kubectl pullprobe`, so the arguments are the same; only help says `kubectl pullprobe`.
    let argv0 = std::env::args().next().unwrap_or_default();
    let matches = Cli::command().bin_name(cli::bin_name(&argv0)).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
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
            Command::Check(args) => {
                init_cli_logging();
                match cli::check::run(*args).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("pullprobe check: {e}");
                        exit::USAGE
                    }
                }
            }
            Command::Plan(args) => {
                init_cli_logging();
                match cli::plan::run(*args).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("pullprobe plan: {e}");
                        exit::USAGE
                    }
                }
            }
            Command::Preflight(args) => {
                init_cli_logging();
                match cli::preflight::run(*args).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("pullprobe preflight: {e}");
                        exit::USAGE
                    }
                }
            }
            Command::Status(args) => {
                init_cli_logging();
                match cli::status::run(*args).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("pullprobe status: {e}");
                        exit::USAGE
                    }
                }
            }
            Command::Controller(args) => {
                pullprobe::controller::init_logging(args.log_format);
                match pullprobe::controller::run_controller(*args).await {
                    Ok(()) => exit::READY,
                    Err(e) => {
                        let msg = format!("pullprobe controller: {e}");
                        eprintln!("{msg}");
                        let _ = std::fs::write("/dev/termination-log", &msg);
                        exit::USAGE
                    }
                }
            }
            Command::Agent(args) => match pullprobe::agent::run_agent(*args).await {
                Ok(()) => exit::READY,
                Err(e) => {
                    let msg = format!("pullprobe agent: {e}");
                    eprintln!("{msg}");
                    // Kubernetes reads this file into the container's last state.
                    let _ = std::fs::write("/dev/termination-log", &msg);
                    exit::USAGE
                }
            },
        }
    });
    std::process::exit(code);
}
