//! One pod reflector per WarmPool target, watching only the pods its scale subresource
//! selects (the apiserver filters by the selector; nothing here parses it).
//!
//! Owns: starting a watch when a pool is first synced, restarting it when the selector
//! changes, stopping it when the pool goes away, and telling a sync whether the watch has
//! listed yet. Every watch task is aborted when the owner ([`PodWatches`]) is dropped, so none
//! outlives the controller.
//! Does not own: what the pods mean.

use super::crd::WarmPool;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

struct Watch {
    namespace: String,
    selector: String,
    store: Store<Pod>,
    /// Set once the first list is in the store.
    listed: Arc<AtomicBool>,
    task: AbortHandle,
}

/// The per-pool pod watches.
pub struct PodWatches {
    client: Client,
    watches: Mutex<HashMap<ObjectRef<WarmPool>, Watch>>,
}

impl PodWatches {
    pub fn new(client: Client) -> PodWatches {
        PodWatches {
            client,
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// The pool's pod store once its watch has listed; starts or restarts the watch as
    /// needed (`None` until the first list is in).
    pub fn store(
        &self,
        pool: &ObjectRef<WarmPool>,
        namespace: &str,
        selector: &str,
    ) -> Option<Store<Pod>> {
        let mut watches = self.watches.lock().ok()?;
        let current = watches
            .get(pool)
            .is_some_and(|w| w.selector == selector && w.namespace == namespace);
        if !current {
            if let Some(old) = watches.remove(pool) {
                old.task.abort();
            }
            let (store, writer) = reflector::store();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let config = watcher::Config::default().labels(selector);
            let stream = watcher(api, config)
                .default_backoff()
                .modify(|pod| {
                    // Not read, and the bulk of a stored pod.
                    pod.metadata.managed_fields = None;
                })
                .reflect(writer)
                .applied_objects();
            let name = pool.name.clone();
            let listed = Arc::new(AtomicBool::new(false));
            let (flag, reader) = (Arc::clone(&listed), store.clone());
            let task = tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let drive = async {
                        futures::pin_mut!(stream);
                        while let Some(item) = stream.next().await {
                            if let Err(e) = item {
                                tracing::warn!(error = %e, "pod watch failed; retrying");
                            }
                        }
                    };
                    let mark = async {
                        if reader.wait_until_ready().await.is_ok() {
                            flag.store(true, Ordering::Release);
                        }
                    };
                    futures::join!(drive, mark);
                },
                tracing::info_span!("pod_watch", pool = %name),
            ));
            watches.insert(
                pool.clone(),
                Watch {
                    namespace: namespace.to_owned(),
                    selector: selector.to_owned(),
                    store,
                    listed,
                    task: task.abort_handle(),
                },
            );
        }
        let watch = watches.get(pool)?;
        // A store that has not listed yet would show an empty fleet: never decide on it.
        watch
            .listed
            .load(Ordering::Acquire)
            .then(|| watch.store.clone())
    }

    /// Stops the pool's watch.
    pub fn forget(&self, pool: &ObjectRef<WarmPool>) {
        if let Ok(mut watches) = self.watches.lock() {
            if let Some(w) = watches.remove(pool) {
                w.task.abort();
            }
        }
    }
}

impl Drop for PodWatches {
    fn drop(&mut self) {
        if let Ok(watches) = self.watches.lock() {
            for w in watches.values() {
                w.task.abort();
            }
        }
    }
}
