//! The S3 client's HTTP requests, counted: object_store retries server
//! errors (5xx, 429, 408) and transport errors with backoff inside one
//! call (`--s3-retry-timeout`), so Phim never sees those attempts. This
//! connector wraps object_store's own reqwest client and counts every
//! attempt by outcome (`phim_store_http_requests_total`): the attempts it
//! retried are the `server_error` and `transport_error` ones.

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

use crate::telemetry::STORE_HTTP_REQUESTS;

/// object_store's reqwest connector, its client wrapped in [`Counted`].
#[derive(Debug, Default)]
pub(crate) struct CountingConnector {
    inner: ReqwestConnector,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Counted(self.inner.connect(options)?)))
    }
}

#[derive(Debug)]
struct Counted(HttpClient);

#[async_trait]
impl HttpService for Counted {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let result = self.0.execute(req).await;
        let outcome = match &result {
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => "server_error",
            Ok(r) if r.status().is_client_error() => "client_error",
            Ok(_) => "success",
            Err(_) => "transport_error",
        };
        metrics::counter!(STORE_HTTP_REQUESTS, "outcome" => outcome).increment(1);
        result
    }
}
