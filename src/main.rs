use clap::Parser;
use tracing_subscriber::EnvFilter;

use phim::config::{redact_url, Cli, Command};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PHIM_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,jpeg2k=warn,openjp2=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => phim::server::serve(*args).await.map(|_| true),
            Command::Import(args) => phim::import::run(args).await.map(|s| s.failed.is_empty()),
            Command::Migrate(storage) => {
                let url = storage.database_url();
                std::fs::create_dir_all(&storage.data_dir).map_err(|e| e.to_string())?;
                phim::index::open(&url, true)
                    .await
                    .map_err(|e| format!("{}: {e}", redact_url(&url)))?;
                tracing::info!(index = %redact_url(&url), "migrations applied");
                Ok(true)
            }
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::from(2)
        }
    }
}
