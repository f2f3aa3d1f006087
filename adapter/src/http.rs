//! Serving an axum [`Router`] on a TCP listener: the accept loop, one HTTP/1.1-or-HTTP/2
//! connection task per client, and a bounded drain on shutdown.
//!
//! Owns: accepting (with a backoff when `accept` fails, usually for want of file
//! descriptors), the request-head timeout, the request extensions every request of a
//! connection carries ([`ConnectInfo`], and whatever the caller adds — TLS adds the peer's
//! certificates), and [`serve_plain`] for standalone mode. Does not own TLS ([`crate::tls`]
//! wraps each accepted stream before handing it to `serve_connection`) or who the client
//! is ([`crate::auth`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, info_span, warn, Instrument};

/// How long an HTTP/1.1 client gets to send a full request head, so a slow-loris client cannot
/// hold a connection task forever. The apiserver sends complete requests at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After shutdown is requested, how long in-flight requests get to finish before their
/// connections are dropped. Metric reads finish in milliseconds; the kubelet's default
/// termination grace period (30 s) leaves room for this.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (usually out of file descriptors) so the loop does not spin
/// while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` over plain HTTP (no TLS, no peer certificates) until `shutdown`
/// completes. For standalone mode only: the caller must bind a loopback address, because
/// nothing here authenticates the peer.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, shutdown, move |stream, peer, drain| {
        let router = router.clone();
        serve_connection(stream, router, peer, Extensions::new(), drain)
    })
    .await;
}

/// Accepts connections until `shutdown` completes and runs `handle` for each in its own task,
/// then stops accepting, tells the connections to finish through the `watch` receiver each
/// got, and waits up to [`DRAIN_TIMEOUT`] for them.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small responses: do not let Nagle's algorithm delay them.
                    let _ = stream.set_nodelay(true);
                    let span = info_span!("connection", %peer);
                    connections.spawn(handle(stream, peer, drain_rx.clone()).instrument(span));
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
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = connections.len(),
            "connections did not finish within the drain timeout; closing them"
        );
        connections.abort_all();
    }
}

/// Serves one connection's requests with `router`, each carrying [`ConnectInfo`] and a copy
/// of `extensions`, until the client closes it or `drain` says to finish.
pub(crate) async fn serve_connection<I>(
    io: I,
    router: Router,
    peer: SocketAddr,
    mut extensions: Extensions,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    extensions.insert(ConnectInfo(peer));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().extend(extensions.clone());
        router.clone().oneshot(request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = drain.changed() => {
            // Finish requests in flight, refuse new ones, then close.
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

    #[tokio::test]
    async fn plain_serving_until_shutdown() {
        let router = Router::new().fallback(|request: axum::extract::Request| async move {
            match request.extensions().get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(peer)) if peer.ip().is_loopback() => "plain from loopback",
                _ => "no peer",
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_plain(listener, router, async {
            let _ = stopped.await;
        }));
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
}
