//! The scraper's HTTP client (src/scrape_http.rs) against scripted loopback servers: every
//! behaviour of the reqwest client it replaced — gzip, the body limit (declared, streamed and
//! decoded), redirects never followed, the failure classes, one deadline, keep-alive — and
//! the keep-alive cases a bare kept socket must get right (the peer closing it while idle, a
//! `Connection: close` response, a body read to the connection's end).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use flate2::write::GzEncoder;
use flate2::Compression;
use inferscale_adapter::scrape::{fetch, scrape_client, ACCEPT};
use inferscale_adapter::store::ScrapeFailure;
use inferscale_metrics::parser::Format;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server does with the n-th request it reads (counted over all
/// connections, from 0).
#[derive(Clone)]
enum Reply {
    /// Writes these bytes and keeps reading requests on the connection.
    Keep(Vec<u8>),
    /// Writes these bytes and closes the connection.
    Close(Vec<u8>),
    /// Closes the connection without answering.
    Drop,
    /// Never answers (keeps the connection open).
    Hang,
}

struct Server {
    url: String,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Request heads read, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

async fn serve(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let (a, r) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(stream, script.clone(), r.clone()));
        }
    });
    Server {
        url,
        accepted,
        requests,
    }
}

async fn connection(
    mut stream: TcpStream,
    script: Arc<impl Fn(usize) -> Reply>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (GETs have no body).
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                break String::from_utf8(head).unwrap();
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let n = {
            let mut requests = requests.lock().unwrap();
            requests.push(head);
            requests.len() - 1
        };
        match script(n) {
            Reply::Keep(bytes) => stream.write_all(&bytes).await.unwrap(),
            Reply::Close(bytes) => {
                stream.write_all(&bytes).await.unwrap();
                return;
            }
            Reply::Drop => return,
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
        }
    }
}

const BODY: &str =
    "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3\n";

fn response(extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut r =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in body.chunks(1000) {
        r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        r.extend_from_slice(chunk);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_body_comes_back_with_its_format_and_the_request_asks_for_text_and_gzip() {
    let server = serve(|_| Reply::Keep(response("", BODY.as_bytes()))).await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    let fetched = fetch(&client, &server.url, 1 << 20).await.unwrap();
    assert_eq!(fetched.body, BODY.as_bytes());
    assert_eq!(fetched.format, Format::Prometheus);
    let head = server.requests.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /metrics http/1.1\r\n"), "{head}");
    let port = server
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\naccept: {}\r\n", ACCEPT.to_ascii_lowercase())),
        "{head}"
    );
    assert!(head.contains("\r\naccept-encoding: gzip\r\n"), "{head}");
}

#[tokio::test]
async fn an_openmetrics_content_type_is_reported() {
    let server = serve(|_| {
        Reply::Keep(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            )
            .into_bytes(),
        )
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    let fetched = fetch(&client, &server.url, 1 << 20).await.unwrap();
    assert_eq!(fetched.format, Format::OpenMetrics);
}

#[tokio::test]
async fn a_gzipped_body_is_decoded_and_a_chunked_one_read_whole() {
    let big = BODY.repeat(200);
    let gz = gzip(big.as_bytes());
    let server = serve(move |n| match n {
        0 => Reply::Keep(response("content-encoding: gzip\r\n", &gz)),
        _ => Reply::Keep(chunked(big.as_bytes())),
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    let fetched = fetch(&client, &server.url, 1 << 20).await.unwrap();
    assert_eq!(fetched.body, BODY.repeat(200).as_bytes());
    let fetched = fetch(&client, &server.url, 1 << 20).await.unwrap();
    assert_eq!(fetched.body, BODY.repeat(200).as_bytes());
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "one kept connection"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_declared_streamed_or_decoded() {
    let limit = 10_000;
    let big = vec![b'a'; limit + 1];
    let (declared, streamed, bomb) = (response("", &big), chunked(&big), gzip(&big));
    assert!(bomb.len() < limit / 10, "a small compressed body");
    let server = serve(move |n| match n {
        0 => Reply::Keep(declared.clone()),
        1 => Reply::Keep(streamed.clone()),
        _ => Reply::Keep(response("content-encoding: gzip\r\n", &bomb)),
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    for what in ["declared", "streamed", "decoded"] {
        let got = fetch(&client, &server.url, limit).await;
        assert_eq!(got.unwrap_err(), ScrapeFailure::BodyTooLarge, "{what}");
    }
    // At the limit exactly, a body is taken.
    let exact = serve(move |_| Reply::Keep(response("", &vec![b'a'; limit]))).await;
    assert_eq!(
        fetch(&client, &exact.url, limit).await.unwrap().body.len(),
        limit
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_an_error_status_fails() {
    let server = serve(|n| match n {
        0 => Reply::Keep(
            b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/metrics\r\ncontent-length: 0\r\n\r\n"
                .to_vec(),
        ),
        _ => Reply::Keep(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec()),
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    assert_eq!(
        fetch(&client, &server.url, 1 << 20).await.unwrap_err(),
        ScrapeFailure::Redirect
    );
    assert_eq!(
        fetch(&client, &server.url, 1 << 20).await.unwrap_err(),
        ScrapeFailure::HttpStatus
    );
    assert_eq!(server.requests.lock().unwrap().len(), 2, "nothing followed");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure_and_a_silent_target_a_timeout() {
    let client = scrape_client(Duration::from_millis(300), true).unwrap();
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(
        fetch(&client, &refused, 1 << 20).await.unwrap_err(),
        ScrapeFailure::Connect
    );
    let silent = serve(|_| Reply::Hang).await;
    let started = Instant::now();
    assert_eq!(
        fetch(&client, &silent.url, 1 << 20).await.unwrap_err(),
        ScrapeFailure::Timeout
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_times_out_within_the_same_deadline() {
    // The head and half the body, then nothing: the deadline covers the body too.
    let server = serve(|_| {
        Reply::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
    })
    .await;
    let client = scrape_client(Duration::from_millis(300), true).unwrap();
    let started = Instant::now();
    assert_eq!(
        fetch(&client, &server.url, 1 << 20).await.unwrap_err(),
        ScrapeFailure::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn garbage_or_a_cut_body_is_a_body_failure() {
    let server = serve(|n| match n {
        0 => Reply::Close(b"this is not HTTP\r\n\r\n".to_vec()),
        1 => Reply::Close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec()),
        _ => Reply::Keep(response("content-encoding: gzip\r\n", b"not gzip at all")),
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    for what in ["not HTTP", "cut body", "not gzip"] {
        assert_eq!(
            fetch(&client, &server.url, 1 << 20).await.unwrap_err(),
            ScrapeFailure::Body,
            "{what}"
        );
    }
    assert_eq!(
        fetch(&client, "ftp://127.0.0.1/metrics", 1 << 20)
            .await
            .unwrap_err(),
        ScrapeFailure::Body,
        "an unusable URL"
    );
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_and_without_it_each_scrape_has_its_own() {
    let server = serve(|_| Reply::Keep(response("", BODY.as_bytes()))).await;
    let kept = scrape_client(TIMEOUT, true).unwrap();
    for _ in 0..5 {
        fetch(&kept, &server.url, 1 << 20).await.unwrap();
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(kept.idle_connections(), 1);
    let closed = scrape_client(TIMEOUT, false).unwrap();
    for _ in 0..3 {
        fetch(&closed, &server.url, 1 << 20).await.unwrap();
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
    assert_eq!(closed.idle_connections(), 0);
}

#[tokio::test]
async fn a_connection_the_target_closed_while_idle_is_replaced() {
    // Every response closes its connection after it (as a server with a short keep-alive
    // timeout does while the client sleeps between scrapes) without saying so.
    let server = serve(|_| Reply::Close(response("", BODY.as_bytes()))).await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    for _ in 0..3 {
        assert_eq!(
            fetch(&client, &server.url, 1 << 20).await.unwrap().body,
            BODY.as_bytes()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_lost_on_a_kept_connection_is_sent_again_on_a_new_one() {
    // The second request arrives on the kept connection and the target closes it without
    // answering (it closed the idle connection as the request was sent): the scrape still
    // succeeds, on a second connection. The one behaviour that differs from the reqwest
    // client (which failed this scrape as a body error; every other test here passes against
    // it too).
    let server = serve(|n| match n {
        1 => Reply::Drop,
        _ => Reply::Keep(response("", BODY.as_bytes())),
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    fetch(&client, &server.url, 1 << 20).await.unwrap();
    assert_eq!(
        fetch(&client, &server.url, 1 << 20).await.unwrap().body,
        BODY.as_bytes()
    );
    assert_eq!(server.requests.lock().unwrap().len(), 3);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    // On a new connection, the same loss is a failed scrape, not retried.
    let fresh = serve(|_| Reply::Drop).await;
    assert_eq!(
        fetch(&client, &fresh.url, 1 << 20).await.unwrap_err(),
        ScrapeFailure::Body
    );
    assert_eq!(fresh.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_response_that_ends_the_connection_is_not_kept() {
    let body = BODY.as_bytes();
    let mut to_eof = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n".to_vec();
    to_eof.extend_from_slice(body);
    let server = serve(move |n| match n {
        0 => Reply::Keep(response("connection: close\r\n", body)),
        1 => Reply::Close(to_eof.clone()),
        _ => Reply::Keep(
            format!(
                "HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{BODY}",
                body.len()
            )
            .into_bytes(),
        ),
    })
    .await;
    let client = scrape_client(TIMEOUT, true).unwrap();
    for what in ["connection: close", "read to the end", "HTTP/1.0"] {
        assert_eq!(
            fetch(&client, &server.url, 1 << 20).await.unwrap().body,
            body,
            "{what}"
        );
        assert_eq!(client.idle_connections(), 0, "{what}");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_https_target_gets_a_tls_handshake_and_an_untrusted_certificate_fails_it() {
    // A loopback TLS server with a self-signed certificate: the client speaks TLS to an
    // `https` URL (the server sees a handshake) and, trusting only the webpki roots as
    // reqwest's rustls-tls did, refuses the certificate: a connect failure.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor
            .accept(tcp)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let client = scrape_client(TIMEOUT, true).unwrap();
    let url = format!("https://localhost:{port}/metrics");
    assert_eq!(
        fetch(&client, &url, 1 << 20).await.unwrap_err(),
        ScrapeFailure::Connect
    );
    let server_saw = handshake.await.unwrap().unwrap_err();
    // The client's alert: it does not know the certificate's issuer.
    assert!(server_saw.contains("UnknownCA"), "{server_saw}");
}
