//! Serving TCP connections so that no client can hold one: the accept loop, HTTP/1.1 per
//! connection, the three connection timeouts of the contract, and graceful shutdown.
//!
//! Why not `axum::serve` or hyper's own timers: `axum::serve` sets no timer at all, and hyper's
//! `header_read_timeout` starts when the connection *waits* for a request (so it also closes
//! idle keep-alive connections after that long) and closes without an answer. Here a small
//! watcher per connection keeps the contract's clocks itself:
//!
//! - **headers**: from the first byte of a request until hyper hands the complete head to the
//!   service, at most [`ConnectionLimits::header_read`]; then the connection answers a 408
//!   envelope and closes;
//! - **body**: a body that sends nothing for [`ConnectionLimits::body_idle`] fails to read
//!   (tower-http's `RequestBodyTimeoutLayer`), which the JSON and upload extractors answer as a
//!   408 envelope (see [`is_body_timeout`]);
//! - **idle**: a connection with no request in progress and no bytes moving for
//!   [`ConnectionLimits::keep_alive_idle`] is closed.
//!
//! hyper also answers some malformed requests itself (400, 414, 431) with an empty body before
//! any service sees them; the connection's I/O recognizes those answers and writes the error
//! envelope with an `X-Request-Id` in their place ([`hyper_answer`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_http::timeout::{RequestBodyTimeout, TimeoutError};

use crate::ApiError;

/// The contract's connection clocks ("Hostile clients"), overridable by environment so tests
/// need not wait a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers must all arrive within this long of its first byte.
    pub header_read: Duration,
    /// A request body that sends nothing for this long is abandoned.
    pub body_idle: Duration,
    /// A connection with no request in progress is closed after this long.
    pub keep_alive_idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read: Duration::from_secs(10),
            body_idle: Duration::from_secs(30),
            keep_alive_idle: Duration::from_secs(60),
        }
    }
}

impl ConnectionLimits {
    /// `HTTP_HEADER_TIMEOUT_MS`, `HTTP_BODY_TIMEOUT_MS`, `HTTP_IDLE_TIMEOUT_MS` (milliseconds,
    /// at least 1), each defaulting to the contract's number.
    pub fn from_env() -> Self {
        let defaults = ConnectionLimits::default();
        let read = |name: &str, default: Duration| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .unwrap_or(default)
        };
        ConnectionLimits {
            header_read: read("HTTP_HEADER_TIMEOUT_MS", defaults.header_read),
            body_idle: read("HTTP_BODY_TIMEOUT_MS", defaults.body_idle),
            keep_alive_idle: read("HTTP_IDLE_TIMEOUT_MS", defaults.keep_alive_idle),
        }
    }

    /// How often a connection's watcher looks at its clocks.
    fn tick(&self) -> Duration {
        (self.header_read.min(self.keep_alive_idle) / 8)
            .clamp(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// Whether a body read failed because the client stopped sending (the body timeout), anywhere
/// in `error`'s chain of causes.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The 408 a stalled body gets, where an answer can still be sent.
pub fn body_timeout_error() -> ApiError {
    ApiError::request_timeout("The request body stopped arriving")
}

/// Header fields hyper parses before giving up with its own 431; above the contract's 100 so
/// that [`crate::http_limits`] answers the contract's 431 in the envelope.
const MAX_PARSED_HEADERS: usize = 1024;

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets the
/// requests in flight finish (long uploads and downloads included) and closes idle connections.
/// The connection clocks come from [`ConnectionLimits::from_env`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = ConnectionLimits::from_env();
    let app = RequestBodyTimeout::new(app, limits.body_idle);
    // Dropping `stop` tells every connection to finish; `open` is closed once all are gone.
    let (stop, stopping) = watch::channel(());
    let (open, connections) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    if !is_connection_error(&e) {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            stream: Arc::new(stream),
            remote,
            limits,
            app: app.clone(),
            stopping: stopping.clone(),
            _open: connections.clone(),
        };
        tokio::spawn(connection.run());
    }
    drop(listener);
    drop(stop);
    drop(connections);
    open.closed().await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    stream: Arc<TcpStream>,
    remote: SocketAddr,
    limits: ConnectionLimits,
    app: RequestBodyTimeout<Router>,
    stopping: watch::Receiver<()>,
    /// Held while the connection lives: the server waits for every one at shutdown.
    _open: watch::Receiver<()>,
}

/// Why a connection's watcher ended it.
enum Ending {
    /// hyper finished (the client closed, an error, or a graceful close).
    Done,
    /// A request's headers did not arrive in time: answer 408 and close.
    HeaderTimeout,
}

impl Connection {
    async fn run(mut self) {
        let clock = Arc::new(Clocks::new());
        let io = WatchedIo {
            stream: self.stream.clone(),
            clock: clock.clone(),
            replacing: None,
        };
        let service = {
            let clock = clock.clone();
            let app = self.app.clone();
            let remote = self.remote;
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let in_flight = clock.request_started();
                request.extensions_mut().insert(ConnectInfo(remote));
                let call = app.clone().oneshot(request);
                async move {
                    let response = call.await?;
                    Ok::<_, Infallible>(response.map(|body| {
                        Body::new(Tracked {
                            inner: body,
                            _in_flight: in_flight,
                        })
                    }))
                }
            })
        };
        let ending = {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .header_read_timeout(None)
                .max_headers(MAX_PARSED_HEADERS)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            let mut tick = tokio::time::interval(self.limits.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break Ending::Done,
                    changed = self.stopping.changed(), if !closing => {
                        let _ = changed;
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = tick.tick() => match clock.verdict(&self.limits) {
                        Verdict::Fine => {}
                        Verdict::HeadersLate => break Ending::HeaderTimeout,
                        Verdict::Idle if !closing => {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                        Verdict::Idle => {}
                    },
                }
            }
        };
        match ending {
            Ending::HeaderTimeout => self.answer_header_timeout().await,
            Ending::Done if clock.refused.load(Ordering::Acquire) => {
                if let Ok(stream) = Arc::try_unwrap(self.stream) {
                    linger(stream).await;
                }
            }
            Ending::Done => {}
        }
    }

    /// Writes the 408 envelope on a connection whose request headers stopped arriving, then
    /// closes it gently (the client's unread bytes would otherwise reset the connection before
    /// it reads the answer).
    async fn answer_header_timeout(self) {
        let Ok(stream) = Arc::try_unwrap(self.stream) else {
            return;
        };
        let request_id = crate::request_id::generate();
        let error = ApiError::request_timeout(format!(
            "The request headers did not arrive within {} ms",
            self.limits.header_read.as_millis()
        ));
        tracing::info!(
            request_id,
            status = 408,
            "connection closed: request headers too slow"
        );
        let answer = raw_error_response(&error, &request_id);
        let mut stream = stream;
        let written = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
        if matches!(written, Ok(Ok(()))) {
            linger(stream).await;
        }
    }
}

/// Closes a connection whose request was refused unread: our side first, then what the client
/// still sends is read and dropped for a moment, since closing with unread bytes resets the
/// connection, and a reset can destroy the answer before the client reads it.
async fn linger(mut stream: TcpStream) {
    let _ = tokio::time::timeout(LINGER, async {
        stream.shutdown().await?;
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// How long, and how many bytes, a refused client is read after its answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// A connection's clocks, in milliseconds since it was accepted (0: not running).
struct Clocks {
    origin: Instant,
    /// The first byte of a request whose head is not complete yet.
    head_started: AtomicU64,
    /// The last time bytes moved either way, or a response finished.
    last_activity: AtomicU64,
    /// Requests handed to the service whose response has not been fully sent.
    in_flight: AtomicUsize,
    /// hyper refused a request unread (its answer was replaced by the envelope).
    refused: std::sync::atomic::AtomicBool,
}

enum Verdict {
    Fine,
    HeadersLate,
    Idle,
}

impl Clocks {
    fn new() -> Self {
        Clocks {
            origin: Instant::now(),
            head_started: AtomicU64::new(0),
            last_activity: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn bytes_read(&self) {
        let now = self.now();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_started
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn bytes_written(&self) {
        self.last_activity.store(self.now(), Ordering::Relaxed);
    }

    /// hyper has a complete head: the header clock stops and a request is in flight until its
    /// response body is dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let now = self.now();
        let head_started = self.head_started.load(Ordering::Acquire);
        if head_started != 0 {
            if now.saturating_sub(head_started) >= limits.header_read.as_millis() as u64 {
                return Verdict::HeadersLate;
            }
            return Verdict::Fine;
        }
        let idle_for = now.saturating_sub(self.last_activity.load(Ordering::Relaxed));
        if self.in_flight.load(Ordering::Acquire) == 0
            && idle_for >= limits.keep_alive_idle.as_millis() as u64
        {
            return Verdict::Idle;
        }
        Verdict::Fine
    }
}

/// A request in flight on a connection; dropped with its response body.
struct InFlight(Arc<Clocks>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.bytes_written();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: reads and writes move the connection's clocks, and an answer
/// hyper writes on its own is replaced by the envelope.
struct WatchedIo {
    stream: Arc<TcpStream>,
    clock: Arc<Clocks>,
    /// The envelope being written in place of hyper's answer: (bytes, written so far, the
    /// length of hyper's buffer to report once done).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self.stream.try_read(unfilled) {
                Ok(n) => {
                    if n > 0 {
                        self.clock.bytes_read();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl WatchedIo {
    fn poll_write_raw(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Ok(n) => {
                    self.clock.bytes_written();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() && self.clock.in_flight.load(Ordering::Acquire) == 0 {
            if let Some(answer) = hyper_answer(buf) {
                self.clock.refused.store(true, Ordering::Release);
                self.replacing = Some((answer, 0, buf.len()));
            }
        }
        if let Some((answer, mut written, reported)) = self.replacing.take() {
            while written < answer.len() {
                match self.poll_write_raw(cx, &answer[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.replacing = Some((answer, written, reported));
                        return Poll::Pending;
                    }
                }
            }
            return Poll::Ready(Ok(reported));
        }
        self.poll_write_raw(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket closes when the connection's last handle drops (right after hyper is done);
    /// a header timeout still needs it to write its answer.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// If `buf` is an answer hyper wrote on its own (a parse error: a status of 400 or above, an
/// empty body and no `X-Request-Id`, which every answer of ours carries), the envelope to write
/// instead.
fn hyper_answer(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(buf) else {
        return None;
    };
    let status = response.code?;
    let empty = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() == b"0");
    let ours = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("x-request-id"));
    if status < 400 || !empty || ours || head_len != buf.len() {
        return None;
    }
    let error = match status {
        414 => ApiError::uri_too_long(crate::http_limits::MAX_TARGET_BYTES),
        431 => ApiError::headers_too_large("The request's header fields are too large or too many"),
        _ => ApiError::bad_request("The request line or a header is malformed"),
    };
    let request_id = crate::request_id::generate();
    tracing::info!(
        request_id,
        status = error.status().as_u16(),
        "request refused by the HTTP parser"
    );
    Some(raw_error_response(&error, &request_id))
}

/// `error` as a complete HTTP/1.1 response that closes the connection, for answers written
/// beneath the router.
fn raw_error_response(error: &ApiError, request_id: &str) -> Vec<u8> {
    let mut envelope = error.body();
    envelope.error.trace_id = request_id.to_owned();
    let body = serde_json::to_vec(&envelope).unwrap_or_default();
    let status = error.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_are_replaced_by_the_envelope() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 12:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(hyper_answer(hyper_414).expect("replaced")).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        assert!(answer.contains("x-request-id: req_"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let envelope: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(envelope["error"]["code"], "URI_TOO_LONG");
        assert_eq!(envelope["error"]["status"], 414);

        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-request-id: req_0123456789abcdef\r\n\r\n";
        assert!(hyper_answer(ours).is_none());
        let continue_100 = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert!(hyper_answer(continue_100).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(hyper_answer(with_body).is_none());
    }

    #[test]
    fn limits_default_to_the_contract() {
        let limits = ConnectionLimits::default();
        assert_eq!(limits.header_read, Duration::from_secs(10));
        assert_eq!(limits.body_idle, Duration::from_secs(30));
        assert_eq!(limits.keep_alive_idle, Duration::from_secs(60));
    }
}
