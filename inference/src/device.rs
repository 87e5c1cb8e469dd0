//! Choosing where tensors live. CUDA is a cargo feature (`--features cuda`):
//! asking for it in a CPU build is a typed error, not a panic.

use candle_core::{DType, Device};

use crate::error::InferenceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceKind {
    type Err = InferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(InferenceError::BadOption(format!(
                "unknown device {other:?} (expected cpu or cuda)"
            ))),
        }
    }
}

/// Open the device; `ordinal` picks the GPU.
pub fn open(kind: DeviceKind, ordinal: usize) -> Result<Device, InferenceError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => {
            if !cfg!(feature = "cuda") {
                return Err(InferenceError::Device(
                    "this build has no CUDA support; rebuild with --features cuda".into(),
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| InferenceError::Device(e.to_string()))
        }
    }
}

/// The compute dtype for a device: f16 on GPUs (tensor cores), f32 on CPU
/// (no fast f16 matmul there).
pub fn compute_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    }
}
