//! NVIDIA GPUs, through NVML. `libnvidia-ml` is loaded at run time: on a machine without it (no
//! NVIDIA driver) the node has zero GPUs and runs all the same.

use crate::config::GpuDetection;
use nvml_wrapper::Nvml;
use pxs_protocol::node::{GpuInfo, GpuUse};
use tracing::{info, warn};

pub struct Gpus {
    nvml: Option<Nvml>,
    info: Vec<GpuInfo>,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus").field("info", &self.info).finish()
    }
}

impl Gpus {
    pub fn none() -> Gpus {
        Gpus {
            nvml: None,
            info: Vec::new(),
        }
    }

    pub fn detect(mode: GpuDetection) -> Gpus {
        if mode == GpuDetection::None {
            return Gpus::none();
        }
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                info!(%e, "no NVIDIA GPU found (NVML is not available); running without GPUs");
                return Gpus::none();
            }
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                warn!(%e, "NVML loaded but cannot count the GPUs; running without GPUs");
                return Gpus::none();
            }
        };
        let info: Vec<GpuInfo> = (0..count)
            .map(|index| {
                let d = nvml.device_by_index(index).ok();
                GpuInfo {
                    index,
                    name: d
                        .as_ref()
                        .and_then(|d| d.name().ok())
                        .unwrap_or_else(|| "unknown NVIDIA GPU".into()),
                    memory_total_mb: d
                        .as_ref()
                        .and_then(|d| d.memory_info().ok())
                        .map(|m| m.total / (1024 * 1024)),
                }
            })
            .collect();
        info!(gpus = ?info, "NVIDIA GPUs found");
        Gpus {
            nvml: Some(nvml),
            info,
        }
    }

    pub fn count(&self) -> u32 {
        self.info.len() as u32
    }

    pub fn info(&self) -> &[GpuInfo] {
        &self.info
    }

    /// Each GPU's use: `sessions(index)` from the supervisor, load and memory from the driver.
    pub fn usage(&self, sessions: impl Fn(u32) -> u32) -> Vec<GpuUse> {
        self.info
            .iter()
            .map(|g| {
                let d = self
                    .nvml
                    .as_ref()
                    .and_then(|n| n.device_by_index(g.index).ok());
                GpuUse {
                    index: g.index,
                    sessions: sessions(g.index),
                    utilization_percent: d
                        .as_ref()
                        .and_then(|d| d.utilization_rates().ok())
                        .map(|u| u.gpu),
                    memory_used_mb: d
                        .as_ref()
                        .and_then(|d| d.memory_info().ok())
                        .map(|m| m.used / (1024 * 1024)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_nvidia_has_zero_gpus_and_still_works() {
        // This holds on CI (no driver); on a GPU machine it finds them instead.
        let g = Gpus::detect(GpuDetection::Auto);
        assert_eq!(g.usage(|_| 0).len() as u32, g.count());
        assert_eq!(Gpus::detect(GpuDetection::None).count(), 0);
    }
}
