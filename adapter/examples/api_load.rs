//! `api_load`: a load generator that calls the adapter the way the kube-aggregator does, from
//! a process of its own (`tests/perf/api_latency.py` runs it against the adapter on a real
//! control plane, and through kube-apiserver's aggregator).
//!
//! The aggregator reaches an extension API server over TLS with its front-proxy client
//! certificate, names the end user in `X-Remote-User`/`X-Remote-Group` headers, verifies the
//! serving certificate against `<service>.<namespace>.svc`, and keeps one connection alive:
//! HTTP/2 when the server offers it (client-go's transport, `utilnet.SetTransportDefaults`,
//! configures HTTP/2), so all requests share one multiplexed connection. This client does the
//! same (`--http1`: one keep-alive HTTP/1.1 connection per client instead), asks for gzip as
//! Go's transport does, and reports latency percentiles over a bounded run.
//!
//! The first request (TLS handshake, the server's authorization cache empty for this user) is
//! reported apart as `first_ms`. `--unique-users PREFIX` names a new user in `X-Remote-User`
//! on every request (`PREFIX-0`, `PREFIX-1`, ...), so no request finds an authorization
//! decision cached: each pays the server's SubjectAccessReview round trip.
//!
//! ```text
//! cargo run --release -p inferscale-adapter --example api_load -- \
//!   --url https://127.0.0.1:6443/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_num_requests_waiting \
//!   --ca adapter-ca.crt --cert front-proxy-client.crt --key front-proxy-client.key \
//!   --server-name inferscale-adapter.inferscale-system.svc \
//!   --header 'X-Remote-User: system:serviceaccount:kube-system:horizontal-pod-autoscaler' \
//!   --clients 100 --duration 10s
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Calls an aggregated API server as the kube-aggregator does; prints latency")]
struct Args {
    /// URL to GET (https://IP:PORT/path); repeat to spread clients over several.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// CA of the server's certificate (the APIService caBundle).
    #[arg(long)]
    ca: String,
    /// Client certificate (the aggregator's front-proxy client certificate).
    #[arg(long)]
    cert: String,
    #[arg(long)]
    key: String,
    /// Name the server certificate is checked against (`<service>.<namespace>.svc`).
    #[arg(long)]
    server_name: String,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Send `X-Remote-User: PREFIX-<n>` with a new n on every request (overrides a
    /// `--header` of that name): every request misses the server's authorization cache.
    #[arg(long)]
    unique_users: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Measured time (after a 1 s warm-up that is not recorded).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Each client sends one request every PACE (latency from the scheduled time); without it
    /// clients send back to back.
    #[arg(long, value_parser = humantime::parse_duration)]
    pace: Option<Duration>,
    /// HTTP/1.1 with one keep-alive connection per client instead of one HTTP/2 connection.
    #[arg(long)]
    http1: bool,
    /// Runtime worker threads of this process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    errors: usize,
    bytes: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn client(args: &Args, address: SocketAddr) -> Result<reqwest::Client> {
    let ca = std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca))?;
    let mut identity =
        std::fs::read(&args.cert).with_context(|| format!("reading {}", args.cert))?;
    identity.extend(std::fs::read(&args.key).with_context(|| format!("reading {}", args.key))?);
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("--header {h:?}: expected `Name: value`");
        };
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            value.trim().parse()?,
        );
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .resolve(&args.server_name, address)
        .default_headers(headers)
        .gzip(true)
        .no_proxy()
        .timeout(Duration::from_secs(10));
    builder = if args.http1 {
        builder.http1_only().pool_max_idle_per_host(args.clients)
    } else {
        builder.http2_adaptive_window(true)
    };
    Ok(builder.build()?)
}

async fn run(args: Args) -> Result<()> {
    let mut targets = Vec::new();
    for url in &args.url {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url}"))?;
        let host = parsed.host_str().context("--url without a host")?;
        let port = parsed
            .port_or_known_default()
            .context("--url without a port")?;
        let address: SocketAddr = format!("{host}:{port}")
            .parse()
            .with_context(|| format!("--url {url}: the host must be an IP address"))?;
        // The request goes to the server name (checked in the certificate), resolved to the IP.
        let mut named = parsed.clone();
        named
            .set_host(Some(&args.server_name))
            .map_err(|e| anyhow::anyhow!("--server-name: {e}"))?;
        targets.push((named.to_string(), address));
    }
    let client = client(&args, targets[0].1)?;
    // One request first: the connection (TLS handshake, HTTP/2 settings) and the server's
    // caches (authorization, the answer) are warm before anything is timed, as they are for
    // an aggregator that has been running.
    let first_sent = Instant::now();
    let first = client.get(&targets[0].0).send().await?;
    let status = first.status();
    let body = first.bytes().await?;
    let first_latency = first_sent.elapsed();
    if !status.is_success() {
        bail!(
            "{} answered {status}: {}",
            targets[0].0,
            String::from_utf8_lossy(&body)
        );
    }
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let end = warmup_end + args.duration;
    let url_list: Arc<Vec<String>> = Arc::new(targets.into_iter().map(|(u, _)| u).collect());
    let user_counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let client = client.clone();
        let urls = url_list.clone();
        let pace = args.pace;
        let unique_users = args.unique_users.clone();
        let user_counter = user_counter.clone();
        tasks.push(tokio::spawn(async move {
            let url = &urls[i % urls.len()];
            let mut out = ClientResult::default();
            // Paced clients start spread over one period.
            let mut next =
                Instant::now() + pace.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / 100.0 % 1.0));
            loop {
                if pace.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                } else {
                    next = Instant::now();
                }
                if next >= end {
                    break;
                }
                let result = async {
                    let mut request = client.get(url);
                    if let Some(prefix) = &unique_users {
                        let n = user_counter.fetch_add(1, Ordering::Relaxed);
                        request = request.header("X-Remote-User", format!("{prefix}-{n}"));
                    }
                    let response = request.send().await?;
                    let ok = response.status().is_success();
                    let body = response.bytes().await?;
                    Ok::<_, reqwest::Error>((ok, body.len()))
                }
                .await;
                let latency = next.elapsed();
                if next >= warmup_end {
                    match result {
                        Ok((true, len)) => {
                            out.latencies.push(latency);
                            out.bytes += len as u64;
                        }
                        _ => out.errors += 1,
                    }
                }
                if let Some(p) = pace {
                    next += p;
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut bytes = 0;
    for t in tasks {
        let r = t.await?;
        all.extend(r.latencies);
        errors += r.errors;
        bytes += r.bytes;
    }
    all.sort_unstable();
    let q = |q: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() - 1) as f64 * q).round() as usize;
        all[i].as_secs_f64() * 1e3
    };
    let secs = args.duration.as_secs_f64();
    let report = serde_json::json!({
        "requests": all.len(),
        "errors": errors,
        "rps": all.len() as f64 / secs,
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": q(1.0),
        "first_ms": first_latency.as_secs_f64() * 1e3,
        "unique_users": args.unique_users.is_some(),
        "mean_body_bytes": if all.is_empty() { 0 } else { bytes / all.len() as u64 },
        "protocol": if args.http1 { "HTTP/1.1" } else { "HTTP/2" },
        "clients": args.clients,
        "pace_ms": args.pace.map(|p| p.as_secs_f64() * 1e3),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} requests ({:.0}/s, {} errors), p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; first request {:.2} ms",
            all.len(),
            all.len() as f64 / secs,
            errors,
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            first_latency.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
