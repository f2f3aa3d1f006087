//! A fake node's GPUs in the dcgm-exporter 4.5.3-4.8.2 text format.
//!
//! Owns: the assignments file (which pod holds how many GPUs), handing GPUs out in order,
//! deriving each GPU's readings from its holder's load, and rendering the exporter's output:
//! the 23 families of a real NVIDIA L4 scrape with the default counters
//! (`../shared/fixtures/dcgm/dcgm-exporter-L4-…`), in its order, with its HELP texts and
//! number formats, and the template's label layout (`gpu, UUID, pci_bus_id, device,
//! modelName, Hostname, DCGM_FI_DRIVER_VERSION`, then `container, namespace, pod` for held
//! GPUs). `DCGM_FI_DEV_XID_ERRORS` and `DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL`, default counters
//! too, are left out as the L4 capture leaves them out (no XID yet; an L4 has no NVLink).
//! Does not own: reading the file or scraping pods (see [`crate::dcgm_server`]).
//!
//! Load model: a held GPU is `busy` = 1 when its pod has requests waiting (the batch is
//! full), else `running / max_num_seqs` (capped at 1); `busy` = 0 when the pod is idle, has
//! no `metrics_url`, or cannot be scraped. `GPU_UTIL` = 100 × busy, `GR_ENGINE_ACTIVE` =
//! busy, DRAM and tensor activity and memory-copy utilisation in fixed proportion to it
//! (decode is memory-bound), clocks, power and temperature rise linearly from the L4
//! capture's idle readings, and the energy counter integrates the power between scrapes; a
//! held GPU shows 90 % of its memory used (vLLM's default `gpu_memory_utilization`
//! preallocates it), an unheld one none.

use serde::Deserialize;
use std::fmt::Write;

/// vLLM's default `--max-num-seqs` (V1 on GPUs), used when an assignment does not say.
pub const DEFAULT_MAX_NUM_SEQS: u32 = 256;

/// Share of frame buffer vLLM preallocates (`--gpu-memory-utilization` default).
const HELD_MEMORY_FRACTION: f64 = 0.9;

/// Device-memory activity relative to graphics-engine activity: LLM decode streams the
/// weights and KV cache every step, so DRAM stays busy most of the time the engine is.
const DRAM_PER_ENGINE_ACTIVE: f64 = 0.6;

/// Tensor-pipe activity relative to graphics-engine activity: memory-bound decode leaves
/// the tensor cores idle most of the time.
const TENSOR_PER_ENGINE_ACTIVE: f64 = 0.25;

/// One pod holding GPUs on this node, as the harness writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub gpus: u32,
    /// The pod's vLLM `/metrics`; without it the pod's GPUs read idle.
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// The pod's `--max-num-seqs`, to turn running requests into utilisation.
    #[serde(default)]
    pub max_num_seqs: Option<u32>,
}

/// Reads the assignments file body.
pub fn parse_assignments(body: &str) -> Result<Vec<Assignment>, serde_json::Error> {
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(body)
}

/// For each GPU index, the assignment holding it: GPUs are handed out in file order; pods
/// asking beyond the node's GPUs get none (the count handed out is returned with them).
pub fn assign(assignments: &[Assignment], gpus: u32) -> Vec<Option<usize>> {
    let mut holders = vec![None; gpus as usize];
    let mut next = 0usize;
    for (index, assignment) in assignments.iter().enumerate() {
        for _ in 0..assignment.gpus {
            if next < holders.len() {
                holders[next] = Some(index);
                next += 1;
            }
        }
    }
    holders
}

/// Busy fraction of a pod's GPUs from its vLLM gauges.
pub fn busy_from_load(running: f64, waiting: f64, max_num_seqs: u32) -> f64 {
    if waiting > 0.0 {
        return 1.0;
    }
    (running / f64::from(max_num_seqs.max(1))).clamp(0.0, 1.0)
}

/// The simulated node's hardware.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (`Hostname` label).
    pub name: String,
    pub gpus: u32,
    pub model_name: String,
    pub driver_version: String,
    /// Frame buffer usable by processes, MiB (FB_USED + FB_FREE).
    pub memory_mib: u32,
    pub idle_watts: f64,
    pub max_watts: f64,
    /// SM clock idle and at full load, MHz.
    pub sm_clock_mhz: (f64, f64),
    /// Memory clock idle and at full load, MHz.
    pub mem_clock_mhz: (f64, f64),
    /// Frame buffer the driver reserves, MiB.
    pub reserved_mib: u32,
}

impl Node {
    /// An NVIDIA L4 node, with the idle readings of the kOps L4 capture (SM clock 210 MHz,
    /// memory clock 405 MHz, 16.365 W, 22563 MiB free, 470 MiB reserved) and NVIDIA's L4
    /// datasheet maxima (72 W, 2040 MHz boost; 6251 MHz memory clock).
    pub fn l4(name: &str, gpus: u32) -> Node {
        Node {
            name: name.to_owned(),
            gpus,
            model_name: "NVIDIA L4".to_owned(),
            driver_version: "580.105.08".to_owned(),
            memory_mib: 22563,
            idle_watts: 16.365,
            max_watts: 72.0,
            sm_clock_mhz: (210.0, 2040.0),
            mem_clock_mhz: (405.0, 6251.0),
            reserved_mib: 470,
        }
    }
}

/// What one GPU shows at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuView<'a> {
    pub holder: Option<&'a Assignment>,
    /// 0–1.
    pub busy: f64,
    /// `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`, mJ since the exporter started.
    pub energy_mj: f64,
}

impl Node {
    /// Board power of a GPU this busy, watts.
    pub fn power_watts(&self, busy: f64) -> f64 {
        self.idle_watts + (self.max_watts - self.idle_watts) * busy
    }
}

/// A stable UUID per node and index, shaped like NVIDIA's `GPU-8-4-4-4-12`.
fn gpu_uuid(node: &str, index: u32) -> String {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let hash = |seed: u64| {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for byte in node.bytes().chain(index.to_le_bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(1), hash(2));
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the exporter body for `gpus` (one view per GPU index).
pub fn render(node: &Node, gpus: &[GpuView<'_>]) -> String {
    let labels: Vec<String> = gpus
        .iter()
        .enumerate()
        .map(|(index, gpu)| {
            let index = index as u32;
            let mut labels = format!(
                "gpu=\"{index}\",UUID=\"{}\",pci_bus_id=\"00000000:{:02X}:00.0\",device=\"nvidia{index}\",modelName=\"{}\",Hostname=\"{}\",DCGM_FI_DRIVER_VERSION=\"{}\"",
                gpu_uuid(&node.name, index),
                (0x18 + 0x10 * index) % 0x100,
                escape(&node.model_name),
                escape(&node.name),
                escape(&node.driver_version),
            );
            if let Some(holder) = gpu.holder {
                let _ = write!(
                    labels,
                    ",container=\"{}\",namespace=\"{}\",pod=\"{}\"",
                    escape(&holder.container),
                    escape(&holder.namespace),
                    escape(&holder.pod)
                );
            }
            labels
        })
        .collect();
    let used = |gpu: &GpuView<'_>| {
        if gpu.holder.is_some() {
            (f64::from(node.memory_mib) * HELD_MEMORY_FRACTION).round()
        } else {
            0.0
        }
    };
    // Integer fields print as integers, power and profiling ratios as `%f`, as dcgm-exporter
    // formats them.
    let int = |v: f64| format!("{}", v.round() as i64);
    let ratio = |v: f64| format!("{v:.6}");
    let linear = |(idle, max): (f64, f64), busy: f64| idle + (max - idle) * busy;
    type Reading<'r> = Box<dyn Fn(&GpuView<'_>) -> String + 'r>;
    let families: Vec<(&str, &str, &str, Reading<'_>)> = vec![
        ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", Box::new(|g| int(linear(node.sm_clock_mhz, g.busy)))),
        ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", Box::new(|g| int(linear(node.mem_clock_mhz, g.busy)))),
        // The L4 does not report memory temperature; the capture shows 0.
        ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", Box::new(|g| int(31.0 + 40.0 * g.busy))),
        ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", Box::new(|g| ratio(node.power_watts(g.busy)))),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).", Box::new(|g| int(g.energy_mj))),
        ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", Box::new(|g| int(100.0 * g.busy))),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", Box::new(|g| int(100.0 * DRAM_PER_ENGINE_ACTIVE * g.busy))),
        ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", Box::new(|g| int(f64::from(node.memory_mib) - used(g)))),
        ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", Box::new(|g| int(used(g)))),
        ("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", Box::new(|_| node.reserved_mib.to_string())),
        ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for uncorrectable errors", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status", Box::new(|_| "0".to_owned())),
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", Box::new(|g| ratio(g.busy))),
        ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active.", Box::new(|g| ratio(TENSOR_PER_ENGINE_ACTIVE * g.busy))),
        ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Ratio of cycles the device memory interface is active sending or receiving data.", Box::new(|g| ratio(DRAM_PER_ENGINE_ACTIVE * g.busy))),
        // PCIe traffic of the L4 capture at idle; a serving GPU's host traffic is small.
        ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second.", Box::new(|_| "112603".to_owned())),
        ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second.", Box::new(|_| "17544".to_owned())),
    ];
    let mut out = String::with_capacity(3 * 1024 * gpus.len().max(1));
    for (name, kind, help, reading) in &families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (gpu, labels) in gpus.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", reading(gpu));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferscale_metrics::gpu::{read_gpus, PodRef};
    use inferscale_metrics::parser::Format;
    use inferscale_metrics::profile::GpuField;

    fn pod(name: &str, gpus: u32) -> Assignment {
        Assignment {
            namespace: "llm".into(),
            pod: name.into(),
            container: "vllm".into(),
            gpus,
            metrics_url: None,
            max_num_seqs: None,
        }
    }

    #[test]
    fn gpus_are_handed_out_in_order() {
        let pods = [pod("a", 1), pod("b", 2), pod("c", 5)];
        assert_eq!(assign(&pods, 4), vec![Some(0), Some(1), Some(1), Some(2)]);
    }

    #[test]
    fn assignments_file_is_the_harness_shape() {
        let body = r#"[{"namespace":"llm","pod":"vllm-abc","container":"vllm","gpus":1,"metrics_url":"http://127.1.0.5:8000/metrics"}]"#;
        let parsed = parse_assignments(body).unwrap();
        assert_eq!(
            parsed[0].metrics_url.as_deref(),
            Some("http://127.1.0.5:8000/metrics")
        );
        assert!(parse_assignments("  \n").unwrap().is_empty());
    }

    #[test]
    fn busy_follows_batch_fill_and_saturates_with_a_queue() {
        assert_eq!(busy_from_load(0.0, 0.0, 8), 0.0);
        assert_eq!(busy_from_load(2.0, 0.0, 8), 0.25);
        assert_eq!(busy_from_load(2.0, 3.0, 8), 1.0);
    }

    #[test]
    fn body_reads_back_with_pods_attributed() {
        let holder = pod("vllm-abc", 1);
        let node = Node::l4("kwok-node-0", 2);
        let views = [
            GpuView {
                holder: Some(&holder),
                busy: 0.5,
                energy_mj: 1000.0,
            },
            GpuView {
                holder: None,
                busy: 0.0,
                energy_mj: 0.0,
            },
        ];
        let body = render(&node, &views);
        let (gpus, stats) = read_gpus(&body, Format::Prometheus);
        assert_eq!(stats.skipped(), 0);
        assert_eq!(gpus.len(), 2);
        let held = gpus.iter().find(|g| g.index == "0").unwrap();
        assert_eq!(
            held.pod,
            Some(PodRef {
                namespace: "llm".into(),
                pod: "vllm-abc".into()
            })
        );
        assert_eq!(held.container.as_deref(), Some("vllm"));
        assert_eq!(held.node.as_deref(), Some("kwok-node-0"));
        assert_eq!(held.field(GpuField::Utilization), Some(0.5));
        assert_eq!(held.field(GpuField::GraphicsEngineActive), Some(0.5));
        let idle = gpus.iter().find(|g| g.index == "1").unwrap();
        assert_eq!(idle.pod, None);
        assert_eq!(idle.field(GpuField::MemoryUsedBytes), Some(0.0));
        // Label order of the exporter template, written out by hand.
        assert!(body.contains(",modelName=\"NVIDIA L4\",Hostname=\"kwok-node-0\",DCGM_FI_DRIVER_VERSION=\"580.105.08\",container=\"vllm\",namespace=\"llm\",pod=\"vllm-abc\"} 50\n"));
    }
}
