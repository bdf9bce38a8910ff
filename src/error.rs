//! Errors become responses here, and only here.
//!
//! Policy: the client gets the DICOMweb status and a short message that
//! names what was wrong with *its* request; internal detail (SQL, S3, I/O)
//! goes to the log with the request's UIDs, never to the client, and no
//! patient data goes to either. STOW failures per instance are DICOM
//! Failure Reasons (PS3.18 Table 10.5.3-1, PS3.4 Annex GG / PS3.7 Annex C).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::imaging::ImagingError;
use crate::index::IndexError;
use crate::ingest::IngestError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Missing or wrong credentials (answered with `WWW-Authenticate`).
    #[error("{0}")]
    Unauthorized(String),
    /// A known caller without the right (the body says which).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body stopped arriving (`--http-body-timeout`).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("{0}")]
    Unavailable(String),
    /// The server is at capacity for this kind of work; retry later.
    #[error("{0}")]
    Busy(String),
    /// This caller sent too much too fast (answered with `Retry-After`).
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// What the client is told; internal detail goes to the log here.
    pub(crate) fn client_message(&self) -> String {
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_owned()
            }
            ApiError::Unavailable(detail) => {
                tracing::error!(error = %detail, "back end unavailable");
                "storage back end unavailable, try again later".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The FHIR issue type (R4 `IssueType` value set) of this error.
    pub(crate) fn fhir_issue_code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid",
            ApiError::NotFound(_) => "not-found",
            ApiError::Unauthorized(_) => "login",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotAcceptable(_) | ApiError::UnsupportedMediaType(_) => "not-supported",
            ApiError::PayloadTooLarge(_) => "too-costly",
            ApiError::RequestTimeout(_) => "timeout",
            ApiError::RangeNotSatisfiable(_) => "invalid",
            ApiError::Unavailable(_) | ApiError::Busy(_) => "transient",
            ApiError::TooManyRequests { .. } => "throttled",
            ApiError::Internal(_) => "exception",
        }
    }
}

/// The headers a status calls for: a 401 names the scheme it wants
/// (RFC 6750 §3); a 413 or a 408 closes the connection.
fn with_status_headers(status: StatusCode, mut response: Response) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"phim\""),
        );
    }
    // A 413 is sent before the rest of the body is read, so the connection
    // cannot carry another request; say so (RFC 9110 §15.5.14), or a client
    // reusing it sees its next request fail with the connection closed.
    // A 408 likewise: the rest of the body may still come (RFC 9110 §15.5.9).
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.client_message() + "\n",
        )
            .into_response();
        with_status_headers(status, response)
    }
}

/// An [`ApiError`] answered as JSON, `{"error": "…", "status": 400}`, for
/// the JSON API under `/api` (same status, same message).
#[derive(Debug)]
pub(crate) struct JsonError(pub ApiError);

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = serde_json::json!({
            "error": self.0.client_message(),
            "status": status.as_u16(),
        });
        let response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        with_status_headers(status, response)
    }
}

impl From<ApiError> for JsonError {
    fn from(e: ApiError) -> Self {
        JsonError(e)
    }
}

impl From<IndexError> for JsonError {
    fn from(e: IndexError) -> Self {
        JsonError(e.into())
    }
}

/// An [`ApiError`] answered as a FHIR R4 `OperationOutcome` (same status,
/// same message), for the FHIR API under `/fhir`.
#[derive(Debug)]
pub(crate) struct FhirError(pub ApiError);

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.0.fhir_issue_code(),
                "diagnostics": self.0.client_message(),
            }],
        });
        let response = (
            status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            body.to_string(),
        )
            .into_response();
        with_status_headers(status, response)
    }
}

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> Self {
        FhirError(e)
    }
}

impl From<IndexError> for FhirError {
    fn from(e: IndexError) -> Self {
        FhirError(e.into())
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Unavailable(d) => ApiError::Unavailable(d),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ImagingError> for ApiError {
    fn from(e: ImagingError) -> Self {
        match e {
            // PS3.18 §8.7.3.5: no acceptable form of the pixels can be made.
            ImagingError::Unsupported(m) => ApiError::NotAcceptable(m),
            ImagingError::BadParameter(m) => ApiError::BadRequest(m),
            ImagingError::Busy => ApiError::Busy("the imaging queue is full, retry later".into()),
            // Stored pixel data that does not decode (issue #17): the
            // server cannot make any representation the client accepts,
            // which PS3.18 §8.7.3.5 answers with 406; the stored bytes
            // themselves can still be retrieved as they are. Not a 5xx: a
            // load balancer must not take a healthy server out for it.
            ImagingError::Corrupt(m) => {
                tracing::warn!(error = %m, "stored pixel data could not be decoded");
                ApiError::NotAcceptable(format!(
                    "the stored pixel data cannot be decoded ({m}); \
                     it can be retrieved as stored (transfer-syntax=*)"
                ))
            }
            ImagingError::Panicked(m) => {
                tracing::error!(error = %m, "a codec panicked on stored pixel data");
                ApiError::NotAcceptable(format!(
                    "the stored pixel data cannot be decoded (the codec failed on {m}); \
                     it can be retrieved as stored (transfer-syntax=*)"
                ))
            }
            ImagingError::NotFound(m) => ApiError::NotFound(m),
            ImagingError::Index(e) => e.into(),
            ImagingError::Store(e) => e.into(),
            ImagingError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // An indexed object that is missing is our fault, not a 404.
            StoreError::NotFound(key) => {
                ApiError::Internal(format!("indexed object missing: {key}"))
            }
            StoreError::Unavailable(d) => ApiError::Unavailable(d),
            // Callers check ranges against the index first: what reaches
            // here is a range the stored object does not have.
            StoreError::InvalidRange(d) => {
                tracing::warn!(detail = %d, "byte range outside the stored object");
                ApiError::RangeNotSatisfiable(
                    "the requested bytes are not in the stored object".into(),
                )
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// DICOM status codes: one table with DIMSE's, in `dicom::status`.
pub(crate) use crate::dicom::status;

/// The Failure Reason (0008,1197) for an instance that was not stored.
pub(crate) fn failure_reason(e: &IngestError) -> u16 {
    match e {
        IngestError::Unparseable(_) => status::CANNOT_UNDERSTAND,
        IngestError::InvalidAttribute { .. } | IngestError::StudyMismatch { .. } => {
            status::DATASET_MISMATCH
        }
        IngestError::Duplicate => status::DUPLICATE_SOP_INSTANCE,
        IngestError::Rejected(_) => status::REJECTED_INSTANCE,
        IngestError::NotAuthorized(_) => status::NOT_AUTHORIZED,
        IngestError::TooLarge(_) | IngestError::NoSpace(_) => status::OUT_OF_RESOURCES,
        // A store or index that does not answer (an outage, a full disk)
        // is "Refused: Out of Resources" (PS3.4 Table B.2-1, A7xx): the
        // sender keeps the instance and tries again later, which is what
        // it should do; "Processing failure" would say the instance failed.
        IngestError::Store(
            crate::store::StoreError::Unavailable(_) | crate::store::StoreError::Io(_),
        )
        | IngestError::Index(crate::index::IndexError::Unavailable(_)) => status::OUT_OF_RESOURCES,
        IngestError::Receive(_)
        | IngestError::Store(_)
        | IngestError::Index(_)
        | IngestError::Internal(_) => status::PROCESSING_FAILURE,
    }
}

/// Whether the failure is the server's (logged as an error) rather than
/// the instance's (logged as a warning).
pub(crate) fn is_server_fault(e: &IngestError) -> bool {
    matches!(
        e,
        IngestError::Store(_)
            | IngestError::Index(_)
            | IngestError::NoSpace(_)
            | IngestError::Internal(_)
    )
}
