//! This process's own figures for the `process_*` families, read the way Python's
//! prometheus_client `ProcessCollector` reads them (what a real vLLM exposes about itself).
//!
//! Owns: reading `/proc/self/stat`, `/proc/self/status`, `/proc/self/fd` and
//! `/proc/self/limits`. On platforms without `/proc` there are no figures and the families
//! are left out (as prometheus_client leaves them out). Does not own: rendering.

/// One reading of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub virtual_memory_bytes: f64,
    pub resident_memory_bytes: f64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub open_fds: f64,
    /// The soft limit on open files.
    pub max_fds: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at 100 by the Linux
/// ABI on every architecture that matters here.
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads `/proc/self`; `None` where it is missing or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        parse(&stat, &status, &limits, open_fds)
    }
}

/// `kB` figure of one `/proc/<pid>/status` line, in bytes.
fn status_bytes(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

fn parse(stat: &str, status: &str, limits: &str, open_fds: usize) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold blanks: count fields after
    // the last `)`. utime and stime are fields 14 and 15, so the 12th and 13th after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    let cpu_seconds = (ticks(11)? + ticks(12)?) / USER_HZ;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(ProcessStats {
        virtual_memory_bytes: status_bytes(status, "VmSize:")?,
        resident_memory_bytes: status_bytes(status, "VmRSS:")?,
        cpu_seconds,
        open_fds: open_fds as f64,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_files_written_by_hand() {
        let stat = "4242 (vllm sim (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 8 0 100 123 456";
        let status = "Name:\tvllm-sim\nVmSize:\t  204800 kB\nVmRSS:\t    8192 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        let p = parse(stat, status, limits, 12).unwrap();
        assert_eq!(p.cpu_seconds, 1.75);
        assert_eq!(p.virtual_memory_bytes, 204800.0 * 1024.0);
        assert_eq!(p.resident_memory_bytes, 8192.0 * 1024.0);
        assert_eq!(p.open_fds, 12.0);
        assert_eq!(p.max_fds, 1048576.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let p = ProcessStats::read().expect("/proc/self on Linux");
        assert!(p.resident_memory_bytes > 0.0 && p.open_fds >= 3.0);
    }
}
