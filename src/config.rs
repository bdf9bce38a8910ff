//! Configuration: one set of clap structs, flags with environment
//! fallbacks, validated at start-up and logged without secrets.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ingest::DuplicatePolicy;
use crate::store::{S3Options, StoreError, StoreLocation};

#[derive(Debug, Parser)]
#[command(
    name = "phim",
    version,
    about = "Phim: an open-source PACS (DICOMweb image store)"
)]
pub struct Cli {
    /// Log lines as text for people, or one JSON object per line for a
    /// log pipeline (the level filter is PHIM_LOG, e.g. "info,phim=debug").
    #[arg(long, global = true, env = "PHIM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the DICOMweb server (runs pending migrations first).
    Serve(Box<ServeArgs>),
    /// Import DICOM files and folders through the ingest pipeline.
    Import(ImportArgs),
    /// Run pending index migrations and exit.
    Migrate(StorageArgs),
    /// Create, list and revoke API keys for machines (modalities, the EMR, scripts).
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Read every stored object back and check it against the SHA-256 the
    /// index recorded; exit 1 and list the instances that changed or are missing.
    Verify(VerifyArgs),
    /// Find stored objects no index row points at (after a crash between
    /// store and index); with --repair, index them. Exit 1 when some are left.
    Fsck(FsckArgs),
    /// Rotate the key that signs share links (links signed before stay valid until they expire).
    #[command(subcommand)]
    ShareKey(ShareKeyCommand),
    /// List and restore deleted studies (kept for --trash-retention before
    /// they are purged).
    #[command(subcommand)]
    Trash(TrashCommand),
    /// What the retention rules (--retention) send to the trash.
    #[command(subcommand)]
    Retention(RetentionCommand),
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// The studies due now (or within --within days): study, patient ID,
    /// accession number, date, modalities, the day they are due; those an
    /// admin keeps are marked KEPT.
    Report {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        rules: RetentionArgs,
        /// Also the studies due within this many days.
        #[arg(long, default_value_t = 0)]
        within: u64,
        /// One JSON object per study.
        #[arg(long)]
        json: bool,
    },
}

/// Retention rules (`crate::retention`).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Days a study is kept from its Study Date: `DAYS` for every study,
    /// `MODALITY=DAYS` for a modality (repeat or comma-separate, e.g.
    /// `--retention 3650,MG=7300,US=365`). A study takes the longest rule of
    /// its modalities (a modality without one takes the global rule); with
    /// no rule at all it is kept for ever. Due studies go to the trash.
    #[arg(long = "retention", env = "PHIM_RETENTION", value_delimiter = ',')]
    pub(crate) retention: Vec<String>,
    /// How often the retention job looks for due studies (once across all servers).
    #[arg(long, env = "PHIM_RETENTION_INTERVAL", default_value = "1d", value_parser = parse_duration)]
    pub(crate) retention_interval: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// The studies in the trash: what they were, who deleted them, when they go.
    List {
        #[command(flatten)]
        storage: StorageArgs,
        /// One JSON object per study instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Index a study's trashed instances again (through the ingest pipeline).
    /// Exit 1 when some could not be restored.
    Restore {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        ingest: IngestArgs,
        /// The Study Instance UID.
        study: String,
    },
}

/// Parses a duration such as `7d`, `12h`, `30s` or `0` (humantime's format).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}': {e} (e.g. 7d, 12h, 30s, 0)"))
}

#[derive(Debug, Subcommand)]
pub enum ShareKeyCommand {
    /// Make a new signing key (and drop keys older than the longest link lifetime).
    Rotate {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it (once: only its hash is kept).
    Create {
        /// A name for the key (who uses it), e.g. CT-ROOM-2.
        #[arg(long)]
        name: String,
        /// admin, radiologist, clinician, modality or auditor.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List the keys (names, roles, dates; never the keys).
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Revoke the live key of that name.
    Revoke {
        name: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit chain; exit 1 and name the first bad row if it was tampered with.
    Verify {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

/// `phim fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Send each orphan through the ingest pipeline again (it is indexed
    /// under the same key); without it, only report.
    #[arg(long)]
    pub repair: bool,
    /// Seconds an orphan must be old to be counted (younger ones may be
    /// ingests in flight).
    #[arg(long, default_value_t = 3600)]
    pub min_age: u64,
}

/// `phim verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Objects read at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// Where the index and the objects live.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Data folder: SQLite index, filesystem objects and spool files.
    #[arg(long, env = "PHIM_DATA_DIR", default_value = "./phim-data")]
    pub data_dir: PathBuf,
    /// Index database: postgres://… or sqlite://… (default: SQLite file in the data folder).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Object store: file://PATH, s3://BUCKET[/PREFIX] or memory:// (default: objects/ in the data folder).
    #[arg(long, env = "PHIM_STORE")]
    pub store: Option<String>,
    /// S3 endpoint URL for MinIO, Garage, Ceph… (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "PHIM_S3_ENDPOINT")]
    pub(crate) s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "PHIM_S3_REGION")]
    pub(crate) s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints.
    #[arg(long, env = "PHIM_ALLOW_HTTP")]
    pub allow_http: bool,
    /// Seconds a failing S3 request is retried (with backoff) before it
    /// fails: a STOW then answers A700 (out of resources) and /readyz 503.
    #[arg(long, env = "PHIM_S3_RETRY_TIMEOUT", default_value_t = 20)]
    pub(crate) s3_retry_timeout: u64,
}

impl StorageArgs {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("index.db").display()),
        }
    }

    pub(crate) fn store_location(&self) -> Result<StoreLocation, StoreError> {
        match &self.store {
            Some(s) => StoreLocation::parse(s),
            None => Ok(StoreLocation::File(self.data_dir.join("objects"))),
        }
    }

    pub(crate) fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            allow_http: self.allow_http,
            retry_timeout: Some(std::time::Duration::from_secs(self.s3_retry_timeout)),
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
}

/// Options of the ingest pipeline shared by `serve` and `import`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Same SOP Instance UID with different bytes: reject (0111) or replace.
    #[arg(long, env = "PHIM_ON_DUPLICATE", value_enum, default_value = "reject")]
    pub on_duplicate: DuplicatePolicy,
    /// Largest instance accepted, in bytes.
    #[arg(long, env = "PHIM_MAX_INSTANCE_SIZE", default_value_t = 4 << 30)]
    pub max_instance_size: u64,
    /// Instances scanned, stored and indexed at once.
    #[arg(long, env = "PHIM_INGEST_CONCURRENCY", default_value_t = 8)]
    pub(crate) ingest_concurrency: usize,
    /// Specific Character Set assumed for instances without (0008,0005), e.g. "ISO_IR 100", "ISO_IR 192", "GB18030".
    #[arg(long, env = "PHIM_DEFAULT_CHARSET", default_value = "ISO_IR 100")]
    pub default_charset: String,
    /// How long deleted (and IOCM-rejected) studies, series and instances stay in the trash,
    /// restorable with `phim trash restore`, before the purge job deletes
    /// their objects (`7d`, `12h`, `30s`; `0`: purge at once).
    #[arg(long, env = "PHIM_TRASH_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub(crate) trash_retention: std::time::Duration,
}

impl IngestArgs {
    /// The default character set, validated.
    pub fn default_charset(&self) -> Result<crate::dicom::text::Charset, String> {
        let c = crate::dicom::text::Charset::from_declared(&self.default_charset);
        if c.unknown {
            return Err(format!(
                "--default-charset '{}' is not a Specific Character Set term (PS3.3 C.12.1.1.2)",
                self.default_charset
            ));
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, env = "PHIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Public base URL used in RetrieveURL and BulkDataURI (default: from the request's Host).
    #[arg(long, env = "PHIM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Folder of the built web viewer, served at `/` (404 with a hint when missing).
    #[arg(long, env = "PHIM_VIEWER_DIR", default_value = "viewer/dist")]
    pub viewer_dir: std::path::PathBuf,
    /// Threads decoding, rendering and transcoding pixels (0: one per core).
    #[arg(long, env = "PHIM_IMAGING_THREADS", default_value_t = 0)]
    pub(crate) imaging_threads: usize,
    /// Make series thumbnails in the background after ingest ("false" to
    /// make them only when asked for).
    #[arg(long, env = "PHIM_THUMBNAILS_AT_INGEST", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) thumbnails_at_ingest: bool,
    /// On SIGTERM or Ctrl-C: seconds to let requests and DICOM
    /// associations in flight finish (no new ones are accepted) before
    /// exiting anyway.
    #[arg(long, env = "PHIM_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub(crate) shutdown_timeout: u64,
    /// HTTP connections open at once (more wait to be accepted); bounded by
    /// the open-file limit, which start-up raises to its maximum.
    #[arg(long, env = "PHIM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Seconds a client has to send a request's head (line and headers),
    /// also between requests on a kept-alive connection; then it is closed.
    #[arg(long, env = "PHIM_HTTP_HEADER_TIMEOUT", default_value_t = 30)]
    pub(crate) http_header_timeout: u64,
    /// Seconds a request body may go without a byte arriving (a STOW-RS
    /// sent slowly on purpose holds an ingest slot and a spool file); then
    /// the request fails with 408 and its connection is closed. Bodies
    /// that keep arriving may take as long as they need.
    #[arg(long, env = "PHIM_HTTP_BODY_TIMEOUT", default_value_t = 60)]
    pub(crate) http_body_timeout: u64,
    #[command(flatten)]
    pub(crate) jobs: JobArgs,
    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
    #[command(flatten)]
    pub(crate) dimse: DimseArgs,
    #[command(flatten)]
    pub emr: EmrArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The background job queue (`jobs` in the index, shared by every server).
#[derive(Debug, Clone, Args)]
pub(crate) struct JobArgs {
    /// Seconds a claimed job stays hidden from other servers; renewed
    /// every third of it while the job runs, so a job of a server that dies
    /// is taken over by another this long after.
    #[arg(long, env = "PHIM_JOB_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) job_lease: u64,
    /// Jobs this server runs at once.
    #[arg(long, env = "PHIM_JOB_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub(crate) job_concurrency: u64,
    /// Seconds between background runs of `phim fsck --repair` (once
    /// across all servers; 0: never).
    #[arg(long, env = "PHIM_FSCK_INTERVAL", default_value_t = 86_400)]
    pub(crate) fsck_interval: u64,
    /// Seconds an unindexed object must be old before the background fsck
    /// indexes it (younger ones may be ingests in flight).
    #[arg(long, env = "PHIM_FSCK_MIN_AGE", default_value_t = 3600)]
    pub(crate) fsck_min_age: u64,
    /// How often the purge job looks for trashed objects past their
    /// retention (once across all servers).
    #[arg(long, env = "PHIM_TRASH_PURGE_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub(crate) trash_purge_interval: std::time::Duration,
}

/// Limits on the shape of one request (the README's "Limits" table).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Parts (instances) in one STOW request; more: 413, the parts after the limit are not read.
    #[arg(long, env = "PHIM_STOW_MAX_PARTS", default_value_t = 10_000)]
    pub(crate) stow_max_parts: usize,
    /// Bytes of one STOW part's MIME header block.
    #[arg(long, env = "PHIM_STOW_MAX_PART_HEADER", default_value_t = 16 << 10)]
    pub(crate) stow_max_part_header: usize,
    /// Bytes of all part header blocks of one STOW request.
    #[arg(long, env = "PHIM_STOW_MAX_HEADER_BYTES", default_value_t = 16 << 20)]
    pub(crate) stow_max_header_bytes: u64,
    /// Failed instances listed one by one in a STOW response (the rest are summarised).
    #[arg(long, env = "PHIM_STOW_MAX_FAILURES_LISTED", default_value_t = 1_000)]
    pub(crate) stow_max_failures_listed: usize,
    /// Frames named in one frame list (…/frames/1,2,3).
    #[arg(long, env = "PHIM_MAX_FRAMES", default_value_t = 10_000)]
    pub(crate) max_frames: usize,
}

impl LimitArgs {
    pub fn config(&self) -> Result<crate::dicomweb::limits::RequestLimits, String> {
        let l = crate::dicomweb::limits::RequestLimits {
            stow_max_parts: self.stow_max_parts,
            stow_max_part_header: self.stow_max_part_header,
            stow_max_header_bytes: self.stow_max_header_bytes,
            stow_max_failures_listed: self.stow_max_failures_listed,
            max_frames: self.max_frames,
        };
        l.validate()?;
        Ok(l)
    }
}

/// Where audit events go besides the index's audit table.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// ATNA audit repository: tcp://host:port or tls://host:port (RFC 5424 syslog, RFC 5425 framing).
    #[arg(long, env = "PHIM_AUDIT_SYSLOG")]
    pub(crate) audit_syslog: Option<String>,
    /// PEM CA certificates that sign the audit repository's TLS certificate (default: the system's).
    #[arg(long, env = "PHIM_AUDIT_SYSLOG_CA")]
    pub(crate) audit_syslog_ca: Option<PathBuf>,
}

impl AuditArgs {
    pub fn target(&self) -> Result<Option<crate::audit::atna::SyslogTarget>, String> {
        self.audit_syslog
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| crate::audit::atna::SyslogTarget::parse(u, self.audit_syslog_ca.as_deref()))
            .transpose()
    }
}

/// TLS for HTTPS and DICOM TLS (one certificate for both).
#[derive(Debug, Clone, Args)]
pub(crate) struct TlsArgs {
    /// PEM certificate chain: HTTPS on --listen, and DICOM TLS on --dicom-tls-listen.
    #[arg(long, env = "PHIM_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PHIM_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// DICOM TLS address (PS3.15 Annex B; default 127.0.0.1:2762 when --tls-cert is given), or "off".
    #[arg(long, env = "PHIM_DICOM_TLS_LISTEN")]
    pub(crate) dicom_tls_listen: Option<String>,
    /// PEM CA certificates: DICOM TLS peers must present a client certificate signed by one.
    #[arg(long, env = "PHIM_DICOM_TLS_CA")]
    pub(crate) dicom_tls_ca: Option<PathBuf>,
}

/// What [`TlsArgs`] asks for, loaded.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    pub https: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    pub dicom: Option<(
        SocketAddr,
        std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    )>,
    pub(crate) dicom_client_certs: bool,
}

impl TlsArgs {
    pub(crate) fn setup(&self) -> Result<TlsSetup, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            if self.dicom_tls_ca.is_some()
                || self
                    .dicom_tls_listen
                    .as_deref()
                    .is_some_and(|l| !l.eq_ignore_ascii_case("off"))
            {
                return Err(
                    "--dicom-tls-listen and --dicom-tls-ca need --tls-cert and --tls-key".into(),
                );
            }
            return Ok(TlsSetup {
                https: None,
                dicom: None,
                dicom_client_certs: false,
            });
        };
        let https = crate::tls::server_config(cert, key, None, &[b"http/1.1"])?;
        let listen = self.dicom_tls_listen.as_deref().unwrap_or("127.0.0.1:2762");
        let dicom = if listen.eq_ignore_ascii_case("off") {
            None
        } else {
            let addr = listen
                .parse()
                .map_err(|e| format!("--dicom-tls-listen '{listen}': {e}"))?;
            Some((
                addr,
                crate::tls::server_config(cert, key, self.dicom_tls_ca.as_deref(), &[])?,
            ))
        };
        Ok(TlsSetup {
            https: Some(https),
            dicom,
            dicom_client_certs: self.dicom_tls_ca.is_some(),
        })
    }
}

/// Who may use the server (see the README's role table).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Require credentials (API keys, and access tokens with --oidc-issuer) on every protected route.
    #[arg(long, env = "PHIM_REQUIRE_AUTH")]
    pub(crate) require_auth: bool,
    /// Serve without authentication on a non-loopback address (refused otherwise).
    #[arg(long, env = "PHIM_ALLOW_ANONYMOUS")]
    pub(crate) allow_anonymous: bool,
    /// OpenID Connect issuer URL (discovery at ISSUER/.well-known/openid-configuration); implies --require-auth.
    #[arg(long, env = "PHIM_OIDC_ISSUER")]
    pub(crate) oidc_issuer: Option<String>,
    /// Audience (`aud`) every access token must name.
    #[arg(long, env = "PHIM_OIDC_AUDIENCE")]
    pub(crate) oidc_audience: Option<String>,
    /// Claim holding the roles, a dotted path (Keycloak's realm_access.roles is read too).
    #[arg(long, env = "PHIM_OIDC_ROLES_CLAIM", default_value = "roles")]
    pub(crate) oidc_roles_claim: String,
    /// The viewer's public OpenID client (authorization code flow with PKCE).
    #[arg(long, env = "PHIM_OIDC_CLIENT_ID")]
    pub(crate) oidc_client_id: Option<String>,
    /// Allowed clock difference for token exp/nbf, in seconds.
    #[arg(long, env = "PHIM_OIDC_CLOCK_SKEW", default_value_t = 60)]
    pub(crate) oidc_clock_skew: u64,
    /// /readyz answers without credentials ("false": admins only).
    #[arg(long, env = "PHIM_READYZ_PUBLIC", default_value_t = true, action = clap::ArgAction::Set)]
    pub readyz_public: bool,
    /// /metrics (Prometheus) answers without credentials; by default admins
    /// only (an API key with the admin role for the scraper).
    #[arg(long, env = "PHIM_METRICS_PUBLIC", default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) metrics_public: bool,
    /// Requests per second per identity (user, key, AE; address without one); 0: no limit.
    #[arg(long, env = "PHIM_RATE_LIMIT", default_value_t = 0.0)]
    pub(crate) rate_limit: f64,
    /// Requests an identity may make at once above --rate-limit.
    #[arg(long, env = "PHIM_RATE_BURST", default_value_t = 200.0)]
    pub(crate) rate_burst: f64,
    /// STOW requests running at once per identity; 0: no limit.
    #[arg(long, env = "PHIM_MAX_CONCURRENT_STOW", default_value_t = 8)]
    pub(crate) max_concurrent_stow: usize,
    /// Requests of any kind running at once per identity (until the answer is sent); 0: no limit.
    #[arg(long, env = "PHIM_MAX_CONCURRENT_REQUESTS", default_value_t = 64)]
    pub(crate) max_concurrent_requests: usize,
    /// Largest request body of a role, ROLE=BYTES (K, M, G suffixes; repeatable or comma-separated).
    #[arg(long = "max-body", env = "PHIM_MAX_BODY", value_delimiter = ',')]
    pub(crate) max_body: Vec<String>,
    /// Origins allowed cross-origin requests (CORS), e.g. https://emr.example; none by default.
    #[arg(long = "cors-origin", env = "PHIM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

impl AuthArgs {
    /// The authentication configuration, validated.
    pub fn config(&self) -> Result<crate::auth::AuthConfig, String> {
        let oidc = match self
            .oidc_issuer
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(issuer) => {
                let parsed = url::Url::parse(issuer)
                    .map_err(|e| format!("--oidc-issuer '{issuer}': {e}"))?;
                if !matches!(parsed.scheme(), "https" | "http") {
                    return Err(format!(
                        "--oidc-issuer '{issuer}': expected an https:// (for tests, http://) URL"
                    ));
                }
                let audience = self
                    .oidc_audience
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .ok_or("--oidc-issuer needs --oidc-audience (the `aud` Phim's tokens carry)")?;
                Some(crate::auth::oidc::OidcConfig {
                    issuer: issuer.to_owned(),
                    audience: audience.to_owned(),
                    roles_claim: self.oidc_roles_claim.trim().to_owned(),
                    client_id: self.oidc_client_id.clone().filter(|c| !c.trim().is_empty()),
                    leeway: std::time::Duration::from_secs(self.oidc_clock_skew.min(600)),
                })
            }
        };
        let max_body = self
            .max_body
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| crate::auth::limits::parse_max_body(e))
            .collect::<Result<Vec<_>, _>>()?;
        if !self.rate_limit.is_finite()
            || self.rate_limit < 0.0
            || !self.rate_burst.is_finite()
            || self.rate_burst < 1.0
        {
            return Err("--rate-limit must be >= 0 and --rate-burst >= 1".into());
        }
        let mut cors_origins = Vec::new();
        for o in self
            .cors_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/'))
            .filter(|o| !o.is_empty())
        {
            let u = url::Url::parse(o).map_err(|e| format!("--cors-origin '{o}': {e}"))?;
            if !matches!(u.scheme(), "http" | "https") || u.path() != "/" || u.query().is_some() {
                return Err(format!(
                    "--cors-origin '{o}': expected scheme://host[:port]"
                ));
            }
            cors_origins.push(o.to_owned());
        }
        Ok(crate::auth::AuthConfig {
            required: self.require_auth || oidc.is_some(),
            oidc,
            readyz_public: self.readyz_public,
            metrics_public: self.metrics_public,
            limits: crate::auth::limits::LimitsConfig {
                rate: self.rate_limit,
                burst: self.rate_burst,
                max_concurrent_stow: self.max_concurrent_stow,
                max_concurrent_requests: self.max_concurrent_requests,
                max_body,
            },
            cors_origins,
        })
    }
}

/// The hospital EMR side: record links, change notifications, webhooks.
#[derive(Debug, Clone, Args)]
pub struct EmrArgs {
    /// EMR link for studies without an explicit one, e.g.
    /// https://emr.example/patients/{PatientID}/orders/{AccessionNumber}
    /// (placeholders: study-level attribute keywords; values percent-encoded).
    #[arg(long, env = "PHIM_EMR_URL_TEMPLATE")]
    pub(crate) emr_url_template: Option<String>,
    /// Seconds without new instances after which a study is announced as stable.
    #[arg(long, env = "PHIM_STABLE_AFTER", default_value_t = 60)]
    pub(crate) stable_after: u64,
    /// URL that receives each change event as a JSON POST (repeatable or comma-separated).
    #[arg(long = "webhook-url", env = "PHIM_WEBHOOK_URLS", value_delimiter = ',')]
    pub(crate) webhook_urls: Vec<String>,
    /// Attempts per webhook delivery before it is logged as failed.
    #[arg(long, env = "PHIM_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub(crate) webhook_max_attempts: u32,
    /// UTC offset of DICOM dates and times (e.g. +07:00), for FHIR
    /// `started`; unset: `started` is the study date alone.
    #[arg(long, env = "PHIM_TIMEZONE")]
    pub(crate) timezone: Option<String>,
    /// Bearer token the EMR must send to set or remove EMR links (at least
    /// 16 characters; prefer the environment variable to the command line).
    #[arg(long, env = "PHIM_EMR_API_TOKEN", hide_env_values = true)]
    pub(crate) emr_api_token: Option<String>,
}

/// The DICOM (DIMSE) listener for modalities and workstations.
#[derive(Debug, Clone, Args)]
pub(crate) struct DimseArgs {
    /// DICOM listen address, or "off" to disable DIMSE.
    #[arg(long, env = "PHIM_DICOM_LISTEN", default_value = "127.0.0.1:11112")]
    pub(crate) dicom_listen: String,
    /// Our AE title (the called AE title peers must use).
    #[arg(long, env = "PHIM_AE_TITLE", default_value = "PHIM")]
    pub(crate) ae_title: String,
    /// Calling AE titles allowed to associate (repeatable or comma-separated; default: any).
    #[arg(long = "dicom-allow", env = "PHIM_DICOM_ALLOW", value_delimiter = ',')]
    pub(crate) dicom_allow: Vec<String>,
    /// Associations served at once; more are rejected (transient, local limit exceeded).
    #[arg(long, env = "PHIM_DICOM_MAX_ASSOCIATIONS", default_value_t = 32)]
    pub(crate) dicom_max_associations: usize,
    /// ARTIM, read and write timeout of associations, in seconds.
    #[arg(long, env = "PHIM_DICOM_TIMEOUT", default_value_t = 60)]
    pub(crate) dicom_timeout: u64,
    /// Largest P-DATA PDU accepted, in bytes.
    #[arg(long, env = "PHIM_DICOM_MAX_PDU", default_value_t = 262_144)]
    pub(crate) dicom_max_pdu: u32,
    /// Remote AEs for C-MOVE destinations and storage commitment replies:
    /// TITLE=host:port (repeatable or comma-separated).
    #[arg(long = "remote-ae", env = "PHIM_REMOTE_AE", value_delimiter = ',')]
    pub(crate) remote_ae: Vec<String>,
    /// Instances one C-MOVE or C-GET may retrieve at most.
    #[arg(long, env = "PHIM_DICOM_MAX_RETRIEVE", default_value_t = 100_000)]
    pub(crate) dicom_max_retrieve: usize,
    /// Reject associations from calling AE titles that are not a --remote-ae.
    #[arg(long, env = "PHIM_DICOM_REQUIRE_KNOWN_AE")]
    pub(crate) dicom_require_known_ae: bool,
}

/// Checks an AE title (PS3.5 §6.2: 1-16 characters, no backslash or control).
fn valid_ae_title(ae: &str) -> bool {
    !ae.is_empty()
        && ae.len() <= 16
        && ae.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !ae.contains('\\')
}

/// Parses one `TITLE=host:port[:service,…]` entry. Services: `store`,
/// `find`, `move`, `get`, `commit` (none named: all), and `from-host`
/// (associations from that host's addresses only).
pub(crate) fn parse_remote_ae(entry: &str) -> Result<crate::dimse::RemoteAe, String> {
    let (title, rest) = entry
        .split_once('=')
        .ok_or_else(|| format!("--remote-ae '{entry}': expected TITLE=host:port[:services]"))?;
    let title = title.trim();
    let rest = rest.trim();
    if !valid_ae_title(title) {
        return Err(format!(
            "--remote-ae '{entry}': '{title}' is not a valid AE title"
        ));
    }
    let (addr, services) = match rest.rsplit_once(':') {
        Some((a, svc)) if svc.chars().any(|c| c.is_ascii_alphabetic()) && !svc.contains(']') => {
            (a.trim(), Some(svc))
        }
        _ => (rest, None),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("--remote-ae '{entry}': expected host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("--remote-ae '{entry}': expected host:port"));
    }
    let mut permissions = crate::auth::Permissions::NONE;
    let mut bound = false;
    match services {
        None => {
            for (_, p) in crate::auth::policy::DIMSE_SERVICES {
                permissions.insert(*p);
            }
        }
        Some(list) => {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name.eq_ignore_ascii_case("from-host") {
                    bound = true;
                    continue;
                }
                let (_, p) = crate::auth::policy::DIMSE_SERVICES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        format!(
                            "--remote-ae '{entry}': unknown service '{name}' (store, find, move, get, commit, from-host)"
                        )
                    })?;
                permissions.insert(*p);
                if *p == crate::auth::Permission::Store {
                    permissions.insert(crate::auth::Permission::StoreDerived);
                }
            }
        }
    }
    let from = if bound {
        use std::net::ToSocketAddrs;
        let ips: Vec<std::net::IpAddr> = (host, port.parse::<u16>().unwrap_or(104))
            .to_socket_addrs()
            .map_err(|e| format!("--remote-ae '{entry}': cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect();
        if ips.is_empty() {
            return Err(format!("--remote-ae '{entry}': {host} has no address"));
        }
        ips
    } else {
        Vec::new()
    };
    Ok(crate::dimse::RemoteAe {
        title: title.to_owned(),
        address: addr.to_owned(),
        permissions,
        from,
    })
}

/// `--remote-ae` values split at commas by clap, put back together:
/// `CT1=h:104:store,commit` arrives as `CT1=h:104:store` and `commit`.
fn remote_ae_entries(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        match out.last_mut() {
            Some(last) if !v.contains('=') => {
                last.push(',');
                last.push_str(v);
            }
            _ => out.push(v.to_owned()),
        }
    }
    out
}

impl DimseArgs {
    /// The listener configuration, or `None` when DIMSE is off.
    pub(crate) fn config(&self) -> Result<Option<crate::dimse::DimseConfig>, String> {
        if self.dicom_listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let listen = self
            .dicom_listen
            .parse()
            .map_err(|e| format!("--dicom-listen '{}': {e}", self.dicom_listen))?;
        let ae = self.ae_title.trim();
        if !valid_ae_title(ae) {
            return Err(format!(
                "--ae-title '{}' is not a valid AE title (1-16 characters, PS3.5 §6.2)",
                self.ae_title
            ));
        }
        Ok(Some(crate::dimse::DimseConfig {
            listen,
            ae_title: ae.to_owned(),
            allowed_callers: self
                .dicom_allow
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            max_associations: self.dicom_max_associations,
            timeout: std::time::Duration::from_secs(self.dicom_timeout.max(1)),
            max_pdu_length: self.dicom_max_pdu.clamp(4096, 16 << 20),
            remote_aes: {
                let mut remote = Vec::new();
                for entry in remote_ae_entries(&self.remote_ae) {
                    let ae = parse_remote_ae(&entry)?;
                    if remote
                        .iter()
                        .any(|r: &crate::dimse::RemoteAe| r.title == ae.title)
                    {
                        return Err(format!("--remote-ae: '{}' is given twice", ae.title));
                    }
                    remote.push(ae);
                }
                remote
            },
            max_retrieve: self.dicom_max_retrieve.max(1),
            require_known_ae: self.dicom_require_known_ae,
        }))
    }
}

impl EmrArgs {
    /// The EMR configuration, validated.
    pub fn config(&self) -> Result<crate::emr::config::EmrConfig, String> {
        Ok(crate::emr::config::EmrConfig {
            template: self
                .emr_url_template
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(crate::emr::template::UrlTemplate::parse)
                .transpose()?,
            stable_after: std::time::Duration::from_secs(self.stable_after),
            webhook_urls: crate::emr::webhooks::parse_urls(&self.webhook_urls)?,
            webhook_max_attempts: self.webhook_max_attempts.max(1),
            timezone: self
                .timezone
                .as_deref()
                .map(crate::emr::config::parse_timezone)
                .transpose()?,
            write_token: self
                .emr_api_token
                .as_deref()
                .map(crate::emr::config::ApiToken::new)
                .transpose()?,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Files and folders to import (folders recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded() {
        let cli = Cli::try_parse_from(["phim", "serve", "--data-dir", "/tmp/d"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.storage.database_url(), "sqlite:///tmp/d/index.db");
        assert!(s.dimse.config().unwrap().unwrap().remote_aes.is_empty());
        assert_eq!(
            s.storage.store_location().unwrap(),
            StoreLocation::File("/tmp/d/objects".into())
        );
    }

    #[test]
    fn emr_options() {
        let serve = |args: &[&str]| {
            let mut argv = vec!["phim", "serve"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(s) => s.emr.config(),
                _ => panic!(),
            }
        };
        let d = serve(&[]).unwrap();
        assert!(d.template.is_none() && d.webhook_urls.is_empty() && d.timezone.is_none());
        assert_eq!((d.stable_after.as_secs(), d.webhook_max_attempts), (60, 8));
        let c = serve(&[
            "--emr-url-template",
            "https://emr.example/p/{PatientID}",
            "--webhook-url",
            "http://a.example/1,https://b.example/2",
            "--webhook-url",
            "http://c.example/3",
            "--stable-after",
            "1",
            "--timezone",
            "+07:00",
        ])
        .unwrap();
        assert!(c.template.is_some());
        assert_eq!(
            c.webhook_urls,
            [
                "http://a.example/1",
                "https://b.example/2",
                "http://c.example/3"
            ]
        );
        assert_eq!(c.stable_after.as_secs(), 1);
        assert_eq!(c.timezone.as_deref(), Some("+07:00"));
        for bad in [
            &["--emr-url-template", "https://emr.example/{Nope}"][..],
            &["--emr-url-template", "emr.example/{PatientID}"],
            &["--webhook-url", "ftp://a.example/"],
            &["--timezone", "7"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remote_aes() {
        let cli = Cli::try_parse_from([
            "phim",
            "serve",
            "--remote-ae",
            "VIEWER=127.0.0.1:104,ARCHIVE=archive.local:11112",
            "--remote-ae",
            "WS=[::1]:4242",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        let c = s.dimse.config().unwrap().unwrap();
        let got: Vec<(&str, &str)> = c
            .remote_aes
            .iter()
            .map(|r| (r.title.as_str(), r.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("VIEWER", "127.0.0.1:104"),
                ("ARCHIVE", "archive.local:11112"),
                ("WS", "[::1]:4242")
            ]
        );
        assert_eq!(c.max_retrieve, 100_000);
        let ct = parse_remote_ae("CT1=127.0.0.1:104:store,commit,from-host").unwrap();
        assert_eq!(ct.address, "127.0.0.1:104");
        assert!(ct.permissions.contains(crate::auth::Permission::Store));
        assert!(ct.permissions.contains(crate::auth::Permission::Commit));
        assert!(!ct.permissions.contains(crate::auth::Permission::Query));
        assert_eq!(ct.from, ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(
            remote_ae_entries(&["A=h:1:store".into(), "commit".into(), "B=h:2".into()]),
            ["A=h:1:store,commit", "B=h:2"]
        );
        assert!(parse_remote_ae("CT1=h:104:store,fly").is_err());
        for bad in [
            "NOPORT=host",
            "=h:1",
            "X=h:0",
            "X=h:port",
            "WAY_TOO_LONG_AE_TITLE=h:1",
        ] {
            assert!(parse_remote_ae(bad).is_err(), "{bad}");
        }
        let twice = Cli::try_parse_from(["phim", "serve", "--remote-ae", "A=h:1,A=h:2"]).unwrap();
        let Command::Serve(s) = twice.command else {
            panic!()
        };
        assert!(s.dimse.config().is_err());
    }
}
