//! HTTP connections: accepted up to `--max-connections` at once, each
//! given `--http-header-timeout` to send a request's head (the first and
//! every later one on a kept-alive connection), served by hyper with the
//! router, and drained on shutdown. axum::serve has neither limit: a
//! client sending a header one byte a minute (slow-loris) held its
//! connection forever, and enough of them exhausted the descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
}

/// Raises the soft open-file limit to the hard one, and bounds
/// `max_connections` by what is then available (with room for the index,
/// the store, spool files and DICOM); returns the bound used.
pub(crate) fn fit_to_descriptors(max_connections: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let available = usize::try_from(limit.saturating_sub(256)).unwrap_or(usize::MAX);
    max_connections.min(available.max(16))
}

/// Serves `app` on `listener` until `shutdown`, then lets the requests in
/// flight finish (their connections close once answered).
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // At the limit, the next connection waits in the kernel's backlog
        // until one ends (or times out) rather than being accepted idle.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.cancelled() => break,
        };
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        );
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
