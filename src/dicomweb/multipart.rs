//! multipart/related (RFC 2387) as DICOMweb uses it: parts in (via multer,
//! which streams parts but only finds form-data boundaries by itself) and
//! parts out (streamed, never assembled in memory).

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{stream, Stream, StreamExt};

/// A fresh boundary for a response.
pub fn new_boundary() -> String {
    format!("phim-{}", uuid::Uuid::new_v4().simple())
}

/// The header block that opens a part.
pub fn part_header(boundary: &str, headers: &[(&str, String)]) -> Bytes {
    let mut s = format!("\r\n--{boundary}\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

/// The closing delimiter.
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("\r\n--{boundary}--\r\n"))
}

/// A `multipart/related; type="…"` response of streamed parts (each opened
/// by [`part_header`]); the closing delimiter is added here.
pub fn response<S>(parts: S, boundary: String, part_type: &str) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let end = closing(&boundary);
    let body = parts.chain(stream::once(async move { Ok(end) }));
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"{part_type}\"; boundary={boundary}"),
        )],
        Body::from_stream(body),
    )
        .into_response()
}
