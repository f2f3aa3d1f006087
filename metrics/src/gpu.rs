//! GPU readings from NVIDIA dcgm-exporter, joined to the pods that hold the GPUs.
//!
//! Owns: reading a dcgm-exporter body into one [`GpuReading`] per device, and attributing
//! devices to pods through the `pod`/`namespace`/`container` labels the exporter adds in
//! Kubernetes mode (`pod_name`/`pod_namespace`/`container_name` with `--use-old-namespace`).
//! A tensor-parallel replica holds several GPUs: its utilisation is reported as mean and max
//! and its memory summed. GPUs no pod holds are the idle capacity of their node.
//! Does not own: discovering exporter pods or mapping pods to workloads.

use crate::parser::{Format, ParseStats, Parser, Record};
use crate::profile::{gpu_mapping, GpuField};
use serde::Serialize;
use std::collections::BTreeMap;

/// The pod a GPU is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
}

/// One GPU (or MIG instance) as dcgm-exporter reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct GpuReading {
    /// `UUID` label (`uuid` with old names); with MIG, `UUID/GPU_I_ID`.
    pub uuid: String,
    /// `gpu` label: device index on the node.
    pub index: String,
    /// `modelName`, e.g. `NVIDIA L4`.
    pub model_name: String,
    /// `Hostname` (or `hostname` on newer exporters): the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pod holding the GPU (`pod`/`namespace` or `pod_name`/`pod_namespace` labels); `None`
    /// when no pod holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The container holding the GPU, when the exporter says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Field values in base units, by field, with the rank of the name they came from.
    #[serde(rename = "fields", serialize_with = "serialize_fields")]
    fields: [Option<(u8, f64)>; 9],
}

/// Fields as `{"utilization": 0.9, "memory_used_bytes": ...}`, absent ones left out.
fn serialize_fields<S: serde::Serializer>(
    fields: &[Option<(u8, f64)>; 9],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let present: Vec<(GpuField, f64)> = GpuField::ALL
        .iter()
        .filter_map(|&f| fields[f as usize].map(|(_, v)| (f, v)))
        .collect();
    let mut map = serializer.serialize_map(Some(present.len()))?;
    for (field, value) in present {
        map.serialize_entry(&field, &value)?;
    }
    map.end()
}

/// Pods as `{"namespace/pod": {...}}`: JSON object keys must be strings.
fn serialize_pods<S: serde::Serializer>(
    pods: &BTreeMap<PodRef, PodGpus>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(
        pods.iter()
            .map(|(pod, gpus)| (format!("{}/{}", pod.namespace, pod.pod), gpus)),
    )
}

impl GpuReading {
    /// A field in base units (fractions 0–1, bytes, watts).
    pub fn field(&self, field: GpuField) -> Option<f64> {
        self.fields[field as usize].map(|(_, v)| v)
    }

    /// Sets a field (base units). Used by tests and the simulated exporter.
    pub fn set_field(&mut self, field: GpuField, value: f64) {
        self.fields[field as usize] = Some((0, value));
    }

    /// Utilisation as the best available measure: the DCP graphics-engine activity where the
    /// GPU supports profiling (it is what "busy" means for a compute kernel), else the
    /// coarse `GPU_UTIL` sample.
    pub fn busy_fraction(&self) -> Option<f64> {
        self.field(GpuField::GraphicsEngineActive)
            .or_else(|| self.field(GpuField::Utilization))
    }
}

/// Reads a dcgm-exporter body. Unknown fields are skipped; malformed lines are counted.
pub fn read_gpus(body: &str, format: Format) -> (Vec<GpuReading>, ParseStats) {
    let mut parser = Parser::with_filter(body, format, |name: &str| gpu_mapping(name).is_some());
    let mut gpus: BTreeMap<String, GpuReading> = BTreeMap::new();
    for record in parser.by_ref() {
        let Record::Sample(sample) = record else {
            continue;
        };
        let Some(mapping) = gpu_mapping(sample.name) else {
            continue;
        };
        let mut reading = GpuReading::default();
        for label in sample.labels() {
            let value = label.value.into_owned();
            match label.name {
                "UUID" | "uuid" => reading.uuid = value,
                "gpu" => reading.index = value,
                "modelName" => reading.model_name = value,
                "Hostname" | "hostname" => reading.node = Some(value),
                "pod" | "pod_name" if !value.is_empty() => {
                    reading
                        .pod
                        .get_or_insert_with(|| PodRef {
                            namespace: String::new(),
                            pod: String::new(),
                        })
                        .pod = value
                }
                "namespace" | "pod_namespace" if !value.is_empty() => {
                    reading
                        .pod
                        .get_or_insert_with(|| PodRef {
                            namespace: String::new(),
                            pod: String::new(),
                        })
                        .namespace = value
                }
                "container" | "container_name" if !value.is_empty() => {
                    reading.container = Some(value)
                }
                "GPU_I_ID" if !value.is_empty() => {
                    reading.uuid = format!("{}/{}", reading.uuid, value)
                }
                _ => {}
            }
        }
        // A pod label without a namespace (or the reverse) cannot be joined.
        if matches!(&reading.pod, Some(p) if p.pod.is_empty() || p.namespace.is_empty()) {
            reading.pod = None;
        }
        let key = if reading.uuid.is_empty() {
            format!(
                "{}#{}",
                reading.node.as_deref().unwrap_or(""),
                reading.index
            )
        } else {
            reading.uuid.clone()
        };
        let gpu = gpus.entry(key).or_insert_with(|| GpuReading {
            fields: Default::default(),
            ..reading.clone()
        });
        if gpu.pod.is_none() {
            gpu.pod = reading.pod;
            gpu.container = reading.container;
        }
        let slot = &mut gpu.fields[mapping.field as usize];
        if slot.is_none_or(|(rank, _)| mapping.rank < rank) {
            *slot = Some((mapping.rank, sample.value * mapping.scale));
        }
    }
    (gpus.into_values().collect(), parser.into_stats())
}

/// GPU signals of one pod (one replica, possibly tensor-parallel over several GPUs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodGpus {
    /// GPUs the pod holds.
    pub gpus: usize,
    /// Mean busy fraction over the pod's GPUs (0–1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_mean: Option<f64>,
    /// Busiest GPU of the pod (0–1): a tensor-parallel replica is as slow as its busiest GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_max: Option<f64>,
    /// Frame-buffer memory in use, bytes, summed over the pod's GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<f64>,
    /// Frame-buffer memory in use plus free, bytes, summed over the pod's GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<f64>,
    /// Power drawn, watts, summed over the pod's GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    /// Any GPU of the pod reporting a non-zero last XID.
    pub xid_errors: bool,
    /// The GPUs, by UUID.
    pub uuids: Vec<String>,
}

/// GPUs no pod holds, per node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleGpus {
    /// GPUs no pod holds.
    pub gpus: usize,
    /// Their free frame-buffer memory, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_free_bytes: Option<f64>,
    /// Their UUIDs.
    pub uuids: Vec<String>,
}

/// The result of attributing GPUs to pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuJoin {
    /// Keyed `namespace/pod` in JSON.
    #[serde(serialize_with = "serialize_pods")]
    pub pods: BTreeMap<PodRef, PodGpus>,
    /// Keyed by node name (`""` when the exporter ran with `--no-hostname`).
    pub idle_by_node: BTreeMap<String, IdleGpus>,
}

fn sum_some(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values
        .flatten()
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

/// Attributes GPUs (from any number of exporters) to pods.
pub fn join_gpus(gpus: &[GpuReading]) -> GpuJoin {
    let mut by_pod: BTreeMap<PodRef, Vec<&GpuReading>> = BTreeMap::new();
    let mut idle: BTreeMap<String, Vec<&GpuReading>> = BTreeMap::new();
    for gpu in gpus {
        match &gpu.pod {
            Some(pod) => by_pod.entry(pod.clone()).or_default().push(gpu),
            None => idle
                .entry(gpu.node.clone().unwrap_or_default())
                .or_default()
                .push(gpu),
        }
    }
    let pods = by_pod
        .into_iter()
        .map(|(pod, gpus)| {
            let busy: Vec<f64> = gpus.iter().filter_map(|g| g.busy_fraction()).collect();
            let utilization_mean =
                (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64);
            let utilization_max = busy.iter().copied().reduce(f64::max);
            let used = sum_some(gpus.iter().map(|g| g.field(GpuField::MemoryUsedBytes)));
            let free = sum_some(gpus.iter().map(|g| g.field(GpuField::MemoryFreeBytes)));
            let signals = PodGpus {
                gpus: gpus.len(),
                utilization_mean,
                utilization_max,
                memory_used_bytes: used,
                memory_total_bytes: match (used, free) {
                    (Some(u), Some(f)) => Some(u + f),
                    _ => None,
                },
                power_watts: sum_some(gpus.iter().map(|g| g.field(GpuField::PowerWatts))),
                xid_errors: gpus
                    .iter()
                    .any(|g| g.field(GpuField::LastXid).is_some_and(|x| x != 0.0)),
                uuids: gpus.iter().map(|g| g.uuid.clone()).collect(),
            };
            (pod, signals)
        })
        .collect();
    let idle_by_node = idle
        .into_iter()
        .map(|(node, gpus)| {
            let idle = IdleGpus {
                gpus: gpus.len(),
                memory_free_bytes: sum_some(
                    gpus.iter().map(|g| g.field(GpuField::MemoryFreeBytes)),
                ),
                uuids: gpus.iter().map(|g| g.uuid.clone()).collect(),
            };
            (node, idle)
        })
        .collect();
    GpuJoin { pods, idle_by_node }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rendered the way dcgm-exporter 4.5.3-4.8.2's template does in Kubernetes mode: fixed
    /// device labels, `Hostname`, the Labels map, then the Attributes map in key order.
    fn attributed(
        uuid: &str,
        gpu: u32,
        util: u32,
        fb_used: u32,
        pod: Option<(&str, &str)>,
    ) -> String {
        let attrs = match pod {
            Some((ns, p)) => format!(",container=\"vllm\",namespace=\"{ns}\",pod=\"{p}\""),
            None => String::new(),
        };
        let base = format!(
            "gpu=\"{gpu}\",UUID=\"{uuid}\",pci_bus_id=\"00000000:3{gpu}:00.0\",device=\"nvidia{gpu}\",modelName=\"NVIDIA L40S\",Hostname=\"node-a\",DCGM_FI_DRIVER_VERSION=\"580.105.08\"{attrs}"
        );
        format!(
            "DCGM_FI_DEV_GPU_UTIL{{{base}}} {util}\nDCGM_FI_DEV_FB_USED{{{base}}} {fb_used}\nDCGM_FI_DEV_FB_FREE{{{base}}} 1000\n"
        )
    }

    #[test]
    fn tensor_parallel_pod_gets_mean_max_and_summed_memory_and_idle_gpu_goes_to_node() {
        let body = [
            attributed("GPU-a", 0, 80, 40000, Some(("llm", "vllm-0"))),
            attributed("GPU-b", 1, 40, 30000, Some(("llm", "vllm-0"))),
            attributed("GPU-c", 2, 0, 0, None),
        ]
        .concat();
        let (gpus, stats) = read_gpus(&body, Format::Prometheus);
        assert_eq!(stats.skipped(), 0);
        assert_eq!(gpus.len(), 3);
        let join = join_gpus(&gpus);
        let pod = &join.pods[&PodRef {
            namespace: "llm".into(),
            pod: "vllm-0".into(),
        }];
        assert_eq!(pod.gpus, 2);
        assert!((pod.utilization_mean.unwrap() - 0.6).abs() < 1e-12);
        assert!((pod.utilization_max.unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(pod.memory_used_bytes, Some(70000.0 * 1048576.0));
        assert_eq!(join.idle_by_node["node-a"].gpus, 1);
    }

    #[test]
    fn empty_kubernetes_labels_mean_unassigned() {
        let body = "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-x\",container=\"\",namespace=\"\",pod=\"\"} 5\n";
        let (gpus, _) = read_gpus(body, Format::Prometheus);
        assert_eq!(gpus[0].pod, None);
    }
}
