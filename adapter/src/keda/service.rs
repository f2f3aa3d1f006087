//! The `externalscaler.ExternalScaler` service: KEDA's four calls answered from the store.
//!
//! Owns: turning a [`ScaledObjectRef`] into a value (through the same external-metric reading
//! the `external.metrics.k8s.io` route uses, [`ExternalQuery`]), the gRPC status of each
//! failure, and the `StreamIsActive` push loop. Does not own TLS or the listener
//! ([`super::serve`]) or the metadata keys ([`super::query`]).
//!
//! A value is missing — no servable pod of the selection has one — is an error
//! (`UNAVAILABLE`), never 0: KEDA then keeps the replicas it has (or its `fallback`), where a 0
//! would scale the workload in. An idle workload (nothing waiting, nothing running) reads 0, as
//! everywhere in the adapter.

use super::proto::external_scaler_server::ExternalScaler;
use super::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use super::query::ScalerQuery;
use crate::api::ExternalQuery;
use crate::store::SignalView;
use crate::telemetry::Telemetry;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

/// How often an open `StreamIsActive` re-reads its value, pushing only changes. The store
/// changes once per scrape (5 s by default); a second keeps a push within a second of the
/// scrape that flipped it for the cost of one in-memory read per stream per second.
pub const STREAM_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Answers KEDA from a read view of the store. Cheap to clone.
#[derive(Clone)]
pub struct ScalerService {
    view: Arc<dyn SignalView>,
    /// The time source (Unix seconds); tests fix it.
    clock: fn() -> f64,
    /// Ends every open stream (cleanly) when cancelled: the process is shutting down.
    shutdown: CancellationToken,
    poll_interval: Duration,
    /// Where calls are counted (`requests_total{route="keda_…"}`), if anywhere.
    telemetry: Option<Arc<Telemetry>>,
}

impl ScalerService {
    /// A service over `view` whose streams end when `shutdown` is cancelled.
    pub fn new(view: Arc<dyn SignalView>, shutdown: CancellationToken) -> ScalerService {
        ScalerService {
            view,
            clock: crate::scrape::unix_now,
            shutdown,
            poll_interval: STREAM_POLL_INTERVAL,
            telemetry: None,
        }
    }

    /// The same service counting each call and its latency in the adapter's request metrics,
    /// under the routes `keda_is_active`, `keda_stream_is_active` (opening the stream),
    /// `keda_get_metric_spec` and `keda_get_metrics`, with the HTTP code of the gRPC status
    /// (`200`, `400` invalid metadata, `404` no such pod or metric, `503` missing value).
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> ScalerService {
        self.telemetry = Some(telemetry);
        self
    }

    /// Counts a finished call.
    fn observed<T>(
        &self,
        route: &'static str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Some(telemetry) = &self.telemetry {
            let code = match &result {
                Ok(_) => "200",
                Err(status) => http_code(status.code()),
            };
            telemetry.request(route, code, started.elapsed().as_secs_f64());
        }
        result
    }

    /// The same service re-reading open streams every `interval` instead of
    /// [`STREAM_POLL_INTERVAL`] (tests).
    pub fn with_poll_interval(mut self, interval: Duration) -> ScalerService {
        self.poll_interval = interval;
        self
    }

    /// The same service reading the time from `clock` (Unix seconds; tests fix it).
    pub fn with_clock(mut self, clock: fn() -> f64) -> ScalerService {
        self.clock = clock;
        self
    }

    /// The current value of what `request` asks for.
    fn value(&self, namespace: &str, query: &ScalerQuery) -> Result<f64, Status> {
        let pods = self.view.engine_pods(Some(namespace), (self.clock)());
        let external = ExternalQuery::new(&query.selector);
        let selected = external.select(&pods);
        if selected.is_empty() {
            return Err(Status::not_found(format!(
                "no scraped pod in namespace {namespace} matches {} (is the workload labelled for scraping?)",
                selection(query)
            )));
        }
        match external.measure(query.metric, &selected) {
            Some(measured) => Ok(measured.value),
            None => Err(Status::unavailable(format!(
                "{} has no value for {} in namespace {namespace}: none of its {} pod(s) is ready, fresh and reporting it (missing, not 0)",
                query.metric.name,
                selection(query),
                selected.len()
            ))),
        }
    }

    fn is_active(&self, namespace: &str, query: &ScalerQuery) -> Result<bool, Status> {
        self.value(namespace, query).map(|v| query.is_active(v))
    }

    /// GetMetrics' answer.
    fn metrics(&self, request: &GetMetricsRequest) -> Result<GetMetricsResponse, Status> {
        let scaled_object = request
            .scaled_object_ref
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("GetMetrics without a scaledObjectRef"))?;
        let (namespace, query) = read_ref(scaled_object)?;
        // KEDA asks by the name GetMetricSpec returned; another name is a mix-up worth
        // refusing rather than answering with the wrong signal.
        if !request.metric_name.is_empty() && request.metric_name != query.metric.name {
            return Err(Status::invalid_argument(format!(
                "metricName {:?} does not match the trigger's metricName {:?}",
                request.metric_name, query.metric.name
            )));
        }
        let value = self.value(&namespace, &query)?;
        Ok(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: query.metric.name.to_owned(),
                metric_value: legacy_integer(value),
                metric_value_float: value,
            }],
        })
    }
}

/// The HTTP code a gRPC status corresponds to (grpc-gateway's mapping), for our metrics'
/// closed `code` label.
fn http_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "200",
        Code::InvalidArgument => "400",
        Code::NotFound => "404",
        Code::Unimplemented => "501",
        Code::Unavailable => "503",
        _ => "5xx",
    }
}

/// The selection in words, for error messages.
fn selection(query: &ScalerQuery) -> String {
    if query.selector.is_empty() {
        "all serving pods".to_owned()
    } else {
        format!("selector {}", query.selector_text)
    }
}

/// The namespace and validated query of a ScaledObject reference, or `INVALID_ARGUMENT`
/// listing every problem.
fn read_ref(scaled_object: &ScaledObjectRef) -> Result<(String, ScalerQuery), Status> {
    let query = ScalerQuery::from_metadata(&scaled_object.scaler_metadata).map_err(|errors| {
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Status::invalid_argument(problems.join("; "))
    })?;
    if scaled_object.namespace.is_empty() {
        return Err(Status::invalid_argument(
            "the ScaledObject reference has no namespace",
        ));
    }
    Ok((scaled_object.namespace.clone(), query))
}

/// KEDA's deprecated integer fields, from the float: rounded, saturating.
fn legacy_integer(value: f64) -> i64 {
    value.round() as i64
}

type IsActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;
type MetricSpecStream = Pin<Box<dyn Stream<Item = Result<GetMetricSpecResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let started = Instant::now();
        let answer = read_ref(request.get_ref())
            .and_then(|(namespace, query)| ScalerService::is_active(self, &namespace, &query));
        self.observed("keda_is_active", started, answer)
            .map(|result| Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = IsActiveStream;

    /// Sends the current activity at once, then each change, re-reading every poll interval;
    /// ends cleanly on shutdown (KEDA reconnects, to another replica), and with the error when
    /// the value goes missing or the workload away (KEDA retries with backoff).
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let started = Instant::now();
        let opened = read_ref(request.get_ref()).and_then(|(namespace, query)| {
            let first = ScalerService::is_active(self, &namespace, &query)?;
            Ok((namespace, query, first))
        });
        let (namespace, query, first) = self.observed("keda_stream_is_active", started, opened)?;
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let state = PushState {
            service: self.clone(),
            namespace,
            query,
            ticker,
            last: None,
            pending: Some(Ok(first)),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let next = state.next_change().await?;
            Some((next.map(|result| IsActiveResponse { result }), state))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let started = Instant::now();
        let query = read_ref(request.get_ref()).map(|(_, query)| query);
        let query = self.observed("keda_get_metric_spec", started, query)?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: query.metric.name.to_owned(),
                target_size: legacy_integer(query.target),
                target_size_float: query.target,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let started = Instant::now();
        let answer = self.metrics(request.get_ref());
        self.observed("keda_get_metrics", started, answer)
            .map(Response::new)
    }

    type StreamMetricSpecStream = MetricSpecStream;

    /// Our targets come from the trigger's own metadata and never change on their own, so
    /// there is nothing to push: KEDA treats `UNIMPLEMENTED` as "use GetMetricSpec".
    async fn stream_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented(
            "targets come from the trigger metadata; use GetMetricSpec",
        ))
    }
}

/// One open `StreamIsActive`.
struct PushState {
    service: ScalerService,
    namespace: String,
    query: ScalerQuery,
    ticker: tokio::time::Interval,
    /// What was last sent.
    last: Option<bool>,
    /// Read but not yet sent (the first value).
    pending: Option<Result<bool, Status>>,
}

impl PushState {
    /// The next message: a changed activity, or an error (after which the stream ends);
    /// `None` ends the stream cleanly (shutdown, or after an error was sent).
    async fn next_change(&mut self) -> Option<Result<bool, Status>> {
        loop {
            let read = match self.pending.take() {
                Some(read) => read,
                None => {
                    // Nothing sent last means an error was: end.
                    self.last?;
                    tokio::select! {
                        () = self.service.shutdown.cancelled() => return None,
                        _ = self.ticker.tick() => {}
                    }
                    self.service.is_active(&self.namespace, &self.query)
                }
            };
            match read {
                Ok(active) if self.last == Some(active) => continue,
                Ok(active) => {
                    self.last = Some(active);
                    return Some(Ok(active));
                }
                Err(status) => {
                    self.last = None;
                    return Some(Err(status));
                }
            }
        }
    }
}
