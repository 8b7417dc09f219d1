//! Counts of what a GPU backend does: kernels launched, kernels compiled, autotune runs, fusion
//! explorations and reused fusion plans. cubecl and burn's fusion report each of these through
//! their loggers; [`install`] routes those loggers to the `log` crate and counts the messages.
//!
//! For benchmarks that measure proxies of GPU speed where no GPU can be timed (lavapipe): every
//! launch is formatted as a message, which costs host time, so traced runs are counted, never
//! timed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use burn_std::config::fusion::FusionLogLevel;
use burn_std::config::{BurnConfig, LogCrateLevel, RuntimeConfig};

use crate::PhiError;

/// What the GPU backend did, counted since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounts {
    /// Kernels launched (fused kernels count once).
    pub kernels: u64,
    /// Kernels compiled (not those read from the on-disk cache).
    pub compilations: u64,
    /// Autotune runs (each times candidate kernels for one new key).
    pub autotunes: u64,
    /// Fusion explorations that ended in a new execution plan.
    pub fusion_explorations: u64,
    /// Operation sequences that reused a cached fusion plan.
    pub fusion_plan_reuses: u64,
}

impl std::ops::Sub for GpuCounts {
    type Output = GpuCounts;
    fn sub(self, earlier: GpuCounts) -> GpuCounts {
        GpuCounts {
            kernels: self.kernels - earlier.kernels,
            compilations: self.compilations - earlier.compilations,
            autotunes: self.autotunes - earlier.autotunes,
            fusion_explorations: self.fusion_explorations - earlier.fusion_explorations,
            fusion_plan_reuses: self.fusion_plan_reuses - earlier.fusion_plan_reuses,
        }
    }
}

/// The messages counted, by how each begins (cubecl 0.10's and burn-fusion 0.21's wording), in
/// `GpuCounts`'s field order.
const PREFIXES: [&str; 5] = [
    "Executing ",
    "[Compiling kernel]",
    "Fastest result",
    "[plan] exploration completed",
    "[plan] cache hit",
];

static COUNTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// `PHI_ZOO_TRACE_KERNELS=1` also prints each launched kernel's name to stderr: which
/// operations a step's kernels are, and which of them fusion left unfused.
static NAMES: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("PHI_ZOO_TRACE_KERNELS").is_some());

struct Counter;

impl log::Log for Counter {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("cubecl")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if *NAMES && message.starts_with(PREFIXES[0]) {
            eprintln!("kernel: {}", &message[PREFIXES[0].len()..]);
        }
        if let Some(i) = PREFIXES.iter().position(|p| message.starts_with(p)) {
            COUNTS[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// Turns counting on. Call it before the first GPU tensor of the process (before
/// [`run_on`](crate::backend::run_on)): cubecl and burn read their logging settings once.
pub fn install() -> Result<(), PhiError> {
    use burn::cubecl::config::autotune::AutotuneLogLevel;
    use burn::cubecl::config::compilation::CompilationLogLevel;
    use burn::cubecl::config::profiling::ProfilingLogLevel;
    let applied = crate::backend::configure_cubecl(|config| {
        config.compilation.logger.level = CompilationLogLevel::Basic;
        config.compilation.logger.log = Some(LogCrateLevel::Trace);
        // "Minimal" names each launch without timing it (timing would sync every kernel).
        config.profiling.logger.level = ProfilingLogLevel::Minimal;
        config.profiling.logger.log = Some(LogCrateLevel::Trace);
        config.autotune.logger.level = AutotuneLogLevel::Minimal;
        config.autotune.logger.log = Some(LogCrateLevel::Trace);
    });
    if !applied || BurnConfig::storage().lock().is_some() {
        return Err(PhiError::Input(
            "GPU counting must be turned on before the GPU backend starts".into(),
        ));
    }
    let mut burn_config = BurnConfig::default().override_from_env();
    burn_config.fusion.logger.level = FusionLogLevel::Full;
    burn_config.fusion.logger.log = Some(LogCrateLevel::Trace);
    BurnConfig::set(burn_config);
    log::set_boxed_logger(Box::new(Counter))
        .map_err(|_| PhiError::Input("a logger is already installed".into()))?;
    log::set_max_level(log::LevelFilter::Trace);
    Ok(())
}

/// The counts so far. cubecl delivers its launch and compilation messages from a background
/// task, so this waits until they stop arriving (the caller synced the device first).
pub fn counts() -> GpuCounts {
    let read = || {
        let [
            kernels,
            compilations,
            autotunes,
            fusion_explorations,
            fusion_plan_reuses,
        ] = std::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed));
        GpuCounts {
            kernels,
            compilations,
            autotunes,
            fusion_explorations,
            fusion_plan_reuses,
        }
    };
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
}
