//! A micro-cache for metric answers.
//!
//! Why: the HPA, dashboards and `kubectl` ask the same few questions over and over, and a
//! list over a 1,000-pod fleet costs milliseconds to build — under 100 concurrent clients on
//! two cores that queueing, not the work, decides the latency. An answer is reused while the
//! store has not changed, or for [`fresh_for`] of the scrape interval after it was built
//! (a fifth of the interval, at most [`FRESH_FOR`]). Once it is out of date,
//! the first request to ask rebuilds it, and only requests that arrive *while* that rebuild
//! runs (milliseconds) get the previous answer (up to [`SERVE_STALE_FOR`] old) instead of
//! queueing behind it. So an answer is at most a fifth of a scrape interval (≤ 1 s) behind
//! the store, or up to
//! [`SERVE_STALE_FOR`] for a request that arrives while another request rebuilds it; a
//! client that polls alone — the HPA every 15 s — gets an answer built for it. Answers keep
//! the timestamps of the scrapes they were built from, so a cached answer never claims to
//! be newer than its data.
//!
//! The cache sits inside the authorization layer: a request reaches it only after its user
//! was allowed, and the key is the full path and query.

use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest an answer is reused although the store changed: well below the HPA's 15 s
/// sync and the default 5 s scrape interval.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long an answer is reused although the store changed, for a scrape interval: a fifth
/// of it, at most [`FRESH_FOR`]. Why: a load step is in every pod's value one interval after
/// it happened at worst, and reuse adds to that; at a 1 s interval a whole second of reuse
/// would double the delay (measured: `make compare`, step → API p99 2.04 s at 1 s scrapes),
/// a fifth adds 200 ms. A 1,000-pod answer costs milliseconds to build, so rebuilding it up
/// to five times a second under load is cheap.
pub fn fresh_for(scrape_interval: Duration) -> Duration {
    (scrape_interval / 5).min(FRESH_FOR)
}
/// How long an out-of-date answer may still be served to requests that arrive while another
/// request rebuilds it.
pub const SERVE_STALE_FOR: Duration = Duration::from_secs(5);
/// Most distinct queries kept: keys come from clients, so the map must be bounded.
pub const MAX_ENTRIES: usize = 1024;
/// Most bytes kept across all answers (keys, bodies and their gzip copies): keys and
/// answers both come from clients (a 60 KB selector, a list over every pod), so the
/// cache is bounded in bytes too. 64 MiB holds a thousand 1,000-pod lists.
pub const MAX_BYTES: usize = 64 << 20;
/// Largest body kept (a list over ~20,000 pods).
const MAX_CACHED_BODY: usize = 8 << 20;

struct Entry {
    built_at: Instant,
    generation: u64,
    status: StatusCode,
    body: Bytes,
    /// The body gzip-compressed once, for clients that accept it (client-go and kubectl
    /// do): a 1,000-pod list shrinks about twentyfold, and it is compressed once per build
    /// rather than once per request.
    gzipped: Option<Bytes>,
    refreshing: AtomicBool,
}

/// Bodies smaller than this are sent as they are: compression would not pay for itself.
const GZIP_MIN_BYTES: usize = 1024;

fn gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write as _;
    if body.len() < GZIP_MIN_BYTES {
        return None;
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

fn accepts_gzip(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|e| e.trim().split(';').next() == Some("gzip"))
        })
}

impl Entry {
    /// What keeping this answer under `key` costs, bytes.
    fn cost(&self, key: &str) -> usize {
        key.len() + self.body.len() + self.gzipped.as_ref().map_or(0, Bytes::len)
    }
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Arc<Entry>>,
    /// Sum of [`Entry::cost`] over `map`.
    bytes: usize,
}

/// The cache; shared by all requests of one router. Bounded by [`MAX_ENTRIES`] and
/// [`MAX_BYTES`].
pub struct ResponseCache {
    entries: Mutex<Entries>,
    fresh_for: Duration,
    serve_stale_for: Duration,
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache::with_ages(FRESH_FOR, SERVE_STALE_FOR)
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseCache")
    }
}

impl ResponseCache {
    /// A cache with other ages than [`FRESH_FOR`] and [`SERVE_STALE_FOR`]: the server's
    /// follows its scrape interval ([`fresh_for`]); tests use zero to see every change at
    /// once.
    pub fn with_ages(fresh_for: Duration, serve_stale_for: Duration) -> ResponseCache {
        ResponseCache {
            entries: Mutex::default(),
            fresh_for,
            serve_stale_for,
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .get(key)
            .cloned()
    }

    fn put(&self, key: String, entry: Arc<Entry>) {
        let cost = entry.cost(&key);
        if cost > MAX_BYTES {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = entries.map.remove(&key) {
            entries.bytes -= previous.cost(&key);
        }
        // Evict the oldest answers: queries repeat, so the oldest is the least used.
        while entries.map.len() >= MAX_ENTRIES || entries.bytes + cost > MAX_BYTES {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.built_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(evicted) = entries.map.remove(&oldest) {
                entries.bytes -= evicted.cost(&oldest);
            }
        }
        entries.bytes += cost;
        entries.map.insert(key, entry);
    }

    /// Answers kept and the bytes they hold.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (entries.map.len(), entries.bytes)
    }
}

fn respond(entry: &Entry, gzip_ok: bool) -> Response {
    let (body, gzipped) = match (&entry.gzipped, gzip_ok) {
        (Some(compressed), true) => (compressed.clone(), true),
        _ => (entry.body.clone(), false),
    };
    let mut response = (entry.status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Buffers a computed response and stores it when it is cacheable (200 or 404).
async fn build(
    state: &AppState,
    key: String,
    generation: u64,
    response: Response,
    gzip_ok: bool,
) -> Response {
    let status = response.status();
    if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_CACHED_BODY).await else {
        return ApiError::Internal(format!(
            "the answer is larger than {MAX_CACHED_BODY} bytes; narrow the query with a label \
             selector"
        ))
        .into_response();
    };
    let entry = Arc::new(Entry {
        built_at: Instant::now(),
        generation,
        status,
        gzipped: gzip(&bytes),
        body: bytes,
        refreshing: AtomicBool::new(false),
    });
    state.cache.put(key, entry.clone());
    let mut response = respond(&entry, gzip_ok);
    // Keep headers the handler set (none today besides content type), minus length.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_LENGTH && !response.headers().contains_key(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// Middleware for the metric-value routes.
pub async fn cached(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let gzip_ok = accepts_gzip(&request);
    // Both only grow, so their sum changes whenever either does: a WarmPool's new
    // recommendation is served at once, like a new scrape.
    let generation = state
        .view
        .generation()
        .wrapping_add(state.pools.generation());
    let mut rebuilding = None;
    if let Some(entry) = state.cache.get(&key) {
        let age = entry.built_at.elapsed();
        let answer = if entry.generation == generation || age < state.cache.fresh_for {
            Decision::Serve
        } else {
            let claimed = !entry.refreshing.swap(true, Ordering::AcqRel);
            decide_out_of_date(age, claimed, state.cache.serve_stale_for)
        };
        match answer {
            Decision::Serve => return respond(&entry, gzip_ok),
            Decision::RebuildAndRelease => rebuilding = Some(RefreshFlag(entry)),
            Decision::Rebuild => {}
        }
    }
    let response = next.run(request).await;
    let response = build(&state, key, generation, response, gzip_ok).await;
    drop(rebuilding);
    response
}

/// What to do with a cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Send the cached answer.
    Serve,
    /// Build a new answer; this request claimed the rebuild and releases the claim after.
    RebuildAndRelease,
    /// Build a new answer alongside a rebuild another request claimed (the cached one is too
    /// old to serve even while it is rebuilt).
    Rebuild,
}

/// For an answer that is out of date (the store changed and it is older than `fresh_for`):
/// `claimed` says whether this request just claimed its rebuild.
fn decide_out_of_date(age: Duration, claimed: bool, serve_stale_for: Duration) -> Decision {
    if claimed {
        Decision::RebuildAndRelease
    } else if age < serve_stale_for {
        // Another request is rebuilding this answer right now; the previous one is
        // milliseconds from being replaced, so serve it rather than queue.
        Decision::Serve
    } else {
        Decision::Rebuild
    }
}

/// Clears an entry's "being rebuilt" mark when the rebuild ends, however it ends (an error
/// answer that is not cached, or a client that went away mid-build), so the next request
/// rebuilds rather than being served the old answer.
struct RefreshFlag(Arc<Entry>);

impl Drop for RefreshFlag {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = SERVE_STALE_FOR;

    #[test]
    fn answers_are_reused_a_fifth_of_the_scrape_interval_and_never_over_a_second() {
        let ms = Duration::from_millis;
        // The adapter's smallest interval (1 s) and the default (5 s).
        assert_eq!(fresh_for(ms(1_000)), ms(200));
        assert_eq!(fresh_for(ms(2_500)), ms(500));
        assert_eq!(fresh_for(ms(5_000)), ms(1_000));
        assert_eq!(fresh_for(ms(30_000)), ms(1_000));
    }

    #[test]
    fn the_request_that_claims_an_out_of_date_answer_rebuilds_it() {
        for age in [Duration::ZERO, STALE / 2, STALE, STALE * 10] {
            assert_eq!(
                decide_out_of_date(age, true, STALE),
                Decision::RebuildAndRelease,
                "{age:?}"
            );
        }
    }

    #[test]
    fn others_get_the_previous_answer_while_it_is_rebuilt_unless_it_is_too_old() {
        assert_eq!(decide_out_of_date(STALE / 2, false, STALE), Decision::Serve);
        // Too old to serve even during a rebuild: build, and leave the claim to its owner.
        assert_eq!(decide_out_of_date(STALE, false, STALE), Decision::Rebuild);
        assert_eq!(
            decide_out_of_date(STALE * 3, false, STALE),
            Decision::Rebuild
        );
    }

    fn entry(body_len: usize) -> Arc<Entry> {
        Arc::new(Entry {
            built_at: Instant::now(),
            generation: 1,
            status: StatusCode::OK,
            body: Bytes::from(vec![b'x'; body_len]),
            gzipped: None,
            refreshing: AtomicBool::new(false),
        })
    }

    #[test]
    fn the_cache_stays_within_its_byte_and_entry_bounds() {
        let cache = ResponseCache::default();
        // Big answers under long keys: the byte bound decides.
        let body = 1 << 20;
        for i in 0..200 {
            let key = format!("/q?labelSelector={}{i}", "k".repeat(60_000));
            cache.put(key, entry(body));
        }
        let (count, bytes) = cache.size();
        assert!(bytes <= MAX_BYTES, "{bytes} bytes");
        assert!(count < 200 && count > 0, "{count} entries");
        // Many small answers: the entry bound decides.
        let cache = ResponseCache::default();
        for i in 0..(MAX_ENTRIES + 500) {
            cache.put(format!("/q{i}"), entry(10));
        }
        assert_eq!(cache.size().0, MAX_ENTRIES);
        // Replacing an answer does not count it twice.
        cache.put("/q0-again".into(), entry(10));
        let before = cache.size().1;
        cache.put("/q0-again".into(), entry(10));
        assert_eq!(cache.size().1, before);
    }

    #[test]
    fn the_rebuild_claim_is_released_however_the_rebuild_ends() {
        let entry = Arc::new(Entry {
            built_at: Instant::now(),
            generation: 1,
            status: StatusCode::OK,
            body: Bytes::from_static(b"{}"),
            gzipped: None,
            refreshing: AtomicBool::new(false),
        });
        assert!(
            !entry.refreshing.swap(true, Ordering::AcqRel),
            "first claim wins"
        );
        assert!(
            entry.refreshing.swap(true, Ordering::AcqRel),
            "second claim loses"
        );
        // A rebuild that fails or whose client goes away drops the guard early.
        drop(RefreshFlag(entry.clone()));
        assert!(!entry.refreshing.load(Ordering::Acquire));
    }
}
