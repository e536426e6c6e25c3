//! Bodies: the client's request body handed to one upstream attempt at a time, and the body
//! rewrites a plugin may ask for: buffered whole, or streamed chunk by chunk.

use std::io::Read as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, HttpBody};
use axum::http::{HeaderMap, HeaderValue, header};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt as _, Stream, StreamExt as _, stream};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use super::{Context, ProxyError, with_fallback};
use crate::plugin;
use crate::registry::balance::InFlight;

/// The client's body, shared by the attempts of one request. The stream is taken by the first
/// attempt that polls it; an attempt that failed before polling leaves it for the next one, so
/// a body is never replayed, only sent once.
#[derive(Debug)]
pub(super) struct RequestBody {
    shared: Arc<Shared>,
    done: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug)]
struct Shared {
    slot: Mutex<Option<BodyDataStream>>,
    started: AtomicBool,
    empty: bool,
    done: tokio::sync::watch::Sender<bool>,
    /// Why reading the client's body failed (malformed chunked encoding, a stall, a reset):
    /// the request is then the client's fault, not the upstream's.
    client_error: Mutex<Option<ProxyError>>,
}

impl RequestBody {
    /// Takes the client's body; a pause of `idle` between two reads fails it.
    pub fn new(body: Body, idle: Duration) -> Self {
        let empty = body.is_end_stream() || body.size_hint().exact() == Some(0);
        let (done, done_rx) = tokio::sync::watch::channel(empty);
        let stream = (!empty)
            .then(|| Body::new(IdleTimeout::new(body, idle, "the client")).into_data_stream());
        Self {
            shared: Arc::new(Shared {
                slot: Mutex::new(stream),
                started: AtomicBool::new(false),
                empty,
                done,
                client_error: Mutex::new(None),
            }),
            done: done_rx,
        }
    }

    /// The error that reading the client's body met, if any.
    pub fn client_error(&self) -> Option<ProxyError> {
        self.shared
            .client_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The body for one attempt.
    pub fn attempt(&self) -> Body {
        if self.shared.empty {
            return Body::empty();
        }
        Body::from_stream(Attempt {
            shared: Arc::clone(&self.shared),
            inner: None,
            taken: false,
        })
    }

    /// True when a new attempt would send the same body: it is empty or was never read.
    pub fn replayable(&self) -> bool {
        self.shared.empty || !self.shared.started.load(Ordering::Acquire)
    }

    /// Resolves once the whole body has been handed to the upstream.
    pub async fn sent(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }
}

#[derive(Debug)]
struct Attempt {
    shared: Arc<Shared>,
    inner: Option<BodyDataStream>,
    taken: bool,
}

impl Stream for Attempt {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.inner.is_none() {
            if this.taken {
                return Poll::Ready(None);
            }
            this.taken = true;
            this.shared.started.store(true, Ordering::Release);
            let taken = this
                .shared
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match taken {
                Some(inner) => this.inner = Some(inner),
                None => {
                    let err = std::io::Error::other(
                        "the request body was consumed by an earlier attempt",
                    );
                    return Poll::Ready(Some(Err(axum::Error::new(err))));
                }
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = Pin::new(inner).poll_next(cx);
        match &next {
            Poll::Ready(None) => {
                this.shared.done.send_replace(true);
            }
            Poll::Ready(Some(Err(err))) => {
                let timed_out = std::error::Error::source(err)
                    .and_then(|source| source.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                let error = if timed_out {
                    ProxyError::RequestTimeout(err.to_string())
                } else {
                    ProxyError::BadRequest(format!("the request body could not be read: {err}"))
                };
                *this
                    .shared
                    .client_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            }
            _ => {}
        }
        next
    }
}

/// A body that fails when no data arrives for `idle`: a stalled upstream (or client) does not
/// hold a connection forever. The timer is armed only when a read has to wait, so a body that
/// is already buffered costs none.
#[derive(Debug)]
pub(super) struct IdleTimeout<B = Incoming> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Who stalled, for the error: "the upstream" or "the client".
    sender: &'static str,
    /// Counts the request as in flight to its replica until the body is done with.
    in_flight: Option<InFlight>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration, sender: &'static str) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            sender,
            in_flight: None,
        }
    }

    /// Keeps `in_flight` until the body is dropped.
    pub fn holding(mut self, in_flight: Option<InFlight>) -> Self {
        self.in_flight = in_flight;
        self
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(std::io::Error::other)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{} sent nothing for {idle:?}", this.sender),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Content encodings the rewrite can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

fn encoding(headers: &HeaderMap) -> Option<Encoding> {
    let values: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|value| value.trim().to_ascii_lowercase())
        .filter(|value| !value.is_empty() && value != "identity")
        .collect();
    match values.as_slice() {
        [] => Some(Encoding::Identity),
        [one] if one == "gzip" || one == "x-gzip" => Some(Encoding::Gzip),
        [one] if one == "deflate" => Some(Encoding::Deflate),
        _ => None,
    }
}

/// Decodes `body`; `None` when it is invalid or decodes to more than `limit` bytes.
fn decode(body: &[u8], encoding: Encoding, limit: usize) -> Option<Vec<u8>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let read = match encoding {
        Encoding::Identity => return (body.len() <= limit).then(|| body.to_vec()),
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(body)
            .take(cap)
            .read_to_end(&mut out),
        // `deflate` is zlib-wrapped by the standard, raw by some servers.
        Encoding::Deflate => flate2::read::ZlibDecoder::new(body)
            .take(cap)
            .read_to_end(&mut out)
            .or_else(|_| {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .take(cap)
                    .read_to_end(&mut out)
            }),
    };
    (read.is_ok() && out.len() <= limit).then_some(out)
}

/// Buffers the body (up to `limit`), has the plugin rewrite it, and fixes the headers. A body
/// larger than the limit goes through `rewrite-chunk` instead, as it streams (the SDK's
/// default passes it unchanged); one in an encoding that cannot be decoded streams unchanged.
pub(super) async fn rewrite(
    upstream: Body,
    headers: &mut HeaderMap,
    limit: usize,
    ctx: &Context,
    response: &plugin::Response,
) -> Result<Body, ProxyError> {
    let Some(encoding) = encoding(headers) else {
        tracing::debug!(service = %ctx.service.id, "the body's content-encoding cannot be decoded: sent unchanged");
        return Ok(upstream);
    };
    if upstream
        .size_hint()
        .exact()
        .is_some_and(|len| len > limit as u64)
    {
        return Ok(rewrite_stream(upstream, headers, ctx, response.clone()));
    }
    let mut chunks = upstream.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| ProxyError::Reset {
            service: ctx.service.id.clone(),
            detail: super::retry::chain(&err),
        })?;
        buffer.extend_from_slice(&chunk);
        if buffer.len() > limit {
            // Too large to rewrite whole: what was read and the rest are streamed.
            let head = stream::once(async move { Ok::<Bytes, axum::Error>(buffer.freeze()) });
            let rest = Body::from_stream(head.chain(chunks));
            return Ok(rewrite_stream(rest, headers, ctx, response.clone()));
        }
    }
    let original = buffer.freeze();
    let encoded = original.clone();
    let decoded = tokio::task::spawn_blocking(move || decode(&encoded, encoding, limit))
        .await
        .ok()
        .flatten();
    let Some(decoded) = decoded else {
        set_length(headers, original.len());
        return Ok(Body::from(original));
    };
    let rewritten = with_fallback(
        &ctx.service,
        ctx.plugin.rewrite_body(response, &decoded, limit),
        || None,
    )
    .await?;
    match rewritten {
        Some(body) => {
            headers.remove(header::CONTENT_ENCODING);
            headers.remove(header::ACCEPT_RANGES);
            weaken_etag(headers);
            set_length(headers, body.len());
            Ok(Body::from(body))
        }
        None => {
            set_length(headers, original.len());
            Ok(Body::from(original))
        }
    }
}

/// The most decoded bytes passed to one `rewrite-chunk` call. A larger piece of body is
/// passed in several calls, so each call stays well within its deadline (a call past 1 ms of
/// CPU is throttled). Twice the most a plugin may hold back, so every call moves on by at
/// least half a chunk.
const MAX_CHUNK: usize = 2 * crate::plugin::guard::MAX_CHUNK_CARRY;

/// Upstream pieces that are already waiting are joined up to this size before a call, so a
/// body that arrives faster than it is sent costs fewer calls.
const JOIN_UP_TO: usize = 64 * 1024;

/// Compressed input is decoded this much at a time, so that a small piece of a compressed body
/// can never become more than a bounded amount of output before the plugin sees it.
const DECODE_STEP: usize = 4 * 1024;

/// Streams the body through the plugin's `rewrite-chunk`, sending each answer on as soon as it
/// comes: nothing waits for the end of the body, and no size limit applies. A body in an
/// encoding that cannot be decoded streams unchanged. If a call fails, the rest of the body,
/// held bytes included, goes out unchanged; on a fail-closed service it is cut off instead.
pub(super) fn rewrite_stream(
    upstream: Body,
    headers: &mut HeaderMap,
    ctx: &Context,
    response: plugin::Response,
) -> Body {
    let Some(encoding) = encoding(headers) else {
        tracing::debug!(service = %ctx.service.id, "the body's content-encoding cannot be decoded: streamed unchanged");
        return upstream;
    };
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
    let rewrite = StreamRewrite {
        chunks: upstream.into_data_stream(),
        decoder: Decoder::new(encoding),
        input: Vec::new(),
        state: Vec::new(),
        plugin: Arc::clone(&ctx.plugin),
        service: Arc::clone(&ctx.service),
        response,
        passing: false,
        ended: false,
    };
    let steps = stream::unfold(rewrite, |mut rewrite| async move {
        let step = rewrite.step().await?;
        Some((step, rewrite))
    });
    Body::from_stream(steps)
}

/// The state of one streamed rewrite.
struct StreamRewrite {
    chunks: BodyDataStream,
    decoder: Decoder,
    /// Decoded bytes not yet given to the plugin, starting with the ones it held back.
    input: Vec<u8>,
    /// What the plugin asked to be given back with the next chunk.
    state: Vec<u8>,
    plugin: Arc<plugin::Plugin>,
    service: Arc<crate::registry::Service>,
    response: plugin::Response,
    /// A call failed: the rest passes unchanged.
    passing: bool,
    /// The upstream body has ended, or the stream failed.
    ended: bool,
}

impl StreamRewrite {
    /// The next piece for the client; `None` once everything is sent.
    async fn step(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.ended {
                return None;
            }
            let last = match self.read().await {
                Ok(last) => last,
                Err(err) => {
                    self.ended = true;
                    return Some(Err(err));
                }
            };
            if last {
                self.ended = true;
            }
            let out = if self.passing {
                std::mem::take(&mut self.input)
            } else {
                match self.rewrite(last).await {
                    Ok(out) => out,
                    Err(err) => {
                        self.ended = true;
                        return Some(Err(err));
                    }
                }
            };
            if !out.is_empty() {
                return Some(Ok(Bytes::from(out)));
            }
        }
    }

    /// Reads what the upstream has sent into `input`, decoded: at least one piece, then
    /// whatever else is already waiting. True when the body has ended.
    async fn read(&mut self) -> Result<bool, std::io::Error> {
        let mut read = 0;
        let mut next = self.chunks.next().await;
        loop {
            match next {
                None => {
                    self.decoder.finish(&mut self.input)?;
                    return Ok(true);
                }
                Some(Err(err)) => {
                    return Err(std::io::Error::other(format!(
                        "the upstream body failed mid-stream: {}",
                        super::retry::chain(&err)
                    )));
                }
                Some(Ok(piece)) => {
                    read += piece.len();
                    self.decoder.decode(&piece, &mut self.input)?;
                }
            }
            if read >= JOIN_UP_TO || self.input.len() >= MAX_CHUNK {
                return Ok(false);
            }
            match self.chunks.next().now_or_never() {
                Some(waiting) => next = waiting,
                None => return Ok(false),
            }
        }
    }

    /// Passes `input` to the plugin, in calls of at most [`MAX_CHUNK`] bytes, and returns the
    /// output; what the plugin holds back stays in `input`. After a failure the unread input is
    /// returned unchanged and the rest of the body passes, or, fail-closed, the stream fails.
    async fn rewrite(&mut self, last: bool) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        loop {
            let size = self.input.len().min(MAX_CHUNK);
            let whole = size == self.input.len();
            if size == 0 && !last {
                return Ok(out);
            }
            let is_last = last && whole;
            let answer = self
                .plugin
                .rewrite_chunk(&self.response, &self.input[..size], &self.state, is_last)
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(err) if self.service.fail_closed => {
                    return Err(std::io::Error::other(format!(
                        "the plugin failed mid-body and service {:?} is fail-closed: {err}",
                        self.service.id
                    )));
                }
                Err(err) => {
                    tracing::warn!(service = %self.service.id, plugin = %self.plugin.name(), error = %err, "the streamed rewrite stopped: the rest of the body passes unchanged");
                    self.passing = true;
                    out.append(&mut self.input);
                    return Ok(out);
                }
            };
            out.extend_from_slice(&answer.output);
            self.state = answer.state;
            // The guard has checked that `held` is within the chunk.
            let held = usize::try_from(answer.held).map_or(size, |held| held.min(size));
            if is_last {
                // What the last call holds back is sent as it is.
                out.extend_from_slice(&self.input[size - held..size]);
                self.input.clear();
                return Ok(out);
            }
            self.input.drain(..size - held);
            if whole {
                // The held bytes wait for more input.
                return Ok(out);
            }
        }
    }
}

/// A streaming decoder of the body's content encoding.
enum Decoder {
    Identity,
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    /// `deflate`: zlib-wrapped by the standard, raw by some servers; which one is told by the
    /// first two bytes.
    Deflate(Option<DeflateDecoder>),
}

enum DeflateDecoder {
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Raw(flate2::write::DeflateDecoder<Vec<u8>>),
}

impl Decoder {
    fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Identity => Self::Identity,
            Encoding::Gzip => Self::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            Encoding::Deflate => Self::Deflate(None),
        }
    }

    /// Decodes `piece` onto `out`.
    fn decode(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Result<(), std::io::Error> {
        use std::io::Write as _;
        let invalid = |err: std::io::Error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the upstream body could not be decoded: {err}"),
            )
        };
        match self {
            Self::Identity => {
                out.extend_from_slice(piece);
                Ok(())
            }
            Self::Gzip(decoder) => {
                for step in piece.chunks(DECODE_STEP) {
                    decoder.write_all(step).map_err(invalid)?;
                    // Without a flush the decoder keeps its last output to itself.
                    decoder.flush().map_err(invalid)?;
                    out.append(decoder.get_mut());
                }
                Ok(())
            }
            Self::Deflate(decoder) => {
                let decoder = decoder.get_or_insert_with(|| {
                    // RFC 1950: CM 8 in the low nibble, and the header a multiple of 31.
                    let zlib = piece.len() >= 2
                        && piece[0] & 0x0f == 8
                        && (u16::from(piece[0]) << 8 | u16::from(piece[1])) % 31 == 0;
                    if zlib {
                        DeflateDecoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
                    } else {
                        DeflateDecoder::Raw(flate2::write::DeflateDecoder::new(Vec::new()))
                    }
                });
                for step in piece.chunks(DECODE_STEP) {
                    match decoder {
                        DeflateDecoder::Zlib(inner) => {
                            inner.write_all(step).map_err(invalid)?;
                            inner.flush().map_err(invalid)?;
                            out.append(inner.get_mut());
                        }
                        DeflateDecoder::Raw(inner) => {
                            inner.write_all(step).map_err(invalid)?;
                            inner.flush().map_err(invalid)?;
                            out.append(inner.get_mut());
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Flushes what the decoder still holds onto `out` at the end of the body.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), std::io::Error> {
        let finished = match self {
            Self::Identity | Self::Deflate(None) => return Ok(()),
            Self::Gzip(decoder) => decoder.try_finish().map(|()| decoder.get_mut()),
            Self::Deflate(Some(DeflateDecoder::Zlib(decoder))) => {
                decoder.try_finish().map(|()| decoder.get_mut())
            }
            Self::Deflate(Some(DeflateDecoder::Raw(decoder))) => {
                decoder.try_finish().map(|()| decoder.get_mut())
            }
        };
        let tail = finished.map_err(|err| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the upstream body ended mid-stream of its encoding: {err}"),
            )
        })?;
        out.append(tail);
        Ok(())
    }
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// A rewritten body is no longer byte-identical to what the upstream tagged.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if etag.starts_with("W/") {
        return;
    }
    if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
        headers.insert(header::ETAG, weak);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn decodes_gzip_and_deflate_within_the_limit() {
        let text = b"<html>hello</html>".repeat(10);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).expect("write");
        let gz = gz.finish().expect("gzip");
        assert_eq!(
            decode(&gz, Encoding::Gzip, 1 << 20).as_deref(),
            Some(&text[..])
        );
        assert_eq!(decode(&gz, Encoding::Gzip, 10), None, "over the limit");
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).expect("write");
        let zlib = zlib.finish().expect("zlib");
        assert_eq!(
            decode(&zlib, Encoding::Deflate, 1 << 20).as_deref(),
            Some(&text[..])
        );
        assert_eq!(decode(b"not gzip", Encoding::Gzip, 1 << 20), None);
    }

    #[test]
    fn encodings_recognised() {
        let mut headers = HeaderMap::new();
        assert_eq!(encoding(&headers), Some(Encoding::Identity));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert_eq!(encoding(&headers), Some(Encoding::Gzip));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(encoding(&headers), None);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        assert_eq!(encoding(&headers), None);
    }
}
