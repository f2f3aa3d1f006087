//! KEDA's external-scaler contract, end to end over a socket: a tonic client generated from
//! the vendored `externalscaler.proto` dials the adapter's scaler over TLS (a CA-signed
//! serving certificate read from files, as in a cluster) and exercises every RPC, the
//! errors KEDA sees (unknown workload or metric, missing value), idle, the push stream's
//! changes and its end on shutdown, client certificates, the request metrics — and once
//! through the real `adapter serve` binary (standalone, a loopback pod serving the project's
//! vLLM fixture), whose streams end with OK on SIGTERM before it exits 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use inferscale_adapter::http::ServeOptions;
use inferscale_adapter::keda::proto::external_scaler_client::ExternalScalerClient;
use inferscale_adapter::keda::proto::{GetMetricsRequest, IsActiveResponse, ScaledObjectRef};
use inferscale_adapter::keda::{serve, ScalerService};
use inferscale_adapter::store::{
    OwnerRef, PodKey, ScrapeSink, Store, Target, TargetKind, TargetRegistry,
};
use inferscale_adapter::telemetry::Telemetry;
use inferscale_adapter::tls::{read_ca_file, TlsOptions, TlsState};
use inferscale_metrics::histogram::Histogram;
use inferscale_metrics::profile::{Engine, GaugeSignal, HistogramSignal, VLLM_TTFT_BUCKETS};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

/// The name KEDA dials (the Service's DNS name), in the serving certificate.
const SERVER_NAME: &str = "inferscale-adapter.inferscale.svc";

/// A fixed clock: the scrapes happened at 1000 s and 1015 s.
fn test_clock() -> f64 {
    1016.0
}

/// How long a test waits for something that should happen within a few poll intervals.
const PATIENCE: Duration = Duration::from_secs(10);

fn target(name: &str, ready: bool, deployment: &str) -> Target {
    let owner = |kind: &str, name: String| OwnerRef {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name,
    };
    Target {
        key: PodKey::new("llm", name),
        uid: format!("uid-{name}"),
        kind: TargetKind::Engine,
        url: Some(format!("http://127.0.0.1:1/{name}")),
        labels: [("app".to_owned(), "vllm".to_owned())].into(),
        node: Some("gpu-node-1".into()),
        ready,
        terminating: false,
        asleep: false,
        owners: vec![
            owner("ReplicaSet", format!("{deployment}-abc")),
            owner("Deployment", deployment.to_owned()),
        ],
    }
}

/// A scrape of model `llama` with `waiting` and `running` requests and the TTFT
/// observations (seconds) made since the server started.
fn scrape(t: f64, waiting: f64, running: f64, ttft: &[f64]) -> EngineSnapshot {
    let mut s = EngineSnapshot::new(t, Engine::Vllm);
    let m = s.model_mut("llama");
    m.set_gauge(GaugeSignal::QueueDepth, waiting);
    m.set_gauge(GaugeSignal::Running, running);
    m.set_gauge(GaugeSignal::KvCacheUsage, 0.25 * waiting);
    let mut h = Histogram::empty(&VLLM_TTFT_BUCKETS);
    for v in ttft {
        h.observe(*v);
    }
    m.set_histogram(HistogramSignal::TimeToFirstToken, h);
    s
}

/// Deployment `vllm`: `vllm-a` (3 waiting, 1 running) and `vllm-b` (1 waiting, 1 running),
/// both ready. Deployment `down`: one pod scraped but not Ready (missing). Deployment
/// `quiet`: one idle pod (a request before the window, nothing since, nothing to do).
fn store() -> Arc<Store> {
    let store = Arc::new(Store::new(60.0, 18.0));
    for (pod, ready, deployment, waiting, running, ttft) in [
        ("vllm-a", true, "vllm", 3.0, 1.0, &[0.2][..]),
        ("vllm-b", true, "vllm", 1.0, 1.0, &[0.4][..]),
        ("down-a", false, "down", 5.0, 1.0, &[0.2][..]),
        ("quiet-a", true, "quiet", 0.0, 0.0, &[0.3][..]),
    ] {
        store.upsert_target(target(pod, ready, deployment));
        let key = PodKey::new("llm", pod);
        let before: &[f64] = if deployment == "quiet" { ttft } else { &[] };
        store.record_engine_scrape(&key, scrape(1000.0, waiting, running, before), 0.01);
        store.record_engine_scrape(&key, scrape(1015.0, waiting, running, ttft), 0.01);
    }
    store
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("inferscale-keda-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway certificate authority.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `usage` (a server name, or a client common name): certificate and key PEM.
    fn issue(&self, name: &str, usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A CA and a serving certificate for [`SERVER_NAME`] it signed, written as the
/// adapter's `--tls-cert-file`/`--tls-private-key-file`; returns the CA's PEM (what a
/// TriggerAuthentication's `caCert` holds).
fn serving_certificate(dir: &TempDir) -> (TlsOptions, String) {
    let ca = TestCa::new("inferscale test CA");
    let (cert, key) = ca.issue(SERVER_NAME, rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let cert_file = dir.0.join("tls.crt");
    let key_file = dir.0.join("tls.key");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let options = TlsOptions {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        extra_sans: Vec::new(),
    };
    (options, ca.pem)
}

/// The scaler serving over TLS on a loopback port, and a client trusting its CA.
struct Harness {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    client: ExternalScalerClient<Channel>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    port: u16,
    ca_pem: String,
    _dir: TempDir,
}

async fn start(tag: &str) -> Harness {
    start_serving(tag, None).await
}

/// Serves; with `client_ca`, client certificates from that CA are required (and the
/// harness's own client presents one).
async fn start_serving(tag: &str, client_ca: Option<&TestCa>) -> Harness {
    let dir = TempDir::new(tag);
    let (options, ca_pem) = serving_certificate(&dir);
    let store = store();
    let shutdown = CancellationToken::new();
    let telemetry = Arc::new(Telemetry::new());
    let service = ScalerService::new(store.clone(), shutdown.clone())
        .with_clock(test_clock)
        .with_telemetry(telemetry.clone())
        .with_poll_interval(Duration::from_millis(20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = TlsState::new(&options).unwrap();
    let mut identity = None;
    if let Some(client_ca) = client_ca {
        let ca_file = dir.0.join("keda-ca.crt");
        std::fs::write(&ca_file, &client_ca.pem).unwrap();
        tls.require_client_certificates(read_ca_file(&ca_file).unwrap())
            .unwrap();
        identity =
            Some(client_ca.issue("keda-operator", rcgen::ExtendedKeyUsagePurpose::ClientAuth));
    }
    let server = tokio::spawn(serve(
        listener,
        tls,
        service,
        ServeOptions::default(),
        shutdown.clone(),
    ));
    let channel = connect(port, &ca_pem, identity)
        .await
        .expect("TLS connection");
    Harness {
        store,
        telemetry,
        client: ExternalScalerClient::new(channel),
        shutdown,
        server,
        port,
        ca_pem,
        _dir: dir,
    }
}

/// A channel to the scaler trusting `ca_pem`, presenting `identity` (certificate and key
/// PEM) if given.
async fn connect(
    port: u16,
    ca_pem: &str,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(SERVER_NAME);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// A ScaledObject reference as KEDA sends it: the trigger's whole metadata, KEDA's own
/// keys included.
fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let mut scaler_metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    scaler_metadata.insert("scalerAddress".into(), format!("{SERVER_NAME}:9443"));
    scaler_metadata.insert("enableTLS".into(), "true".into());
    ScaledObjectRef {
        name: "llama".into(),
        namespace: "llm".into(),
        scaler_metadata,
    }
}

/// A GetMetrics request for the trigger's own metric, as KEDA sends it.
fn ask(scaled_object: ScaledObjectRef) -> GetMetricsRequest {
    GetMetricsRequest {
        metric_name: scaled_object.scaler_metadata["metricName"].clone(),
        scaled_object_ref: Some(scaled_object),
    }
}

/// The error of a call that must fail with `code`.
fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
) -> tonic::Status {
    let status = result.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    status
}

fn queue_of(workload: &str, activation: &str) -> ScaledObjectRef {
    scaled_object(&[
        ("metricName", "inferscale_queue_depth"),
        ("workload", workload),
        ("targetValue", "2"),
        ("activationTargetValue", activation),
    ])
}

#[tokio::test]
async fn get_metric_spec_returns_the_trigger_target() {
    let mut h = start("spec").await;
    let spec = h
        .client
        .get_metric_spec(scaled_object(&[
            ("metricName", "inferscale_kv_cache_usage_ratio"),
            ("workload", "vllm"),
            ("targetValue", "0.8"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let spec = &spec.metric_specs[0];
    assert_eq!(spec.metric_name, "inferscale_kv_cache_usage_ratio");
    // KEDA reads targetSizeFloat when it is above 0; the deprecated integer is rounded.
    assert_eq!((spec.target_size_float, spec.target_size), (0.8, 1));
}

#[tokio::test]
async fn get_metrics_serves_the_workload_value_as_the_external_metrics_api_does() {
    let mut h = start("metrics").await;
    // Queue depth sums over the workload's ready pods: 3 + 1 (the not-Ready pod of
    // another workload does not count).
    let queue = h
        .client
        .get_metrics(ask(queue_of("vllm", "0")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.metric_values.len(), 1);
    let value = &queue.metric_values[0];
    assert_eq!(value.metric_name, "inferscale_queue_depth");
    assert_eq!((value.metric_value_float, value.metric_value), (4.0, 4));
    // KV-cache usage averages: (0.75 + 0.25) / 2 = 0.5; the float carries it, the
    // deprecated integer rounds half away from zero.
    let kv = h
        .client
        .get_metrics(ask(scaled_object(&[
            ("metricName", "inferscale_kv_cache_usage_ratio"),
            ("workload", "vllm"),
            ("targetValue", "0.8"),
        ])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kv.metric_values[0].metric_value_float, 0.5);
    // The whole namespace with a pod-label selector: the not-Ready pod is still left out.
    let namespace = h
        .client
        .get_metrics(ask(scaled_object(&[
            ("metricName", "vllm_num_requests_waiting"),
            ("labelSelector", "app=vllm"),
            ("targetValue", "10"),
        ])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(namespace.metric_values[0].metric_value_float, 4.0);
    // A metricName that is not the trigger's is refused, not answered with another signal.
    let mut mixed_up = ask(queue_of("vllm", "0"));
    mixed_up.metric_name = "inferscale_running".into();
    refused(h.client.get_metrics(mixed_up).await, Code::InvalidArgument);
}

#[tokio::test]
async fn is_active_is_the_value_above_the_activation_value() {
    let mut h = start("active").await;
    let active = |r: tonic::Response<IsActiveResponse>| r.into_inner().result;
    assert!(active(
        h.client.is_active(queue_of("vllm", "3.5")).await.unwrap()
    ));
    assert!(!active(
        h.client.is_active(queue_of("vllm", "4")).await.unwrap()
    ));
}

#[tokio::test]
async fn an_idle_workload_reads_zero_and_is_not_active() {
    let mut h = start("idle").await;
    let idle = scaled_object(&[
        ("metricName", "inferscale_time_to_first_token_seconds_p95"),
        ("workload", "quiet"),
        ("targetValue", "0.5"),
    ]);
    let value = h
        .client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(idle.clone()),
            metric_name: "inferscale_time_to_first_token_seconds_p95".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value.metric_values[0].metric_value_float, 0.0);
    assert_eq!(value.metric_values[0].metric_value, 0);
    assert!(!h.client.is_active(idle).await.unwrap().into_inner().result);
}

#[tokio::test]
async fn unknown_workloads_metrics_and_keys_have_clear_statuses() {
    let mut h = start("errors").await;
    let status = refused(
        h.client.is_active(queue_of("nope", "0")).await,
        Code::NotFound,
    );
    assert!(
        status.message().contains("workload=nope") && status.message().contains("llm"),
        "{}",
        status.message()
    );
    let status = refused(
        h.client
            .get_metric_spec(scaled_object(&[
                ("metricName", "vllm_queue"),
                ("wrkload", "vllm"),
                ("targetValue", "2"),
            ]))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("\"vllm_queue\"") && status.message().contains("\"wrkload\""),
        "every problem named: {}",
        status.message()
    );
    let mut no_namespace = queue_of("vllm", "0");
    no_namespace.namespace.clear();
    refused(
        h.client.is_active(no_namespace).await,
        Code::InvalidArgument,
    );
    refused(
        h.client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: None,
                metric_name: "inferscale_queue_depth".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    // KEDA falls back to GetMetricSpec on UNIMPLEMENTED.
    refused(
        h.client.stream_metric_spec(queue_of("vllm", "0")).await,
        Code::Unimplemented,
    );
}

#[tokio::test]
async fn calls_are_counted_in_the_adapter_request_metrics_by_rpc_and_code() {
    let mut h = start("telemetry").await;
    h.client.is_active(queue_of("vllm", "0")).await.unwrap();
    refused(
        h.client.is_active(queue_of("nope", "0")).await,
        Code::NotFound,
    );
    refused(
        h.client.get_metrics(ask(queue_of("down", "0"))).await,
        Code::Unavailable,
    );
    h.client
        .get_metric_spec(queue_of("vllm", "0"))
        .await
        .unwrap();
    let text = h.telemetry.render(h.store.as_ref(), test_clock());
    for series in [
        r#"inferscale_adapter_requests_total{route="keda_is_active",code="200"} 1"#,
        r#"inferscale_adapter_requests_total{route="keda_is_active",code="404"} 1"#,
        r#"inferscale_adapter_requests_total{route="keda_get_metrics",code="503"} 1"#,
        r#"inferscale_adapter_requests_total{route="keda_get_metric_spec",code="200"} 1"#,
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
}

#[tokio::test]
async fn a_missing_value_is_an_error_never_zero() {
    let mut h = start("missing").await;
    let down = queue_of("down", "0");
    let status = refused(
        h.client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(down.clone()),
                metric_name: "inferscale_queue_depth".into(),
            })
            .await,
        Code::Unavailable,
    );
    assert!(
        status.message().contains("missing, not 0"),
        "{}",
        status.message()
    );
    refused(h.client.is_active(down).await, Code::Unavailable);
    // A workload that is busy but has observed no request in the window has no latency:
    // missing too, not an idle 0.
    h.store.upsert_target(target("stuck-a", true, "stuck"));
    let key = PodKey::new("llm", "stuck-a");
    h.store
        .record_engine_scrape(&key, scrape(1000.0, 3.0, 2.0, &[0.3]), 0.01);
    h.store
        .record_engine_scrape(&key, scrape(1015.0, 3.0, 2.0, &[0.3]), 0.01);
    refused(
        h.client
            .is_active(scaled_object(&[
                ("metricName", "inferscale_time_to_first_token_seconds_p95"),
                ("workload", "stuck"),
                ("targetValue", "0.5"),
            ]))
            .await,
        Code::Unavailable,
    );
}

async fn next(
    stream: &mut tonic::Streaming<IsActiveResponse>,
) -> Result<Option<bool>, tonic::Status> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message or the end within the patience")
        .map(|m| m.map(|m| m.result))
}

#[tokio::test]
async fn the_stream_pushes_changes_and_ends_on_shutdown() {
    let mut h = start("stream").await;
    let mut stream = h
        .client
        .stream_is_active(queue_of("vllm", "3.5"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await.unwrap(), Some(true), "sent at once");
    // vllm-a's queue drains: 0 + 1 is not above 3.5.
    h.store.record_engine_scrape(
        &PodKey::new("llm", "vllm-a"),
        scrape(1015.5, 0.0, 1.0, &[0.2]),
        0.01,
    );
    assert_eq!(
        next(&mut stream).await.unwrap(),
        Some(false),
        "pushed on change"
    );
    // Shutdown ends the stream cleanly (KEDA reconnects), and the server with it.
    h.shutdown.cancel();
    assert_eq!(next(&mut stream).await.unwrap(), None, "ended with OK");
    tokio::time::timeout(PATIENCE, h.server)
        .await
        .expect("the server stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn the_stream_ends_with_the_error_when_the_value_goes_missing() {
    let mut h = start("stream-missing").await;
    let mut stream = h
        .client
        .stream_is_active(queue_of("vllm", "0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await.unwrap(), Some(true));
    // Both pods stop being Ready: the workload's value is missing.
    h.store.upsert_target(target("vllm-a", false, "vllm"));
    h.store.upsert_target(target("vllm-b", false, "vllm"));
    let status = next(&mut stream).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // An unknown workload fails the call itself, before any message.
    refused(
        h.client.stream_is_active(queue_of("nope", "0")).await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_serving_certificate_cannot_connect() {
    let h = start("untrusted").await;
    let other_dir = TempDir::new("untrusted-other");
    let (_, other_ca) = serving_certificate(&other_dir);
    assert!(connect(h.port, &other_ca, None).await.is_err());
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_are_answered() {
    let keda_ca = TestCa::new("KEDA client CA");
    let mut h = start_serving("mtls", Some(&keda_ca)).await;
    // The harness's client presents a certificate from the KEDA CA: answered.
    assert!(
        h.client
            .is_active(queue_of("vllm", "0"))
            .await
            .unwrap()
            .into_inner()
            .result
    );
    // Without a certificate, or with one from another CA: no answer. (With TLS 1.3 the
    // refusal may arrive after the handshake, so the first call is what fails.)
    let stranger =
        TestCa::new("someone else").issue("intruder", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    for identity in [None, Some(stranger)] {
        let refused = match connect(h.port, &h.ca_pem, identity).await {
            Err(_) => true,
            Ok(channel) => ExternalScalerClient::new(channel)
                .is_active(queue_of("vllm", "0"))
                .await
                .is_err(),
        };
        assert!(refused);
    }
}

/// The adapter process, killed if the test ends early.
struct Adapter(std::process::Child);

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound and released; the race with other tests is harmless here).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_serves_the_scaler_and_ends_its_streams_with_ok_on_sigterm() {
    // A vLLM pod: the project's own two-engine fixture (2 + 1 requests waiting).
    let body = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../metrics/tests/fixtures/vllm-v1-two-engines.txt"),
    )
    .unwrap();
    let pod = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod_port = pod.local_addr().unwrap().port();
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(pod, app).await });

    let dir = TempDir::new("binary");
    let (options, ca_pem) = serving_certificate(&dir);
    let scaler_port = free_port();
    let mut child = Adapter(
        std::process::Command::new(env!("CARGO_BIN_EXE_adapter"))
            .args([
                "serve".to_owned(),
                "--standalone".to_owned(),
                format!("--target=llm/vllm-0=http://127.0.0.1:{pod_port}/metrics"),
                format!("--insecure-listen=127.0.0.1:{}", free_port()),
                format!("--keda-scaler-listen=127.0.0.1:{scaler_port}"),
                format!("--tls-cert-file={}", options.cert_file.unwrap().display()),
                format!(
                    "--tls-private-key-file={}",
                    options.key_file.unwrap().display()
                ),
                "--shutdown-delay=200ms".to_owned(),
                "--scrape-interval=1s".to_owned(),
                "--scrape-timeout=500ms".to_owned(),
                "--window=2s".to_owned(),
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let namespace_queue = scaled_object(&[
        ("metricName", "inferscale_queue_depth"),
        ("targetValue", "2"),
        ("activationTargetValue", "2.5"),
    ]);
    // Until the first scrape lands: UNAVAILABLE (missing), then the value.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (mut client, value) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no value from the binary's scaler"
        );
        if let Ok(channel) = connect(scaler_port, &ca_pem, None).await {
            let mut client = ExternalScalerClient::new(channel);
            if let Ok(answer) = client.get_metrics(ask(namespace_queue.clone())).await {
                break (
                    client,
                    answer.into_inner().metric_values[0].metric_value_float,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value, 3.0);
    let mut stream = client
        .stream_is_active(namespace_queue)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await.unwrap(), Some(true), "3 > 2.5");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        next(&mut stream).await.unwrap(),
        None,
        "the stream ends with OK at shutdown"
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the adapter did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
