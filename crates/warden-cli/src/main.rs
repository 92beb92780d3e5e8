//! The `warden` command.

mod policy;
mod run;
mod tiers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use warden_core::exit_code;

/// warden decides how isolated each task runs, enforces it, and adapts it
/// while the task runs.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WARDEN_LOG_FORMAT")]
    log_format: LogFormat,

    /// Log filter, e.g. `info` or `warden_backend=debug`.
    #[arg(long, global = true, default_value = "warn", env = "WARDEN_LOG")]
    log: String,

    /// Where warden keeps its state (temporary workspaces, later the task
    /// store). Tasks never see it.
    #[arg(long, global = true, default_value = "/var/lib/warden", env = "WARDEN_STATE_DIR")]
    state_dir: PathBuf,

    /// The Docker engine's socket (container tier).
    #[arg(long, global = true, default_value = "/var/run/docker.sock", env = "WARDEN_DOCKER_SOCKET")]
    docker_socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a sandbox and exit with its status.
    ///
    /// Exit status: the task's own; 128+N if it died of signal N; 137 when
    /// the memory limit killed it; 124 on timeout; 125 for warden's own
    /// errors; 126 if the command cannot be executed; 127 if not found.
    Run(Box<run::RunArgs>),
    /// Check, test and dry-run policy sets.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Show which tiers and runtimes this node offers.
    Tiers(tiers::TiersArgs),
}

fn init_logging(cli: &Cli) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit_code::WARDEN_ERROR } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warden: error: cannot start the runtime: {e}");
            return ExitCode::from(exit_code::WARDEN_ERROR as u8);
        }
    };
    let code = match cli.command {
        Command::Run(args) => runtime.block_on(run::run(*args, &cli.state_dir, &cli.docker_socket)),
        Command::Tiers(args) => runtime.block_on(tiers::run(&args, &cli.docker_socket)),
        Command::Policy(cmd) => policy::run(cmd).unwrap_or_else(|e| {
            eprintln!("warden: error: {e:#}");
            exit_code::WARDEN_ERROR
        }),
    };
    // A task's stdin may still be copied by a blocking read that never
    // ends (a caller holding the pipe open): do not wait for it.
    runtime.shutdown_background();
    ExitCode::from(code.clamp(0, 255) as u8)
}
