//! HTTP connections: accepted up to `--max-connections` at once, each
//! given `--http-header-timeout` to send a request's head (the first and
//! every later one on a kept-alive connection) and `--http-body-timeout`
//! between two pieces of its body, served by hyper with the router, and
//! drained on shutdown. axum::serve has none of these limits: a client
//! sending a header one byte a minute (slow-loris) held its connection
//! forever, and enough of them exhausted the descriptors; one that stopped
//! in the middle of a STOW body held an ingest slot and a spool file.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::{TimeoutBody, TimeoutError};

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
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
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body_timeout,
    ));
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

/// Fails a request whose body goes `timeout` without a byte arriving: the
/// handler sees its body end with an error and whatever it answers is
/// replaced by a 408 that closes the connection. What the request had
/// stored before (STOW parts already received) stays stored; sending it
/// again is safe ("already stored" is a success).
async fn body_timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let path = req.uri().path().to_owned();
    let req = req.map(|body| {
        Body::new(WatchedBody {
            inner: Box::pin(TimeoutBody::new(timeout, body)),
            timed_out: timed_out.clone(),
        })
    });
    let response = next.run(req).await;
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    tracing::info!(
        path,
        seconds = timeout.as_secs(),
        "request body stopped arriving: 408"
    );
    crate::error::ApiError::RequestTimeout(format!(
        "the request body sent nothing for {} s (http-body-timeout); what arrived before \
         was processed and may be sent again",
        timeout.as_secs()
    ))
    .into_response()
}

/// A request body that remembers whether it ended by timing out.
struct WatchedBody {
    inner: Pin<Box<TimeoutBody<Body>>>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            if e.is::<TimeoutError>() {
                self.timed_out.store(true, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
