//! SIGTERM on the real binary (`adapter serve --standalone`): readiness fails at once,
//! requests keep being answered through the shutdown delay, the listener then closes,
//! in-flight requests drain, and the process exits 0. Eight keep-alive clients send
//! requests back to back the whole time; every request sent before the listener closed
//! must be answered 200.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// When a request was sent, and its status or why it failed.
type Outcome = (Instant, Result<u16, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_and_exits_zero() {
    let port = free_port();
    let delay = Duration::from_millis(1500);
    let mut child = Command::new(env!("CARGO_BIN_EXE_adapter"))
        .args([
            "serve",
            "--standalone",
            "--target=llm/vllm-0=http://127.0.0.1:1/metrics",
            &format!("--insecure-listen=127.0.0.1:{port}"),
            "--shutdown-delay=1500ms",
            "--scrape-interval=1s",
            "--scrape-timeout=500ms",
            "--window=2s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the adapter");
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        let ready = probe.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // (sent at, answered 200?) of every request.
    let log: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (log, stop, base) = (log.clone(), stop.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let result = client
                    .get(format!("{base}/apis/custom.metrics.k8s.io/v1beta2"))
                    .send()
                    .await;
                let outcome = match result {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        match r.bytes().await {
                            Ok(_) => Ok(status),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                let failed = outcome.is_err();
                log.lock().unwrap().push((sent, outcome));
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sigterm = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Readiness fails at once, while requests are still answered.
    let mut unready_after = None;
    while sigterm.elapsed() < delay / 2 {
        if let Ok(r) = probe.get(format!("{base}/readyz")).send().await {
            if r.status() == 503 {
                unready_after = Some(sigterm.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unready_after = unready_after.expect("readiness fails during the shutdown delay");

    let exit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, Instant::now());
            }
            assert!(Instant::now() < deadline, "did not exit within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (status, exited) = exit;
    assert_eq!(status.code(), Some(0), "exit status {status}");

    // The listener closes at SIGTERM + delay: every request sent before then succeeded.
    let closes = sigterm + delay;
    let log = log.lock().unwrap();
    let before: Vec<_> = log
        .iter()
        .filter(|(sent, _)| *sent + Duration::from_millis(50) < closes)
        .collect();
    let during_delay = before.iter().filter(|(sent, _)| *sent > sigterm).count();
    let failed: Vec<_> = before
        .iter()
        .filter(|(_, outcome)| !matches!(outcome, Ok(200)))
        .collect();
    eprintln!(
        "{} requests before the listener closed ({} during the delay), {} failed; \
         unready after {:?}; exited {:?} after SIGTERM",
        before.len(),
        during_delay,
        failed.len(),
        unready_after,
        exited - sigterm
    );
    assert!(during_delay > 10, "requests kept flowing during the delay");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        exited - sigterm < delay + Duration::from_secs(12),
        "bounded drain"
    );
}
