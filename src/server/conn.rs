//! Connections: an accept loop under a connection cap, HTTP/1 on each connection with header
//! and idle timeouts, and a graceful end on shutdown.
//!
//! Timeouts: a connection must deliver a request's headers within the header timeout of its
//! first byte (of opening, for a new connection), else it is answered 408 and closed; between
//! requests it may sit idle for the idle timeout. Slow and idle clients are disconnected, so
//! they cannot hold connections (and file descriptors) forever. The body timeout is the handlers' (see `read_body`).

use super::api::ApiError;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Connection limits and timeouts.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
}

/// Connections turned away at once with a 503 at most; more are closed unanswered.
const REJECTING: usize = 64;

/// What a connection did when: the watchdog reads it.
struct Activity {
    opened: Instant,
    /// Milliseconds since opening of the last byte read or written.
    last: AtomicU64,
    /// 1 + milliseconds since opening of the first byte of a request head not yet handled;
    /// 0 when none.
    head: AtomicU64,
    /// Requests being handled, until their response bodies end.
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            // A new connection owes its first request's headers from the start.
            head: AtomicU64::new(1),
            busy: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn bytes_in(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0 {
            let _ = self
                .head
                .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn bytes_out(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }
}

/// Counts one request as being handled while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Busy {
        a.busy.fetch_add(1, Ordering::Relaxed);
        a.head.store(0, Ordering::Relaxed);
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.bytes_out();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the watchdog ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// A request's headers did not all arrive in time.
    Headers,
    /// Nothing arrived between requests.
    Idle,
}

/// Returns when the connection has been slow or idle too long (and no request is in hand).
async fn watchdog(a: Arc<Activity>, header: Duration, idle: Duration) -> Expired {
    loop {
        let wait = if a.busy.load(Ordering::Relaxed) > 0 {
            header.min(idle)
        } else {
            let now = a.now();
            let head = a.head.load(Ordering::Relaxed);
            let deadline = if head > 0 {
                head - 1 + header.as_millis() as u64
            } else {
                a.last.load(Ordering::Relaxed) + idle.as_millis() as u64
            };
            if now >= deadline {
                return if head > 0 {
                    Expired::Headers
                } else {
                    Expired::Idle
                };
            }
            Duration::from_millis(deadline - now)
        };
        tokio::time::sleep(wait).await;
    }
}

/// A TCP stream that reports its traffic to its [`Activity`].
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_in();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_out();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_out();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Resolves once shutdown has begun.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Accepts connections until `shutdown`, then waits (at most `drain_timeout`) for the open
/// ones to finish.
pub async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let rejecting = Arc::new(Semaphore::new(REJECTING));
    let mut last_report: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: report it now and then, and give
                    // open connections time to end.
                    if last_report.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        super::log_line!("accepting a connection failed: {e}");
                        last_report = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let conn = connection(stream, app.clone(), limits.clone(), shutdown.clone());
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(_) => {
                if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                    tokio::spawn(reject(stream, permit));
                }
            }
        }
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all)).await;
}

/// Serves one connection until it closes, times out, or shutdown ends it.
async fn connection(
    stream: TcpStream,
    app: axum::Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, to answer a request whose headers never end.
    let (stream, answer) = match split_handle(stream) {
        Ok(pair) => pair,
        Err(_) => return,
    };
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        io: stream,
        activity: activity.clone(),
    });
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        use http_body_util::BodyExt;
        use tower_service::Service;
        let busy = Busy::new(tracked.clone());
        // A Router is always ready: `call` needs no `poll_ready` first.
        let mut app = app.clone();
        async move {
            let response = app.call(req).await?;
            // The request is in hand until its body (a stream, maybe) has been sent.
            Ok::<_, Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let timer = watchdog(activity, limits.header_timeout, limits.idle_timeout);
    tokio::pin!(timer);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            // Slow or idle: dropping the connection closes it, after a 408 for headers that
            // did not arrive in time.
            expired = &mut timer => {
                if expired == Expired::Headers {
                    request_timeout(answer, limits.header_timeout).await;
                }
                break;
            }
            _ = stopped(&mut shutdown), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The stream, and a second handle on its socket.
fn split_handle(stream: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let std = stream.into_std()?;
    let other = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(other)?))
}

/// Answers a request whose headers did not arrive in time with a 408 (the connection is then
/// closed).
async fn request_timeout(mut stream: TcpStream, after: Duration) {
    let body = ApiError::headers_timeout(after.as_secs_f64())
        .body()
        .to_string();
    let response = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Answers a connection over the cap with a 503 and closes it.
async fn reject(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let body = ApiError::too_many_connections().body().to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, so that closing does not reset the connection before
        // the client has read the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
