//! The scraper's HTTP/1.1 client: one GET per scrape, keep-alive kept as a bare socket.
//!
//! Owns: connecting to targets (plain TCP, or TLS for `https` targets), sending the scrape
//! request, reading the body within the size limit (gzip decoded as it arrives, so a small
//! compressed bomb is refused too), and keeping each target's connection open between
//! scrapes.
//!
//! Why not a general-purpose client (reqwest, hyper-util's pooled client): those keep every
//! idle keep-alive connection as a running HTTP/1 connection — a spawned task, hyper's 8 KiB
//! read buffer and 8 KiB header write buffer, a dispatch channel and a pool entry — 28,866
//! bytes per target measured by `adapter/tests/connection_memory.rs`, 275 MiB at 10,000
//! targets. Here an idle connection is only its socket (and its TLS session for `https`):
//! each scrape runs hyper's HTTP/1 state machine over the socket in the scrape's own task
//! ([`hyper::client::conn::http1`], no task spawned) and takes the socket back afterwards
//! ([`hyper::client::conn::http1::Connection::without_shutdown`]), so the buffers live only
//! while a scrape is in flight.
//!
//! Kept from the reqwest client it replaces (reqwest 0.12 with hyper-util 0.1 and
//! tower-http's decompression): one deadline for connect, request and body
//! (`timeout`); `Accept-Encoding: gzip` and gzip decoding when `Content-Encoding` is exactly
//! `gzip` (several members accepted); no proxy; redirects never followed; `TCP_NODELAY`; at
//! most one idle connection per target (scheme, host and port), dropped after 90 s idle; TLS
//! with the webpki roots, SNI and ALPN `http/1.1`; the failure classes of [`ScrapeFailure`].
//!
//! One difference, deliberate: a request that fails on a reused connection before any
//! response arrives is sent once more on a new connection (reqwest failed the scrape unless
//! hyper knew the request was never written). It is the keep-alive race — the target closing
//! the idle connection just as the next scrape is sent — which a target whose keep-alive
//! timeout equals the scrape interval (uvicorn's default is 5 s) can meet on any scrape; a
//! GET is safe to repeat, and a fresh connection that fails the same way is not retried.

use crate::store::ScrapeFailure;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, CONNECTION, CONTENT_ENCODING, HOST};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io::Write;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// An idle connection older than this is closed instead of reused (reqwest's default pool
/// idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration for `https` targets could not be built.
    #[error("building the TLS client configuration")]
    Tls(#[from] rustls::Error),
}

/// A connection to a target: plain TCP, or TLS over TCP (boxed: a TLS session is large and
/// rare among targets).
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether an idle connection can carry another request: nothing arrived on it while
    /// idle (neither the peer's close nor stray bytes). Peeks without blocking or consuming.
    fn still_open(&self) -> bool {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.tcp()).peek(&mut byte) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            // 0: the peer closed it; more: bytes nobody asked for.
            Ok(_) => false,
        }
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => std::pin::Pin::new(tcp).poll_read(cx, buf),
            Conn::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => std::pin::Pin::new(tcp).poll_write(cx, buf),
            Conn::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => std::pin::Pin::new(tcp).poll_flush(cx),
            Conn::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => std::pin::Pin::new(tcp).poll_shutdown(cx),
            Conn::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An idle connection and since when it has been idle.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections, one per target at most, keyed by `scheme://host:port`.
struct Pool {
    idle: HashMap<Box<str>, Idle>,
    /// When expired entries (targets no longer scraped) were last swept out.
    swept: Instant,
}

/// The scraper's HTTP client. Cheap to share (`&`); one per scraper.
pub struct ScrapeClient {
    timeout: Duration,
    keep_alive: bool,
    tls: TlsConnector,
    pool: Mutex<Pool>,
}

impl std::fmt::Debug for ScrapeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeClient")
            .field("timeout", &self.timeout)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// A scraped body and the headers of its response.
#[derive(Debug)]
pub struct Response {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Where a URL points, parsed once per fetch.
struct Dest {
    https: bool,
    /// `scheme://host:port`: the pool's key.
    key: String,
    /// The host without IPv6 brackets, for connecting and TLS.
    host: String,
    port: u16,
    /// The `Host` header: the host, and the port unless it is the scheme's default.
    host_header: HeaderValue,
    /// The request target (origin form).
    path: Uri,
}

impl Dest {
    fn parse(url: &str) -> Option<Dest> {
        let uri: Uri = url.parse().ok()?;
        let https = match uri.scheme_str()? {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let authority = uri.authority()?;
        let bracketed = authority.host();
        if bracketed.is_empty() {
            return None;
        }
        let default_port = if https { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = bracketed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bracketed)
            .to_owned();
        let host_header = if port == default_port {
            HeaderValue::from_str(bracketed).ok()?
        } else {
            HeaderValue::from_str(&format!("{bracketed}:{port}")).ok()?
        };
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .ok()?;
        Some(Dest {
            key: format!(
                "{}://{bracketed}:{port}",
                if https { "https" } else { "http" }
            ),
            https,
            host,
            port,
            host_header,
            path,
        })
    }
}

/// Why one exchange on one connection ended without a body.
enum Failed {
    /// Before any response arrived (the request may not have reached the target).
    BeforeResponse,
    After(ScrapeFailure),
}

/// A `Write` that keeps at most `max` bytes and fails past them (the gzip decoder's output).
struct Capped {
    body: Vec<u8>,
    max: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.body.len() + buf.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other("body over the limit"));
        }
        self.body.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ScrapeClient {
    /// A client whose every fetch (connect, request and body) ends within `timeout`; with
    /// `keep_alive` each target's connection is kept open between scrapes.
    pub fn new(timeout: Duration, keep_alive: bool) -> Result<ScrapeClient, ClientError> {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ScrapeClient {
            timeout,
            keep_alive,
            tls: TlsConnector::from(Arc::new(tls)),
            pool: Mutex::new(Pool {
                idle: HashMap::new(),
                swept: Instant::now(),
            }),
        })
    }

    /// Idle connections held now (one per target at most).
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().map_or(0, |p| p.idle.len())
    }

    /// GETs `url` with `accept`, refusing a body over `max_body_bytes` (after gzip decoding).
    pub async fn get(
        &self,
        url: &str,
        accept: &'static str,
        max_body_bytes: usize,
    ) -> Result<Response, ScrapeFailure> {
        // An unusable URL is what reqwest reported as a builder error: not a timeout, not a
        // connect error.
        let dest = Dest::parse(url).ok_or(ScrapeFailure::Body)?;
        let deadline = Instant::now() + self.timeout;
        tokio::time::timeout_at(
            deadline,
            self.get_by(&dest, accept, max_body_bytes, deadline),
        )
        .await
        .unwrap_or(Err(ScrapeFailure::Timeout))
    }

    async fn get_by(
        &self,
        dest: &Dest,
        accept: &'static str,
        max_body_bytes: usize,
        deadline: Instant,
    ) -> Result<Response, ScrapeFailure> {
        if let Some(conn) = self.take_idle(&dest.key) {
            match self
                .exchange(conn, dest, accept, max_body_bytes, deadline)
                .await
            {
                Ok(response) => return Ok(response),
                Err(Failed::After(failure)) => return Err(failure),
                // The kept connection was closed under us: once more on a new one.
                Err(Failed::BeforeResponse) => {}
            }
        }
        let conn = self.connect(dest).await?;
        match self
            .exchange(conn, dest, accept, max_body_bytes, deadline)
            .await
        {
            Ok(response) => Ok(response),
            Err(Failed::After(failure)) => Err(failure),
            Err(Failed::BeforeResponse) => Err(ScrapeFailure::Body),
        }
    }

    async fn connect(&self, dest: &Dest) -> Result<Conn, ScrapeFailure> {
        let tcp = TcpStream::connect((dest.host.as_str(), dest.port))
            .await
            .map_err(|_| ScrapeFailure::Connect)?;
        tcp.set_nodelay(true).map_err(|_| ScrapeFailure::Connect)?;
        if !dest.https {
            return Ok(Conn::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(dest.host.clone())
            .map_err(|_| ScrapeFailure::Connect)?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|_| ScrapeFailure::Connect)?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    /// One request and its whole response on `conn`; puts `conn` back if it may be reused.
    async fn exchange(
        &self,
        conn: Conn,
        dest: &Dest,
        accept: &'static str,
        max_body_bytes: usize,
        deadline: Instant,
    ) -> Result<Response, Failed> {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(conn))
                .await
                .map_err(|_| Failed::BeforeResponse)?;
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = dest.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, dest.host_header.clone());
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));

        // The connection is driven here, beside the request, not in a task of its own.
        let connection = connection.without_shutdown();
        tokio::pin!(connection);
        let mut ended = None;
        let read = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| Failed::BeforeResponse)?;
            let read = read_response(response, max_body_bytes).await;
            // No more requests: the connection hands its socket back once idle.
            drop(sender);
            read.map_err(Failed::After)
        };
        tokio::pin!(read);
        let (response, reusable) = loop {
            tokio::select! {
                biased;
                read = &mut read => break read?,
                end = &mut connection, if ended.is_none() => ended = Some(end),
            }
        };
        if self.keep_alive && reusable {
            let parts = match ended {
                Some(end) => end.ok(),
                None => tokio::time::timeout_at(deadline, connection)
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            if let Some(parts) = parts.filter(|p| p.read_buf.is_empty()) {
                self.put_idle(&dest.key, parts.io.into_inner());
            }
        }
        Ok(response)
    }

    fn take_idle(&self, key: &str) -> Option<Conn> {
        let idle = self.pool.lock().ok()?.idle.remove(key)?;
        (idle.since.elapsed() < IDLE_TIMEOUT && idle.conn.still_open()).then_some(idle.conn)
    }

    fn put_idle(&self, key: &str, conn: Conn) {
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(pool.swept) >= IDLE_TIMEOUT {
            // Targets that went away leave their connection behind: closed here, at most
            // one sweep per idle timeout.
            pool.idle
                .retain(|_, idle| now.duration_since(idle.since) < IDLE_TIMEOUT);
            pool.swept = now;
        }
        pool.idle.insert(key.into(), Idle { conn, since: now });
    }
}

/// Reads a response: its status, then its body within `max_body_bytes` (decoded if gzipped).
/// Also says whether the connection may carry another request afterwards.
async fn read_response(
    response: hyper::Response<hyper::body::Incoming>,
    max_body_bytes: usize,
) -> Result<(Response, bool), ScrapeFailure> {
    let status = response.status();
    if status.is_redirection() {
        return Err(ScrapeFailure::Redirect);
    }
    if !status.is_success() {
        return Err(ScrapeFailure::HttpStatus);
    }
    let (parts, mut incoming) = response.into_parts();
    let reusable = keeps_alive(parts.version, &parts.headers);
    let gzip = parts
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|e| e.as_bytes() == b"gzip");
    let mut headers = parts.headers;
    let body = if gzip {
        headers.remove(CONTENT_ENCODING);
        headers.remove(http::header::CONTENT_LENGTH);
        let mut decoder = flate2::write::MultiGzDecoder::new(Capped {
            body: Vec::new(),
            max: max_body_bytes,
            over: false,
        });
        let too_large = |decoder: &flate2::write::MultiGzDecoder<Capped>| {
            if decoder.get_ref().over {
                ScrapeFailure::BodyTooLarge
            } else {
                ScrapeFailure::Body
            }
        };
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| ScrapeFailure::Body)?;
            if let Ok(data) = frame.into_data() {
                if decoder.write_all(&data).is_err() {
                    return Err(too_large(&decoder));
                }
            }
        }
        if decoder.try_finish().is_err() {
            return Err(too_large(&decoder));
        }
        decoder.finish().map_err(|_| ScrapeFailure::Body)?.body
    } else {
        if hyper::body::Body::size_hint(&incoming)
            .exact()
            .is_some_and(|len| len > max_body_bytes as u64)
        {
            return Err(ScrapeFailure::BodyTooLarge);
        }
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| ScrapeFailure::Body)?;
            if let Ok(data) = frame.into_data() {
                if body.len() + data.len() > max_body_bytes {
                    return Err(ScrapeFailure::BodyTooLarge);
                }
                body.extend_from_slice(&data);
            }
        }
        body
    };
    Ok((Response { headers, body }, reusable))
}

/// Whether the response leaves the connection open for another request: HTTP/1.1, no
/// `Connection: close`, and a body whose end is marked (length or chunked), not read to the
/// connection's end.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let close = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("close"))
        })
    });
    let delimited = headers.contains_key(http::header::CONTENT_LENGTH)
        || headers.contains_key(http::header::TRANSFER_ENCODING);
    version == Version::HTTP_11 && !close && delimited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_becomes_its_pool_key_host_header_and_origin_form_target() {
        let d = Dest::parse("http://10.0.0.7:8000/metrics?x=1").unwrap();
        assert_eq!(d.key, "http://10.0.0.7:8000");
        assert_eq!(
            (d.host.as_str(), d.port, d.https),
            ("10.0.0.7", 8000, false)
        );
        assert_eq!(d.host_header, "10.0.0.7:8000");
        assert_eq!(d.path, "/metrics?x=1");
        let d = Dest::parse("https://[fd00::1]/metrics").unwrap();
        assert_eq!(d.key, "https://[fd00::1]:443");
        assert_eq!((d.host.as_str(), d.port, d.https), ("fd00::1", 443, true));
        assert_eq!(d.host_header, "[fd00::1]");
        let d = Dest::parse("http://pod.example:80").unwrap();
        assert_eq!(d.host_header, "pod.example");
        assert_eq!(d.path, "/");
        assert!(Dest::parse("ftp://10.0.0.7/metrics").is_none());
        assert!(Dest::parse("/metrics").is_none());
        assert!(Dest::parse("not a url").is_none());
    }

    #[test]
    fn only_a_delimited_http_1_1_response_without_close_keeps_the_connection() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(keeps_alive(Version::HTTP_11, &h));
        assert!(!keeps_alive(Version::HTTP_10, &h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        assert!(!keeps_alive(Version::HTTP_11, &h));
        let mut h = HeaderMap::new();
        assert!(!keeps_alive(Version::HTTP_11, &h), "read to the end");
        h.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(keeps_alive(Version::HTTP_11, &h));
    }
}
