//! Serving an axum [`Router`] on a TCP listener: binding, the accept loop, one
//! HTTP/1.1-or-HTTP/2 connection task per client, the bounds that keep hostile clients from
//! exhausting the process, and a bounded drain on shutdown.
//!
//! Owns: [`bind`] (`[::]` dual-stack, IPv4 when the host has no IPv6), accepting (with a
//! backoff when `accept` fails, usually for want of file descriptors), the per-connection
//! bounds of [`ConnectionLimits`] — how many connections at once, how long a connection may
//! stay without a request, how long a request head may take, how long an idle connection is
//! kept — the request extensions every request of a connection carries ([`ConnectInfo`], and
//! whatever the caller adds — TLS adds the peer's certificates), and [`serve_plain`] for
//! standalone mode. Does not own: TLS ([`crate::tls`] wraps each accepted stream before
//! handing it to `serve_connection`) or who the client is ([`crate::auth`]).
//!
//! At the connection limit a new connection evicts the connection that has been quiet the
//! longest among those with no request in flight (a silent or slow-loris connection, or an
//! idle keep-alive one), so connections that send nothing cannot lock out the clients that
//! do; only when every connection has a request in flight is the new one closed at once.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::telemetry::Telemetry;

/// After shutdown is requested, how long in-flight requests get to finish before their
/// connections are dropped. Metric reads finish in milliseconds; the kubelet's default
/// termination grace period (30 s) leaves room for this and the shutdown delay.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (usually out of file descriptors) so the loop does not spin
/// while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections, and for how long, a client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; at the limit the quietest connection without a request in
    /// flight is closed to admit a new one.
    pub max_connections: usize,
    /// A connection must have started its first request (TLS handshake and request head
    /// included) within this long of being accepted; a silent connection is closed.
    pub first_request_timeout: Duration,
    /// HTTP/1.1: how long a request head may take once the connection waits for one (a
    /// slow-loris client trickling headers is closed; so is an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and nothing read for this long is closed
    /// gracefully (HTTP/2 `GOAWAY`).
    pub idle_timeout: Duration,
    /// Largest request head (HTTP/1.1 request line and headers; HTTP/2 header list): more
    /// is answered `431 Request Header Fields Too Large` by the HTTP layer.
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// Default [`ConnectionLimits::max_connections`] before the file-descriptor limit is
    /// taken into account. The kube-apiserver keeps a handful of HTTP/2 connections per
    /// replica; a few thousand leave room for every direct client a cluster has.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
}

impl Default for ConnectionLimits {
    /// 10 s to a first request (the kube-apiserver sends one the moment it connects), 10 s
    /// for a head, 90 s idle (above the aggregator's and client-go's keep-alive reuse), 64 KiB
    /// heads (a request with a 60 KB label selector still fits; Kubernetes clients send a
    /// few hundred bytes).
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: ConnectionLimits::DEFAULT_MAX_CONNECTIONS,
            first_request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// How a listener serves: its bounds and where it counts what it closed.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub limits: ConnectionLimits,
    pub telemetry: Arc<Telemetry>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            limits: ConnectionLimits::default(),
            telemetry: Arc::new(Telemetry::new()),
        }
    }
}

/// Binds `addr`. The unspecified IPv6 address (`[::]`, what `--listen=:PORT` means) is bound
/// dual-stack (`IPV6_V6ONLY` off), so IPv4 clients connect too; on a host without IPv6 it
/// falls back to `0.0.0.0` on the same port, and says so.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match bind_dual_stack(addr) {
            Ok(listener) => Ok(listener),
            Err(error) if ipv6_unavailable(&error) => {
                let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, v6.port()));
                info!(%error, %v4, "IPv6 is not available on this host; listening on IPv4 only");
                bind_socket(v4, None)
            }
            Err(error) => Err(error),
        },
        _ => bind_socket(addr, None),
    }
}

fn bind_dual_stack(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_socket(addr, Some(false))
}

/// Whether `error` says the host cannot do IPv6 at all (no IPv6 stack, or IPv6 disabled),
/// rather than that the port is taken or not ours to bind.
fn ipv6_unavailable(error: &io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    const EPROTONOSUPPORT: i32 = 93;
    matches!(
        error.raw_os_error(),
        Some(EAFNOSUPPORT | EADDRNOTAVAIL | EPROTONOSUPPORT)
    ) || error.kind() == io::ErrorKind::AddrNotAvailable
        || error.kind() == io::ErrorKind::Unsupported
}

fn bind_socket(addr: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(only_v6) = only_v6 {
        socket.set_only_v6(only_v6)?;
    }
    // A restarted adapter binds again at once, whatever is left in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves `router` over plain HTTP (no TLS, no peer certificates) until `shutdown`
/// completes. For standalone mode only: the caller must bind a loopback address, because
/// nothing here authenticates the peer.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let limits = options.limits;
    accept_loop(listener, options, shutdown, move |stream, peer, conn| {
        let router = router.clone();
        serve_connection(stream, router, peer, Extensions::new(), limits, conn)
    })
    .await;
}

/// What the accept loop and a connection's task share about that connection.
#[derive(Debug)]
pub(crate) struct Connection {
    accepted: Instant,
    /// Milliseconds after `accepted` of the last read that returned data.
    last_read_ms: AtomicU64,
    requests_started: AtomicU64,
    in_flight: AtomicUsize,
    /// Told to close (evicted at the connection limit).
    evict: Notify,
    evicted: AtomicBool,
    /// Shutdown: finish requests in flight, then close.
    drain: watch::Receiver<bool>,
}

impl Connection {
    fn new(drain: watch::Receiver<bool>) -> Connection {
        Connection {
            accepted: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            requests_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
            drain,
        }
    }

    fn last_activity(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Resolves when the connection has to go without finishing anything: evicted, or
    /// silent past the first-request timeout. Returns the reason, for our metrics.
    async fn hard_close(&self, limits: &ConnectionLimits) -> &'static str {
        let deadline = self.accepted + limits.first_request_timeout;
        tokio::select! {
            () = self.evict.notified() => "evicted",
            () = async {
                tokio::time::sleep_until(deadline.into()).await;
                // Silent since accept (or still in the TLS handshake or request head).
                while self.requests_started.load(Ordering::Relaxed) > 0 {
                    std::future::pending::<()>().await;
                }
            } => "no_request_timeout",
        }
    }

    /// Resolves once the connection has been idle (no request in flight, nothing read) for
    /// `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let due = self.last_activity() + idle;
            tokio::time::sleep_until(due.into()).await;
            if !self.busy() && self.last_activity() + idle <= Instant::now() {
                return;
            }
            if self.busy() {
                // Check again one idle period from now; a request in flight is never idle.
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// A stream that notes when it last read data, for the idle bound.
pub(crate) struct Tracked<I> {
    inner: I,
    conn: Arc<Connection>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = self.conn.accepted.elapsed().as_millis() as u64;
            self.conn.last_read_ms.store(ms, Ordering::Relaxed);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts connections until `shutdown` completes and runs `handle` for each in its own task
/// within [`ConnectionLimits`], then stops accepting, tells the connections to finish, and
/// waits up to [`DRAIN_TIMEOUT`] for them.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    F: Fn(Tracked<TcpStream>, SocketAddr, Arc<Connection>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let ServeOptions { limits, telemetry } = options;
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections: JoinSet<u64> = JoinSet::new();
    let mut open: std::collections::HashMap<u64, Arc<Connection>> = Default::default();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(id) = done {
                    open.remove(&id);
                }
                telemetry.connections_open(-1);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if open.len() >= limits.max_connections.max(1) && !evict_quietest(&open) {
                        // Every connection has a request in flight: refuse this one.
                        telemetry.connection_closed("refused_at_limit");
                        drop(stream);
                        continue;
                    }
                    // Small responses: do not let Nagle's algorithm delay them.
                    let _ = stream.set_nodelay(true);
                    let conn = Arc::new(Connection::new(drain_rx.clone()));
                    let id = next_id;
                    next_id += 1;
                    open.insert(id, conn.clone());
                    telemetry.connections_open(1);
                    let io = Tracked { inner: stream, conn: conn.clone() };
                    let served = handle(io, peer, conn.clone());
                    let telemetry = telemetry.clone();
                    let span = info_span!("connection", %peer);
                    connections.spawn(async move {
                        tokio::select! {
                            () = served => {}
                            reason = conn.hard_close(&limits) => {
                                debug!(reason, "closing the connection");
                                telemetry.connection_closed(reason);
                            }
                        }
                        id
                    }.instrument(span));
                }
                Err(error) => {
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {
            telemetry.connections_open(-1);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = connections.len(),
            "connections did not finish within the drain timeout; closing them"
        );
        telemetry.connections_open(-(connections.len() as i64));
        connections.abort_all();
    }
}

/// Tells the connection without a request in flight that has been quiet longest to close;
/// `false` when every connection is busy.
fn evict_quietest(open: &std::collections::HashMap<u64, Arc<Connection>>) -> bool {
    let victim = open
        .values()
        .filter(|c| !c.busy() && !c.evicted.load(Ordering::Relaxed))
        .min_by_key(|c| c.last_activity());
    match victim {
        Some(conn) => {
            conn.evicted.store(true, Ordering::Relaxed);
            conn.evict.notify_one();
            true
        }
        None => false,
    }
}

/// Counts a request of a connection as in flight while it lives.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn start(conn: &Arc<Connection>) -> InFlight {
        conn.requests_started.fetch_add(1, Ordering::Relaxed);
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection's requests with `router`, each carrying [`ConnectInfo`] and a copy
/// of `extensions`, until the client closes it, it has been idle for
/// [`ConnectionLimits::idle_timeout`], or shutdown says to finish.
pub(crate) async fn serve_connection<I>(
    io: I,
    router: Router,
    peer: SocketAddr,
    mut extensions: Extensions,
    limits: ConnectionLimits,
    conn: Arc<Connection>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    extensions.insert(ConnectInfo(peer));
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&service_conn);
        request.extensions_mut().extend(extensions.clone());
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut drain = conn.drain.clone();
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = drain.changed() => {
            // Finish requests in flight, refuse new ones, then close.
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
        () = conn.idle_for(limits.idle_timeout) => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(error) = result {
        debug!(%error, "connection closed with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hello() -> Router {
        Router::new().fallback(|request: axum::extract::Request| async move {
            match request.extensions().get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(peer)) if peer.ip().is_loopback() => "plain from loopback",
                _ => "no peer",
            }
        })
    }

    async fn start(
        limits: ConnectionLimits,
    ) -> (
        u16,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = ServeOptions {
            limits,
            ..ServeOptions::default()
        };
        let server = tokio::spawn(serve_plain(listener, hello(), options, async {
            let _ = stopped.await;
        }));
        (port, stop, server)
    }

    #[tokio::test]
    async fn plain_serving_until_shutdown() {
        let (port, stop, server) = start(ConnectionLimits::default()).await;
        let body = reqwest::get(format!("http://127.0.0.1:{port}/x"))
            .await
            .expect("get");
        assert_eq!(body.text().await.expect("text"), "plain from loopback");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("stops")
            .expect("task");
    }

    async fn get_once(port: u16) -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_evicted_at_the_limit() {
        let limits = ConnectionLimits {
            max_connections: 4,
            first_request_timeout: Duration::from_millis(500),
            ..ConnectionLimits::default()
        };
        let (port, stop, _server) = start(limits).await;
        // Four silent connections fill the server...
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect"),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...yet a client that sends a request is served: the quietest silent one goes.
        let answer = get_once(port).await.expect("served at the limit");
        assert!(answer.contains("plain from loopback"), "{answer}");
        // The silent ones are closed within the first-request timeout.
        for mut s in silent {
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("closed by the server within the timeout")
                .unwrap_or(0);
            assert_eq!(n, 0, "closed without an answer");
        }
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn dual_stack_by_default_when_the_host_has_ipv6() {
        let listener = bind("[::]:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = ServeOptions::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_plain(listener, hello(), options, async {
            let _ = stopped.await;
        }));
        let port = addr.port();
        let v4 = get_once(port).await.expect("IPv4 client");
        assert!(v4.contains("200 OK"), "{v4}");
        if addr.is_ipv6() {
            let mut stream = TcpStream::connect(("::1", port))
                .await
                .expect("IPv6 client");
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut out = String::new();
            stream.read_to_string(&mut out).await.expect("read");
            assert!(out.contains("200 OK"), "{out}");
        } else {
            eprintln!("no IPv6 on this host: bound {addr} (IPv4 only), as documented");
        }
        let _ = stop.send(());
    }
}
