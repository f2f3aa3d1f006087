//! What the scraper holds per target between scrapes, counted: issue 13's goal is 10,000
//! targets in 512 MiB, and every target keeps one HTTP connection alive between scrapes.
//!
//! 200 targets (loopback listeners of `vllm-sim fleet`'s router serving the real vLLM 0.18
//! capture, 52 KB, gzipped at level 9 as vLLM serves it) are each scraped twice with the
//! scraper's own client and fetch ([`scrape_client`], [`fetch`]), as the scrape loop does;
//! then the heap the client holds between scrapes is counted (a counting global allocator;
//! the server runs on a thread of its own that is not counted).
//!
//! With keep-alive (the default) each idle connection held 28,866 bytes when this was
//! written (hyper's 8 KiB read and 8 KiB header write buffers, the connection's task, its
//! dispatch channel and pool entry): 275 MiB at 10,000 targets, over half of the 512 MiB
//! goal. With `--scrape-keep-alive=false` nothing is held between
//! scrapes; the second test fails if connections (or anything else per target) are kept.
//!
//! Needs `../shared` (or `INFERSCALE_SHARED`); without it the test fails, unless
//! `INFERSCALE_ALLOW_SKIP=1`, then it prints SKIPPED.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use inferscale_adapter::scrape::{fetch, scrape_client};
use inferscale_sim::fleet::{target_router, Fleet, Replay};
use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod capture;
mod counting;
use capture::capture;
use counting::CURRENT;

const TARGETS: usize = 200;
/// Heap one idle keep-alive connection may hold (28,866 bytes when this was written); a
/// larger read buffer kept per connection (hyper's grows when a read fills it) fails it.
const KEEP_ALIVE_BOUND_PER_TARGET: usize = 32 * 1024;
/// Without keep-alive the client keeps nothing per target between scrapes.
const NO_KEEP_ALIVE_BOUND_PER_TARGET: usize = 512;

/// Serves the replay on `TARGETS` loopback ports from one uncounted thread; returns the URLs.
fn serve(replay: Replay) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..TARGETS)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let urls = listeners
        .iter()
        .map(|l| format!("http://{}/metrics", l.local_addr().unwrap()))
        .collect();
    std::thread::Builder::new()
        .name("loopback-fleet".into())
        .spawn(move || {
            counting::uncounted();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let router = target_router(Fleet::new(replay, TARGETS));
                let mut servers = tokio::task::JoinSet::new();
                for l in listeners {
                    let listener = tokio::net::TcpListener::from_std(l).unwrap();
                    servers.spawn(axum::serve(listener, router.clone()).into_future());
                }
                while servers.join_next().await.is_some() {}
            });
        })
        .unwrap();
    urls
}

/// Scrapes every URL twice with the scraper's client; returns the heap it holds afterwards
/// per target.
fn held_per_target(urls: &[String], keep_alive: bool) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let before = CURRENT.load(Ordering::Relaxed);
        let client = scrape_client(Duration::from_secs(10), keep_alive).unwrap();
        let mut body_bytes = 0;
        for round in 0..2 {
            for url in urls {
                let fetched = fetch(&client, url, 16 << 20).await.unwrap();
                assert!(fetched.body.len() > 40_000, "round {round}: the real body");
                body_bytes = fetched.body.len();
            }
        }
        // Let every connection task go idle (or finish closing).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = CURRENT.load(Ordering::Relaxed).saturating_sub(before);
        let per_target = held / urls.len();
        eprintln!(
            "keep-alive {keep_alive}: {} targets scraped twice ({body_bytes} bytes decoded \
             each): the client holds {held} bytes between scrapes = {per_target} per target",
            urls.len()
        );
        drop(client);
        per_target
    })
}

#[test]
fn the_client_holds_only_the_stated_bytes_per_target_between_scrapes() {
    let Some(text) = capture() else { return };
    let urls = serve(Replay::new(&text));
    // One test, so the two measurements never run at the same time (the counter is global).
    let kept = held_per_target(&urls, true);
    assert!(
        kept <= KEEP_ALIVE_BOUND_PER_TARGET,
        "{kept} bytes per idle keep-alive connection"
    );
    let closed = held_per_target(&urls, false);
    assert!(
        closed <= NO_KEEP_ALIVE_BOUND_PER_TARGET,
        "{closed} bytes per target held without keep-alive"
    );
}
