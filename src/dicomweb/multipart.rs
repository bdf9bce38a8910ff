//! multipart/related (RFC 2387) as DICOMweb uses it: parts in (via multer,
//! which streams parts but only finds form-data boundaries by itself) and
//! parts out (streamed, never assembled in memory).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{stream, Stream, StreamExt};

/// A fresh boundary for a response.
pub(crate) fn new_boundary() -> String {
    format!("phim-{}", uuid::Uuid::new_v4().simple())
}

/// The header block that opens a part.
pub(crate) fn part_header(boundary: &str, headers: &[(&str, String)]) -> Bytes {
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
pub(crate) fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("\r\n--{boundary}--\r\n"))
}

/// A `multipart/related; type="…"` response of streamed parts (each opened
/// by [`part_header`]); the closing delimiter is added here.
pub(crate) fn response<S>(parts: S, boundary: String, part_type: &str) -> Response
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

/// Largest slice of the body handed to the multipart parser at once.
const SLICE: usize = 64 << 10;
/// The slice while the parser looks for a part's headers.
const HEADER_SLICE: usize = 1 << 10;

/// How much the parser read while looking for a part's header block.
///
/// multer buffers until it finds the blank line that ends a part's
/// headers, with no limit of its own (a 128 MiB header line was held
/// whole). The request body is handed to it through [`MeteredBody`],
/// which counts what is read between [`HeaderMeter::start`] and
/// [`HeaderMeter::stop`] and fails the body past `cap`: the parser then
/// holds at most `cap` plus one slice. The exact size of a block that
/// passes is checked with [`header_block_len`].
#[derive(Debug)]
pub(crate) struct HeaderMeter {
    cap: usize,
    reading: AtomicBool,
    read: AtomicUsize,
    tripped: AtomicBool,
}

impl HeaderMeter {
    /// A meter for header blocks of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<HeaderMeter> {
        Arc::new(HeaderMeter {
            cap: max.saturating_add(SLICE),
            reading: AtomicBool::new(true),
            read: AtomicUsize::new(0),
            tripped: AtomicBool::new(false),
        })
    }

    /// The parser is about to look for the next part's headers.
    pub(crate) fn start(&self) {
        self.read.store(0, Ordering::Relaxed);
        self.reading.store(true, Ordering::Relaxed);
    }

    /// The headers were found (or the body ended).
    pub(crate) fn stop(&self) {
        self.reading.store(false, Ordering::Relaxed);
    }

    /// Whether the body was failed because a header block ran on.
    pub(crate) fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }
}

/// What the request body stream can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("{0}")]
    Body(#[from] axum::Error),
    #[error("a part's header block is too long")]
    HeaderTooLong,
}

/// The request body in slices of at most [`SLICE`] bytes (zero-copy), one
/// slice per poll of the parser, with header reading metered (see
/// [`HeaderMeter`]).
///
/// multer pulls from its stream until the stream is pending, so a fast
/// client could have it buffer whatever had arrived. After each slice this
/// stream says "pending" once (waking its task at once): the parser then
/// works on what it has, and holds at most a slice more than it needs.
pub(crate) struct MeteredBody<S> {
    inner: S,
    rest: Bytes,
    meter: Arc<HeaderMeter>,
    yielded: bool,
}

impl<S> MeteredBody<S> {
    pub(crate) fn new(inner: S, meter: Arc<HeaderMeter>) -> Self {
        MeteredBody {
            inner,
            rest: Bytes::new(),
            meter,
            yielded: false,
        }
    }
}

impl<S> Stream for MeteredBody<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.meter.tripped() {
            return Poll::Ready(Some(Err(BodyError::HeaderTooLong)));
        }
        if std::mem::take(&mut this.yielded) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while this.rest.is_empty() {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => this.rest = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        let reading = this.meter.reading.load(Ordering::Relaxed);
        let n = this
            .rest
            .len()
            .min(if reading { HEADER_SLICE } else { SLICE });
        if reading {
            let read = this.meter.read.fetch_add(n, Ordering::Relaxed) + n;
            if read > this.meter.cap {
                this.meter.tripped.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(BodyError::HeaderTooLong)));
            }
        }
        this.yielded = true;
        Poll::Ready(Some(Ok(this.rest.split_to(n))))
    }
}

/// The size of a parsed header block as it was sent: `Name: value` and
/// CRLF per header, and the blank line.
pub(crate) fn header_block_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, axum::Error>> + Unpin {
        stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    #[tokio::test]
    async fn slices_and_meters_header_reading() {
        static BIG: [u8; 200_000] = [b'x'; 200_000];
        let meter = HeaderMeter::new(4096);
        meter.stop();
        let mut b = MeteredBody::new(body(vec![&BIG]), meter.clone());
        // One slice per poll: the second poll in a row is pending.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut b).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(Pin::new(&mut b).poll_next(&mut cx).is_pending());
        let mut b = MeteredBody::new(body(vec![&BIG]), meter.clone());
        let first = b.next().await.unwrap().unwrap();
        assert_eq!(first.len(), SLICE, "data is sliced");
        meter.start();
        let mut read = 0;
        let err = loop {
            match b.next().await.unwrap() {
                Ok(c) => {
                    assert!(c.len() <= HEADER_SLICE);
                    read += c.len();
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(err, BodyError::HeaderTooLong));
        assert!(meter.tripped());
        assert!(read <= 4096 + SLICE, "{read}");
        assert!(matches!(
            b.next().await,
            Some(Err(BodyError::HeaderTooLong))
        ));
    }

    /// A whole body already arrived (one big chunk): reading each part's
    /// headers must not pull the following part's data under the meter.
    #[tokio::test]
    async fn parts_of_a_body_that_arrived_whole() {
        let part = vec![7u8; 1 << 20];
        let mut raw = Vec::new();
        for _ in 0..3 {
            raw.extend_from_slice(b"--b\r\nContent-Type: application/dicom\r\n\r\n");
            raw.extend_from_slice(&part);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"--b--\r\n");
        let body = stream::iter([Ok::<_, axum::Error>(Bytes::from(raw))]);
        let meter = HeaderMeter::new(1024);
        let mut mp = multer::Multipart::new(MeteredBody::new(body, meter.clone()), "b");
        let mut parts = 0;
        loop {
            meter.start();
            let next = mp.next_field().await;
            meter.stop();
            let Some(mut field) = next.unwrap() else {
                break;
            };
            assert_eq!(header_block_len(field.headers()), 33 + 2);
            let mut n = 0;
            while let Some(c) = field.chunk().await.unwrap() {
                n += c.len();
            }
            assert_eq!(n, part.len());
            parts += 1;
        }
        assert_eq!(parts, 3);
        assert!(!meter.tripped());
    }

    #[test]
    fn header_block_length() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/dicom".parse().unwrap());
        // "content-type: application/dicom\r\n\r\n"
        assert_eq!(header_block_len(&h), 12 + 2 + 17 + 2 + 2);
    }
}
