//! The HTTP server: routes, start-up (the [`AppState`] it builds once),
//! graceful shutdown.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::audit;
use crate::auth::Auth;
use crate::backends::open_backends;
use crate::config::ServeArgs;
use crate::dicomweb;
use crate::emr;
use crate::imaging::Imaging;
use crate::index::Index;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let viewer = crate::viewer::routes(&state.viewer_dir);
    let cors = cors(&state.auth.config.cors_origins);
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::telemetry::render))
        // WADO-URI (PS3.18 §9), for older EMRs and viewers.
        .route("/wado", get(dicomweb::wado_uri::wado))
        // Unknown DICOMweb paths stay 404: without their own fallback they
        // would inherit the viewer's index.html fallback.
        .nest(
            "/dicomweb",
            dicomweb::routes().fallback(|| async { StatusCode::NOT_FOUND }),
        )
        // The EMR side (issue #7): JSON API, IHE IID, FHIR. Their own
        // fallbacks keep unknown paths from reaching the viewer's page.
        .nest("/api", crate::api::routes())
        .route("/IHEInvokeImageDisplay", get(emr::iid::invoke))
        .nest("/fhir", crate::fhir::routes())
        .merge(viewer)
        // One door for every route, the viewer's files included (the
        // policy lets those through).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::layer::require,
        ))
        // Outside the auth layer: refused requests are counted too.
        .layer(axum::middleware::from_fn(crate::telemetry::track))
        .with_state(state);
    // Outside the auth layer: preflight requests carry no credentials.
    match cors {
        Some(c) => app.layer(c),
        None => app,
    }
}

/// Cross-origin access for the configured origins only (none: no CORS
/// headers at all, so browsers keep other sites' pages out).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderValue, Method};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::RANGE,
            ])
            .expose_headers([
                header::WARNING,
                header::CONTENT_LOCATION,
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<AppState>) -> (StatusCode, String) {
    let index = st.index.ping().await;
    let store = st.store.ping().await;
    match (index, store) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready\n".into()),
        (i, s) => {
            if let Err(e) = &i {
                tracing::warn!(error = %e, "readiness: index");
            }
            if let Err(e) = &s {
                tracing::warn!(error = %e, "readiness: store");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "index: {}, store: {}\n",
                    if i.is_ok() { "ok" } else { "unavailable" },
                    if s.is_ok() { "ok" } else { "unavailable" }
                ),
            )
        }
    }
}

/// Minimal string-error result for start-up paths.
pub(crate) mod anyhow_like {
    pub(crate) type Result<T> = std::result::Result<T, String>;
}

/// Secure by default: a server reachable from other machines must ask for
/// credentials, unless the operator says otherwise (`--allow-anonymous`).
fn check_exposure(
    args: &ServeArgs,
    auth: &crate::auth::AuthConfig,
    dimse: Option<&crate::dimse::DimseConfig>,
    tls: &crate::config::TlsSetup,
) -> anyhow_like::Result<()> {
    if args.auth.allow_anonymous {
        return Ok(());
    }
    if !auth.required && !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to serve {} without authentication: anyone on the network could read the archive. \
             Configure --oidc-issuer or --require-auth (API keys: `phim api-key create`), \
             listen on 127.0.0.1, or pass --allow-anonymous (PHIM_ALLOW_ANONYMOUS=true) if another layer protects it",
            args.listen
        ));
    }
    if let Some(d) = dimse {
        let restricted = d.require_known_ae || !d.allowed_callers.is_empty();
        let mut listeners = vec![(d.listen, false)];
        if let Some((addr, _)) = &tls.dicom {
            listeners.push((*addr, tls.dicom_client_certs));
        }
        for (addr, client_certs) in listeners {
            if !restricted && !client_certs && !addr.ip().is_loopback() {
                return Err(format!(
                    "refusing to accept DICOM associations on {addr} from any AE: configure --remote-ae with \
                     --dicom-require-known-ae (or --dicom-allow, or --dicom-tls-ca for DICOM TLS), \
                     listen on 127.0.0.1, or pass --allow-anonymous"
                ));
            }
        }
    }
    Ok(())
}

pub async fn serve(args: ServeArgs) -> anyhow_like::Result<()> {
    crate::telemetry::install();
    let dimse = args.dimse.config()?;
    let emr = Arc::new(args.emr.config()?);
    let auth_config = args.auth.config()?;
    let tls = args.tls.setup()?;
    let syslog = args.audit.target()?;
    let limits = args.limits.config()?;
    crate::retention::rules_of(&args.retention)?;
    tracing::info!(?limits, "request limits");
    check_exposure(&args, &auth_config, dimse.as_ref(), &tls)?;
    let (index, store, ingest) = open_backends(&args.storage, &args.ingest).await?;
    let shutdown = CancellationToken::new();
    // Its own token: the writer stops last, after everything that records.
    let audit_stop = CancellationToken::new();
    if let Some(t) = &syslog {
        tracing::info!(host = %t.host, port = t.port, tls = t.tls.is_some(), "audit events also go to an ATNA repository");
    }
    let (audit, audit_task) = audit::start(index.clone(), syslog, audit_stop.clone());
    let auth = start_auth(auth_config, index.clone(), &emr).await;
    audit.record(
        audit::Event::application("Application Start")
            .detail(format!("phim {} serve", env!("CARGO_PKG_VERSION"))),
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let imaging = Imaging::new(args.imaging_threads);
    let dimse_tasks = match dimse {
        Some(config) => {
            let services = crate::dimse::Services {
                ingest: ingest.clone(),
                index: index.clone(),
                store: store.clone(),
                audit: audit.clone(),
                imaging: imaging.clone(),
            };
            start_dimse(config, &tls, services, &shutdown).await?
        }
        None => Vec::new(),
    };

    let state = AppState {
        index,
        store,
        ingest,
        public_url: args.public_url.clone(),
        listen_addr: addr,
        viewer_dir: args.viewer_dir.clone(),
        imaging,
        emr: emr.clone(),
        jobs_wake: Arc::new(tokio::sync::Notify::new()),
        auth,
        audit: audit.clone(),
        limits: limits.clone(),
    };
    tracing::info!(
        imaging_threads = state.imaging.threads(),
        thumbnails_at_ingest = args.thumbnails_at_ingest,
        "imaging pool ready"
    );
    let background = start_background(&state, &args, &shutdown);
    let scheme = if tls.https.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr} (DICOMweb at {scheme}://{addr}/dicomweb)");
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let connections = crate::connections::ConnectionLimits {
        max_connections: crate::connections::fit_to_descriptors(args.max_connections),
        header_timeout: std::time::Duration::from_secs(args.http_header_timeout.max(1)),
        body_timeout: std::time::Duration::from_secs(args.http_body_timeout.max(1)),
    };
    tracing::info!(?connections, "HTTP connection limits");
    let http = serve_http(
        listener,
        tls.https.clone(),
        router(state),
        connections,
        shutdown.clone(),
    );
    let grace = std::time::Duration::from_secs(args.shutdown_timeout);
    serve_until_stopped(http, dimse_tasks, &shutdown, grace).await?;
    audit.record(audit::Event::application("Application Stop"));
    shutdown.cancel();
    stop_background(background, audit_stop, audit_task, grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// The job runner aborts its jobs and gives their leases back, the audit
/// writer drains; an index that does not answer must not hold the exit for
/// ever (leases not released run out and another server takes the jobs;
/// the audit events lost are the ones it could not have written).
async fn stop_background(
    background: Vec<tokio::task::JoinHandle<()>>,
    audit_stop: CancellationToken,
    audit_task: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
) {
    // One deadline for both: the shutdown timeout, between 1 and 5 s.
    let deadline = tokio::time::Instant::now()
        + grace.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(5),
        );
    let background_done = futures::future::join_all(background);
    if tokio::time::timeout_at(deadline, background_done)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: the job runner did not stop in time (index unreachable?); its leases run out");
    }
    // Last: the writer drains what the others recorded.
    audit_stop.cancel();
    let audit_deadline =
        deadline.max(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
    if tokio::time::timeout_at(audit_deadline, audit_task)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: audit events not written in time (index unreachable?)");
    }
}

/// The authenticator, its configuration logged, the identity provider's
/// keys fetched once (a provider not up yet is not fatal: tokens are
/// refused until it answers).
async fn start_auth(
    config: crate::auth::AuthConfig,
    index: Arc<dyn Index>,
    emr: &crate::emr::config::EmrConfig,
) -> Arc<Auth> {
    let auth = Arc::new(Auth::new(config, index, emr.write_token.clone()));
    tracing::info!(
        required = auth.config.required,
        oidc_issuer = auth.config.oidc.as_ref().map(|o| o.issuer.as_str()),
        oidc_audience = auth.config.oidc.as_ref().map(|o| o.audience.as_str()),
        readyz_public = auth.config.readyz_public,
        "authentication"
    );
    if let Some(v) = auth.verifier() {
        match v.refresh_keys().await {
            Ok(n) => tracing::info!(keys = n, "identity provider keys loaded"),
            Err(e) => {
                tracing::warn!(error = %e, "identity provider not reachable yet (tokens are refused until it is)")
            }
        }
    }
    auth
}

/// The background work: the metrics upkeep and the job runner with a
/// handler per kind of job (thumbnails when made at ingest, webhook
/// deliveries, the stable-study detector, the background fsck, the
/// trash's purge).
fn start_background(
    state: &AppState,
    args: &ServeArgs,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use crate::index::jobs::kind;
    use std::time::Duration;
    let emr = &state.emr;
    tracing::info!(
        stable_after_s = emr.stable_after.as_secs(),
        webhooks = emr.webhook_urls.len(),
        emr_url_template = emr.template.is_some(),
        emr_link_writes_need_token = emr.write_token.is_some(),
        "EMR integration: change detector and webhook deliveries are jobs"
    );
    let jobs = &args.jobs;
    let mut runner = crate::jobs::Runner::new(
        state.index.clone(),
        Duration::from_secs(jobs.job_lease),
        usize::try_from(jobs.job_concurrency).unwrap_or(4),
        state.jobs_wake.clone(),
    );
    if args.thumbnails_at_ingest {
        runner.handle(kind::THUMBNAIL, Arc::new(state.thumbnails()));
    }
    match emr::webhooks::Deliveries::new(state.clone()) {
        Ok(d) => runner.handle(kind::WEBHOOK, Arc::new(d)),
        Err(e) => tracing::error!(error = %e, "no webhook deliveries from this server"),
    }
    runner.every(
        kind::STUDY_STABLE,
        Some(emr::changes::poll_period(emr.stable_after)),
        Arc::new(emr::changes::Detector { st: state.clone() }),
    );
    runner.every(
        kind::FSCK,
        (jobs.fsck_interval > 0).then(|| Duration::from_secs(jobs.fsck_interval)),
        Arc::new(crate::fsck::Background {
            index: state.index.clone(),
            store: state.store.clone(),
            ingest: state.ingest.clone(),
            min_age: Duration::from_secs(jobs.fsck_min_age),
            every: Duration::from_secs(jobs.fsck_interval.max(1)),
        }),
    );
    let purge_every = jobs.trash_purge_interval.max(Duration::from_secs(1));
    let rules = match crate::retention::rules_of(&args.retention) {
        Ok(r) => r,
        Err(e) => {
            // Checked in `serve` before anything started.
            tracing::error!(error = %e, "retention rules not understood; no retention");
            crate::retention::Rules::default()
        }
    };
    let retention_every = args
        .retention
        .retention_interval
        .max(Duration::from_secs(1));
    tracing::info!(
        rules = ?args.retention.retention,
        interval = %humantime::format_duration(retention_every),
        "retention: studies past their rule go to the trash"
    );
    runner.every(
        kind::RETENTION,
        (!rules.is_empty()).then_some(retention_every),
        Arc::new(crate::retention::Sweep {
            index: state.index.clone(),
            rules,
            trash_retention: state.ingest.config().trash_retention,
            audit: state.audit.clone(),
            wake: state.jobs_wake.clone(),
            every: retention_every,
        }),
    );
    tracing::info!(
        trash_retention = %humantime::format_duration(state.ingest.config().trash_retention),
        trash_purge_interval = %humantime::format_duration(purge_every),
        fsck_interval_s = jobs.fsck_interval,
        "deleted instances go to the trash; the purge job deletes their objects"
    );
    runner.every(
        kind::PURGE,
        Some(purge_every),
        Arc::new(crate::trash::Purge {
            index: state.index.clone(),
            store: state.store.clone(),
            every: purge_every,
        }),
    );
    vec![
        tokio::spawn(crate::telemetry::run_upkeep(shutdown.clone())),
        tokio::spawn(runner.run(shutdown.clone())),
    ]
}

/// The DICOM listeners (plain, and TLS when configured), each a task.
async fn start_dimse(
    config: crate::dimse::DimseConfig,
    tls: &crate::config::TlsSetup,
    services: crate::dimse::Services,
    shutdown: &CancellationToken,
) -> anyhow_like::Result<Vec<tokio::task::JoinHandle<()>>> {
    let config = Arc::new(config);
    let mut dimse_tasks = Vec::new();
    let limit = crate::dimse::association_limit(&config);
    let dicom = crate::dimse::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen for DICOM on {}: {e}", config.listen))?;
    let dicom_addr = dicom.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        ae_title = %config.ae_title,
        allowed_callers = ?config.allowed_callers,
        remote_aes = config.remote_aes.len(),
        require_known_ae = config.require_known_ae,
        max_associations = config.max_associations,
        "DICOM listening on {dicom_addr}"
    );
    dimse_tasks.push(tokio::spawn(crate::dimse::serve(
        dicom,
        None,
        config.clone(),
        services.clone(),
        limit.clone(),
        shutdown.clone(),
    )));
    if let Some((addr, server_config)) = &tls.dicom {
        let listener = crate::dimse::bind(*addr)
            .await
            .map_err(|e| format!("cannot listen for DICOM TLS on {addr}: {e}"))?;
        let tls_addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            client_certificates = tls.dicom_client_certs,
            "DICOM TLS listening on {tls_addr}"
        );
        dimse_tasks.push(tokio::spawn(crate::dimse::serve(
            listener,
            Some(server_config.clone()),
            config,
            services,
            limit,
            shutdown.clone(),
        )));
    }
    Ok(dimse_tasks)
}

/// Runs `http` (which serves until the shutdown signal, then lets
/// requests in flight finish) and waits for the DICOM associations too
/// (the listeners wait for them), all within `grace` (--shutdown-timeout).
async fn serve_until_stopped(
    http: impl std::future::Future<Output = anyhow_like::Result<()>>,
    dimse_tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) -> anyhow_like::Result<()> {
    let everything = async {
        let r = http.await;
        futures::future::join_all(dimse_tasks).await;
        r
    };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = everything => r?,
        _ = deadline => tracing::warn!(
            timeout_s = grace.as_secs(),
            "shutdown timeout: exiting with requests or associations still in flight"
        ),
    }
    Ok(())
}

/// Serves HTTP (or HTTPS) until `shutdown`, then lets requests in flight
/// finish.
async fn serve_http(
    listener: tokio::net::TcpListener,
    https: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    app: Router,
    limits: crate::connections::ConnectionLimits,
    shutdown: CancellationToken,
) -> anyhow_like::Result<()> {
    match &https {
        Some(config) => {
            // TCP_NODELAY is set before the handshake.
            let listener = crate::tls::TlsListener::new(listener, config.clone())
                .map_err(|e| e.to_string())?;
            crate::connections::serve(listener, app, limits, shutdown).await;
        }
        None => {
            // TCP_NODELAY: without it the tail of each streamed response waits for
            // the client's delayed ACK (~40 ms per request, measured).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            crate::connections::serve(listener, app, limits, shutdown).await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
