use clap::Parser;
use tracing_subscriber::EnvFilter;

use phim::config::{
    ApiKeyCommand, AuditCommand, Cli, Command, LogFormat, ShareKeyCommand, StorageArgs,
};
use phim::redact::redact_url;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PHIM_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,jpeg2k=warn,openjp2=warn")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // One object per line: timestamp, level, target, fields (the
        // message among them), and the span fields of the request.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
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
                open_index(&storage).await?;
                tracing::info!(index = %redact_url(&url), "migrations applied");
                Ok(true)
            }
            Command::ApiKey(cmd) => api_key(cmd).await,
            Command::ShareKey(ShareKeyCommand::Rotate { storage }) => {
                let index = open_index(&storage).await?;
                let kid = phim::auth::share::rotate(index.as_ref()).await?;
                println!("share links are now signed with key {kid}; earlier links stay valid until they expire");
                Ok(true)
            }
            Command::Verify(args) => phim::verify::run(args).await,
            Command::Fsck(args) => phim::fsck::run(args).await,
            Command::Trash(cmd) => phim::trash::run(cmd).await,
            Command::Retention(cmd) => phim::retention::run(cmd).await,
            Command::Audit(AuditCommand::Verify { storage }) => {
                let index = open_index(&storage).await?;
                match phim::audit::verify::verify(index.as_ref()).await? {
                    phim::audit::verify::Verdict::Intact { rows, last_seq } => {
                        println!("audit trail intact: {rows} events, last {last_seq}");
                        Ok(true)
                    }
                    phim::audit::verify::Verdict::Broken { seq, why } => {
                        println!("audit trail BROKEN at event {seq}: {why}");
                        Ok(false)
                    }
                }
            }
        }
    });
    // Tasks still running past --shutdown-timeout (a request that never
    // ends, a blocking scan) do not hold the process: it exits.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn open_index(
    storage: &StorageArgs,
) -> Result<std::sync::Arc<dyn phim::index::Index>, String> {
    let url = storage.database_url();
    std::fs::create_dir_all(&storage.data_dir).map_err(|e| e.to_string())?;
    phim::index::open(&url, true)
        .await
        .map_err(|e| format!("{}: {e}", redact_url(&url)))
}

/// `phim api-key create|list|revoke`: the key goes to stdout once; the
/// rest of the output is for people.
async fn api_key(cmd: ApiKeyCommand) -> Result<bool, String> {
    match cmd {
        ApiKeyCommand::Create {
            name,
            role,
            storage,
        } => {
            let role = phim::auth::Role::parse(&role).ok_or_else(|| {
                format!(
                    "--role '{role}': expected admin, radiologist, clinician, modality or auditor"
                )
            })?;
            let index = open_index(&storage).await?;
            let key = phim::auth::api_keys::create(index.as_ref(), &name, role).await?;
            eprintln!("API key '{name}' ({role}) created; it is shown once, keep it now:");
            println!("{key}");
            Ok(true)
        }
        ApiKeyCommand::List { storage } => {
            let index = open_index(&storage).await?;
            let keys = index.api_keys().await.map_err(|e| e.to_string())?;
            println!("{:<24} {:<12} {:<22} revoked", "name", "role", "created");
            let when = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default()
            };
            for k in keys {
                println!(
                    "{:<24} {:<12} {:<22} {}",
                    k.name,
                    k.role,
                    when(k.created_ms),
                    k.revoked_ms.map(when).unwrap_or_else(|| "-".into())
                );
            }
            Ok(true)
        }
        ApiKeyCommand::Revoke { name, storage } => {
            let index = open_index(&storage).await?;
            if index
                .revoke_api_key(&name)
                .await
                .map_err(|e| e.to_string())?
            {
                eprintln!(
                    "API key '{name}' revoked (every server stops accepting it within {} s)",
                    phim::auth::KEY_CACHE_TTL.as_secs()
                );
                Ok(true)
            } else {
                Err(format!("no live API key named '{name}'"))
            }
        }
    }
}
