//! What machine and build produced a result. Every report carries it, so a figure can always be
//! traced to the CPU, thread count, compiler and commit behind it.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cores: usize,
    /// SIMD instruction sets detected at run time (what the simd backends may use).
    pub simd_features: Vec<&'static str>,
    pub os: String,
    pub arch: &'static str,
    pub rustc: &'static str,
    /// Git commit the binary was built from, with `-dirty` for uncommitted changes.
    pub git_commit: &'static str,
    /// `release` or `debug`: debug builds are many times slower and not worth comparing.
    pub build_profile: &'static str,
    pub gpt2_bench_version: &'static str,
}

impl Machine {
    pub fn detect() -> Self {
        Machine {
            cpu: cpu_model(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd_features: simd_features(),
            os: os_name(),
            arch: std::env::consts::ARCH,
            rustc: env!("GPT2_BENCH_RUSTC_VERSION"),
            git_commit: env!("GPT2_BENCH_GIT_COMMIT"),
            build_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            gpt2_bench_version: env!("CARGO_PKG_VERSION"),
        }
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
