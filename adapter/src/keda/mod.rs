//! KEDA coexistence: KEDA's external-scaler gRPC contract (`externalscaler.proto`), served by
//! the adapter, so a ScaledObject with an `external` or `external-push` trigger scales on any
//! inferscale signal while KEDA owns `external.metrics.k8s.io` (only one APIService can own
//! it, keda#470).
//!
//! Owns: the generated contract ([`proto`], from `adapter/proto/externalscaler.proto`,
//! vendored verbatim), the trigger metadata ([`query`]), the service ([`service`]) and its
//! listener ([`serve`]): TLS with the adapter's serving certificate, on its own port, off
//! unless `--keda-scaler-listen` is given. Values come from the same store and the same
//! external-metric reading as `external.metrics.k8s.io` — there is no second aggregation.
//!
//! Who may call is settled in the TLS handshake: with `--keda-client-ca-file`, only clients
//! presenting a certificate from that CA (KEDA's `tlsClientCert`) get through; without it,
//! any client that reaches the port does, and a NetworkPolicy should admit only KEDA's
//! namespace. There is no per-namespace authorization: a caller can read any namespace's
//! values, as the ScaledObject's namespace is what it sends.

pub mod query;
pub mod service;

/// The types and the server and client stubs `tonic-prost-build` generates from
/// `externalscaler.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    missing_docs,
    rust_2018_idioms,
    reason = "generated code"
)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

pub use query::{QueryError, ScalerQuery};
pub use service::ScalerService;

use crate::http::ServeOptions;
use crate::tls::TlsState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `service` as `externalscaler.ExternalScaler` over TLS (HTTP/2, ALPN `h2`, as
/// KEDA's gRPC client requires) on `listener`, with the API server's connection handling
/// (`options`: limits and timeouts), until `shutdown` is cancelled; then drains like the API
/// server. Give the service the same token: its open `StreamIsActive` streams then end at
/// once, so the drain does not wait for them.
pub async fn serve(
    listener: TcpListener,
    tls: TlsState,
    service: ScalerService,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let router = tonic::service::Routes::new(
        proto::external_scaler_server::ExternalScalerServer::new(service),
    )
    .prepare()
    .into_axum_router();
    crate::tls::serve(listener, tls, router, options, shutdown.cancelled_owned()).await;
}
