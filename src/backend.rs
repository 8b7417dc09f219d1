//! The backends this build was compiled with, and choosing one (and its float type) at run time.

use std::str::FromStr;

use burn::prelude::Backend;

use crate::PhiError;

/// burn's pure-Rust CPU backend (SIMD, multi-threaded); f16/bf16 through the device's default dtype.
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;
/// wgpu (Vulkan, Metal, DX12), f32.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
/// wgpu in f16 (the adapter must support `SHADER_F16`).
#[cfg(feature = "wgpu")]
pub type WgpuF16 = burn::backend::Wgpu<burn::tensor::f16>;
/// CUDA, f32.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
/// CUDA in f16.
#[cfg(feature = "cuda")]
pub type CudaF16 = burn::backend::Cuda<burn::tensor::f16>;
/// CUDA in bf16.
#[cfg(feature = "cuda")]
pub type CudaBf16 = burn::backend::Cuda<burn::tensor::bf16>;

/// A backend by name, as command lines give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendName {
    /// `flex` or `cpu`.
    Flex,
    /// wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// CUDA.
    Cuda,
}

impl FromStr for BackendName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" | "cpu" => Ok(Self::Flex),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(format!("unknown backend {s:?}: flex (or cpu), wgpu, cuda")),
        }
    }
}

/// The float type the model computes in (scores, softmax and logits stay f32 regardless).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16.
    Bf16,
}

impl FromStr for FloatType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown float type {s:?}: f32, f16, bf16")),
        }
    }
}

/// Where the GPU backends keep compiled kernels and autotune results between processes:
/// `$PHI_ZOO_KERNEL_CACHE`, else `$XDG_CACHE_HOME/phi-zoo/cubecl`, else
/// `~/.cache/phi-zoo/cubecl` (`kernels/` and `autotune/` inside).
pub fn kernel_cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os("PHI_ZOO_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("phi-zoo").join("cubecl")
}

/// Points cubecl's kernel and autotune caches at [`kernel_cache_dir`], once per process, before
/// a GPU backend starts: without it, compiled kernels are not kept at all and autotune results
/// go to a `target/` beside the nearest `Cargo.toml`, so a second process compiles and tunes
/// everything again. A `cubecl.toml` or `burn.toml` the user keeps in the working directory
/// (cubecl's own configuration files) wins, as does a configuration already in force.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn configure_kernel_caches() {
    configure_cubecl(|_| {});
}

/// Sets cubecl's configuration, if none is in force yet: the user's file if the working
/// directory has one, else phi-zoo's kernel caches; `adjust` then changes what it needs (the
/// trace's loggers). True if this call set it.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) fn configure_cubecl(
    adjust: impl FnOnce(&mut burn::cubecl::config::CubeClRuntimeConfig),
) -> bool {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    // Held while the configuration is made, so two threads cannot both set it.
    static SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _setting = SETTING.lock().unwrap_or_else(|e| e.into_inner());
    if CubeClRuntimeConfig::storage().lock().is_some() {
        return false;
    }
    let user_file = ["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"]
        .iter()
        .any(|name| std::path::Path::new(name).exists());
    let mut config = if user_file {
        CubeClRuntimeConfig::from_current_dir().override_from_env()
    } else {
        let dir = kernel_cache_dir();
        let mut config = CubeClRuntimeConfig::default().override_from_env();
        config.compilation.cache = Some(CacheConfig::File(dir.join("kernels")));
        config.autotune.cache = CacheConfig::File(dir.join("autotune"));
        config
    };
    adjust(&mut config);
    CubeClRuntimeConfig::set(config);
    true
}

/// The first `count` devices of `device`'s kind (device indices 0..count), for data-parallel runs.
pub fn devices_like<B: Backend>(device: &B::Device, count: usize) -> Vec<B::Device> {
    use burn::tensor::backend::Device;
    (0..count)
        .map(|index| {
            let mut id = device.to_id();
            id.index_id = index as u16;
            <B::Device as Device>::from_id(id)
        })
        .collect()
}

/// Work generic over the backend, run by `run_on` on the backend chosen at run time.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` on `device`.
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on `backend` in `float`, on the backend's default device. An error if that backend
/// was not compiled in or cannot compute in that type.
pub fn run_on<J: BackendJob>(
    backend: BackendName,
    float: FloatType,
    job: J,
) -> Result<J::Output, PhiError> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if backend != BackendName::Flex {
        configure_kernel_caches();
    }
    match (backend, float) {
        #[cfg(feature = "flex")]
        (BackendName::Flex, float) => {
            let device = Default::default();
            let half = match float {
                FloatType::F32 => None,
                FloatType::F16 => Some(burn::tensor::FloatDType::F16),
                FloatType::Bf16 => Some(burn::tensor::FloatDType::BF16),
            };
            // Flex computes in f16/bf16 only through the device's default dtype, which can be
            // set once per process, before the first tensor.
            if let Some(dtype) = half {
                burn::tensor::set_default_dtypes::<Cpu>(
                    &device,
                    dtype,
                    burn::tensor::IntDType::I32,
                )
                .map_err(|e| {
                    PhiError::Input(format!(
                        "cannot switch the CPU backend to {float:?} once tensors exist: {e:?}"
                    ))
                })?;
            }
            Ok(job.run::<Cpu>(device))
        }
        #[cfg(feature = "wgpu")]
        (BackendName::Wgpu, FloatType::F32) => Ok(job.run::<Wgpu>(Default::default())),
        #[cfg(feature = "wgpu")]
        (BackendName::Wgpu, FloatType::F16) => Ok(job.run::<WgpuF16>(Default::default())),
        #[cfg(feature = "wgpu")]
        (BackendName::Wgpu, FloatType::Bf16) => Err(PhiError::Input(
            "wgpu has no bf16 arithmetic: use f32 or f16".into(),
        )),
        #[cfg(feature = "cuda")]
        (BackendName::Cuda, FloatType::F32) => Ok(job.run::<Cuda>(Default::default())),
        #[cfg(feature = "cuda")]
        (BackendName::Cuda, FloatType::F16) => Ok(job.run::<CudaF16>(Default::default())),
        #[cfg(feature = "cuda")]
        (BackendName::Cuda, FloatType::Bf16) => Ok(job.run::<CudaBf16>(Default::default())),
        #[allow(unreachable_patterns)]
        (backend, _) => Err(PhiError::Input(format!(
            "the {backend:?} backend is not compiled in: rebuild with `--features {}`",
            format!("{backend:?}").to_lowercase()
        ))),
    }
}
