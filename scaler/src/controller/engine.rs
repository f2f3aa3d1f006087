//! vLLM sleep mode, spoken to one pod at a time: `POST /sleep?level=N`, `POST /wake_up`,
//! `GET /is_sleeping` (vLLM's dev-mode endpoints, served with `VLLM_SERVER_DEV_MODE=1` and
//! `--enable-sleep-mode`).
//!
//! Owns: the HTTP calls and their timeouts. Does not own: when to call them.

use std::time::Duration;

/// A sleep call returns once weights are offloaded: seconds for a large model at level 1.
const SLEEP_TIMEOUT: Duration = Duration::from_secs(60);
/// A wake call returns once weights are back: vLLM's blog measures 0.3–6 s.
const WAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// State probes are cheap; a pod that does not answer within this is treated as unknown.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a call to an engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request failed (connection, timeout).
    #[error("{call} {url}")]
    Request {
        call: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The engine answered with an error status (e.g. sleep mode not enabled).
    #[error("{call} {url} answered {status}: {body}")]
    Status {
        call: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The answer could not be read.
    #[error("{call} {url}: {reason}")]
    Decode {
        call: &'static str,
        url: String,
        reason: String,
    },
}

/// One engine's HTTP API.
#[derive(Debug, Clone)]
pub struct Engine {
    base: String,
}

/// The client shared by every call (keep-alive across pods).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(PROBE_TIMEOUT)
        .build()
        .unwrap_or_default()
}

impl Engine {
    pub fn new(ip: &str, port: u16) -> Engine {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        Engine {
            base: format!("http://{host}:{port}"),
        }
    }

    pub async fn sleep(&self, http: &reqwest::Client, level: u8) -> Result<(), EngineError> {
        let url = format!("{}/sleep?level={level}", self.base);
        self.call("sleep", http.post(&url).timeout(SLEEP_TIMEOUT), url)
            .await
            .map(drop)
    }

    pub async fn wake_up(&self, http: &reqwest::Client) -> Result<(), EngineError> {
        let url = format!("{}/wake_up", self.base);
        self.call("wake_up", http.post(&url).timeout(WAKE_TIMEOUT), url)
            .await
            .map(drop)
    }

    /// `GET /is_sleeping` → `{"is_sleeping": bool}`.
    pub async fn is_sleeping(&self, http: &reqwest::Client) -> Result<bool, EngineError> {
        let url = format!("{}/is_sleeping", self.base);
        let body = self
            .call(
                "is_sleeping",
                http.get(&url).timeout(PROBE_TIMEOUT),
                url.clone(),
            )
            .await?;
        let value: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| EngineError::Decode {
                call: "is_sleeping",
                url: url.clone(),
                reason: e.to_string(),
            })?;
        value["is_sleeping"]
            .as_bool()
            .ok_or_else(|| EngineError::Decode {
                call: "is_sleeping",
                url,
                reason: format!("no boolean is_sleeping in {body}"),
            })
    }

    async fn call(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
        url: String,
    ) -> Result<String, EngineError> {
        let failed = |source| EngineError::Request {
            call,
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body = response.text().await.map_err(failed)?;
        if !status.is_success() {
            return Err(EngineError::Status {
                call,
                url,
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        Ok(body)
    }
}
