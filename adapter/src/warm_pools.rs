//! WarmPools, watched: each pool's recommendation and capacity by tier, served as Object
//! metrics on the pool's target workload (`inferscale_recommended_replicas`,
//! `inferscale_pending_replicas`, `inferscale_sleeping_replicas`,
//! `inferscale_placeholder_replicas`, `inferscale_serving_replicas`).
//!
//! Owns: the WarmPool reflector, the metric names, and when a pool's status counts as fresh.
//! A status the controller has not renewed within [`STALE_AFTER_SYNCS`] of its sync period (the
//! controller is down, or lost its Lease without a successor) is *missing*, never served: the
//! HPA then scales on its other metrics alone, which is what it did before the pool existed.
//! A missing CRD is reported and retried, not fatal: the adapter serves everything else.
//! Does not own: the WarmPool types (`inferscale-crd`, shared with the controller).

use futures::StreamExt;
use inferscale_crd::{WarmPool, WarmPoolStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A status older than this many of the pool's sync periods is stale.
pub const STALE_AFTER_SYNCS: f64 = 4.0;
/// The controller's default sync period (the WarmPool field's default).
const DEFAULT_SYNC_PERIOD_SECS: f64 = 15.0;

/// The Object metrics a WarmPool provides for its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMetric {
    Recommended,
    Serving,
    Pending,
    Sleeping,
    Placeholders,
}

impl PoolMetric {
    pub const ALL: [PoolMetric; 5] = [
        PoolMetric::Recommended,
        PoolMetric::Serving,
        PoolMetric::Pending,
        PoolMetric::Sleeping,
        PoolMetric::Placeholders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PoolMetric::Recommended => "inferscale_recommended_replicas",
            PoolMetric::Serving => "inferscale_serving_replicas",
            PoolMetric::Pending => "inferscale_pending_replicas",
            PoolMetric::Sleeping => "inferscale_sleeping_replicas",
            PoolMetric::Placeholders => "inferscale_placeholder_replicas",
        }
    }

    pub fn parse(name: &str) -> Option<PoolMetric> {
        PoolMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    fn of(self, status: &WarmPoolStatus) -> Option<u32> {
        let capacity = status.capacity.as_ref();
        match self {
            PoolMetric::Recommended => status.recommended_replicas,
            PoolMetric::Serving => capacity.map(|c| c.serving),
            PoolMetric::Pending => capacity.map(|c| c.pending),
            PoolMetric::Sleeping => capacity.map(|c| c.sleeping + c.waking),
            PoolMetric::Placeholders => capacity.map(|c| c.placeholders),
        }
    }
}

/// One value of a pool for its target.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolValue {
    pub value: u32,
    /// When the controller decided it (Unix seconds).
    pub decided_at: f64,
    /// API version and kind of the target, for the described object.
    pub api_version: String,
    pub kind: String,
}

/// Read access to the pools.
pub trait PoolView: Send + Sync {
    /// The metric of every fresh pool in `namespace` whose target is of `resource`
    /// (`deployments.apps`) and named `name` (`*`: any name), with the target's name.
    fn values(
        &self,
        namespace: &str,
        resource: &str,
        name: &str,
        metric: PoolMetric,
        now: f64,
    ) -> Vec<(String, PoolValue)>;

    /// Grows whenever a pool changes (the response cache's key to rebuild an answer).
    fn generation(&self) -> u64;
}

/// No pools (standalone mode, and clusters without the warm-pool component).
pub struct NoPools;

impl PoolView for NoPools {
    fn values(&self, _: &str, _: &str, _: &str, _: PoolMetric, _: f64) -> Vec<(String, PoolValue)> {
        Vec::new()
    }

    fn generation(&self) -> u64 {
        0
    }
}

/// The reflector's store as a [`PoolView`].
#[derive(Clone)]
pub struct Pools {
    store: Store<WarmPool>,
    /// Watch events applied to the store.
    changes: Arc<AtomicU64>,
}

impl Pools {
    /// A view of these pools, as if the watch had listed them (tests, benchmarks).
    pub fn listed(pools: impl IntoIterator<Item = WarmPool>) -> Pools {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for pool in pools {
            writer.apply_watcher_event(&watcher::Event::InitApply(pool));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Pools {
            store,
            changes: Arc::default(),
        }
    }
}

impl PoolView for Pools {
    fn values(
        &self,
        namespace: &str,
        resource: &str,
        name: &str,
        metric: PoolMetric,
        now: f64,
    ) -> Vec<(String, PoolValue)> {
        let mut values: Vec<(String, PoolValue)> = self
            .store
            .state()
            .iter()
            .filter_map(|pool| {
                let target = &pool.spec.target_ref;
                if pool.namespace().as_deref() != Some(namespace)
                    || (name != "*" && target.name != name)
                    || !resource_matches(resource, &target.api_version, &target.kind)
                {
                    return None;
                }
                fresh_value(pool, metric, now).map(|v| (target.name.clone(), v))
            })
            .collect();
        // Two pools on one target: the larger recommendation (both ask the HPA for at least
        // that much; the HPA would take the max of two metrics too).
        values.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.value.cmp(&a.1.value)));
        values.dedup_by(|a, b| a.0 == b.0);
        values
    }

    fn generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

/// The pool's value when its status is fresh.
fn fresh_value(pool: &WarmPool, metric: PoolMetric, now: f64) -> Option<PoolValue> {
    let target = &pool.spec.target_ref;
    let status = pool.status.as_ref()?;
    let decided_at = status
        .last_decision
        .as_ref()?
        .time
        .parse::<Timestamp>()
        .ok()?
        .as_second() as f64;
    let period = pool
        .spec
        .sync_period_seconds
        .map_or(DEFAULT_SYNC_PERIOD_SECS, f64::from);
    if now - decided_at > STALE_AFTER_SYNCS * period {
        return None;
    }
    Some(PoolValue {
        value: metric.of(status)?,
        decided_at,
        api_version: target.api_version.clone(),
        kind: target.kind.clone(),
    })
}

/// `deployments.apps` names `apps/v1` `Deployment`: the conventional plural (lower-case kind
/// + "s") and the group.
fn resource_matches(resource: &str, api_version: &str, kind: &str) -> bool {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let target_group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    plural == format!("{}s", kind.to_ascii_lowercase()) && group == target_group
}

/// Watches WarmPools (all namespaces); the store is the view. The future never ends: a
/// failing watch (no CRD, no RBAC) backs off and retries, and says why in the log.
pub fn watch(client: Client) -> (Arc<Pools>, impl std::future::Future<Output = ()>) {
    let (store, writer) = reflector::store();
    let api: Api<WarmPool> = Api::all(client);
    let changes = Arc::new(AtomicU64::new(0));
    let counted = changes.clone();
    let task = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|pool| pool.metadata.managed_fields = None)
        .reflect(writer)
        .for_each(move |event| {
            match event {
                // Most often: the CRD is not installed (warm-pool component absent).
                Err(e) => tracing::warn!(error = %e, "WarmPool watch failed; retrying"),
                Ok(_) => {
                    counted.fetch_add(1, Ordering::AcqRel);
                }
            }
            std::future::ready(())
        });
    (Arc::new(Pools { store, changes }), task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_path_names_the_target_kind() {
        assert!(resource_matches(
            "deployments.apps",
            "apps/v1",
            "Deployment"
        ));
        assert!(resource_matches(
            "leaderworkersets.leaderworkerset.x-k8s.io",
            "leaderworkerset.x-k8s.io/v1",
            "LeaderWorkerSet"
        ));
        assert!(!resource_matches(
            "statefulsets.apps",
            "apps/v1",
            "Deployment"
        ));
        assert!(!resource_matches("deployments", "apps/v1", "Deployment"));
    }
}
