//! What machine and build produced a result. Every report carries it, so a figure can always be
//! traced to the CPU, thread count, compiler and commit behind it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    /// The CPU's vendor, family and model numbers (`GenuineIntel family 6 model 167`): virtual
    /// machines often show one name ("AMD EPYC") for several generations, whose speeds differ.
    /// Empty where the OS does not say, and in reports saved before it was recorded.
    #[serde(default)]
    pub cpu_id: String,
    pub logical_cores: usize,
    /// SIMD instruction sets detected at run time (what the simd backends may use).
    pub simd_features: Vec<String>,
    /// The instruction set the simd backends' kernels run (`GPT2_BENCH_ISA`, else the best);
    /// empty in reports saved before it was recorded.
    #[serde(default)]
    pub simd_kernels: String,
    pub os: String,
    pub arch: String,
    pub rustc: String,
    /// Git commit the binary was built from, with `-dirty` for uncommitted changes.
    pub git_commit: String,
    /// `release` or `debug`: debug builds are many times slower and not worth comparing.
    pub build_profile: String,
    pub gpt2_bench_version: String,
}

impl Machine {
    pub fn detect() -> Self {
        Machine {
            cpu: cpu_model(),
            cpu_id: cpu_id(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd_features: simd_features().into_iter().map(String::from).collect(),
            simd_kernels: gpt2_backends::kernels::Kernels::detect()
                .isa()
                .name()
                .to_string(),
            os: os_name(),
            arch: std::env::consts::ARCH.to_string(),
            rustc: env!("GPT2_BENCH_RUSTC_VERSION").to_string(),
            git_commit: env!("GPT2_BENCH_GIT_COMMIT").to_string(),
            build_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            gpt2_bench_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl Machine {
    /// The machine as the results store and `history` tell machines apart: the CPU's name, and
    /// its family and model when known.
    pub fn label(&self) -> String {
        if self.cpu_id.is_empty() {
            self.cpu.clone()
        } else {
            format!("{} ({})", self.cpu, self.cpu_id)
        }
    }
}

/// `GenuineIntel family 6 model 167` from /proc/cpuinfo (x86); empty elsewhere.
fn cpu_id() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return String::new();
    };
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("vendor_id"), field("cpu family"), field("model")) {
        (Some(vendor), Some(family), Some(model)) => {
            format!("{vendor} family {family} model {model}")
        }
        _ => String::new(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn os_name() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        });
    pretty.unwrap_or_else(|| std::env::consts::OS.to_string())
}

#[allow(clippy::vec_init_then_push)]
fn simd_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ] {
            if on {
                f.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    f.push("neon");
    f
}

/// The 1-minute load average from /proc/loadavg (Linux), or `None`.
/// For tests: the load average to report instead of the machine's.
pub const TEST_LOAD_ENV: &str = "GPT2_BENCH_TEST_LOAD";

pub fn load_average_1min() -> Option<f64> {
    // The CLI tests pin the load they need (a quiet machine for the gate's verdicts, a busy
    // one for its refusal), whatever else runs beside them.
    if let Some(load) = std::env::var(TEST_LOAD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(load);
    }
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resets the process's peak RSS (Linux: writing 5 to /proc/self/clear_refs), so that the next
/// [`peak_rss_bytes`] measures from now. Where that is not possible it does nothing, and the
/// peak is the process's so far.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(now_utc().len(), 20);
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1_000_000);
        }
    }
}
