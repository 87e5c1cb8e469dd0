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

/// Checks that the device still computes: a small matrix product, copied
/// back to the host and compared with the known answer. On a GPU this
/// touches the driver, the context and a kernel launch, so a lost device
/// (Xid error, driver reset) shows up here instead of in the next job.
/// Costs microseconds; readiness probes call it.
pub fn probe(device: &Device) -> Result<(), InferenceError> {
    use candle_core::Tensor;
    let run = || -> candle_core::Result<Vec<f32>> {
        let a = Tensor::new(&[[1f32, 2.], [3., 4.]], device)?;
        let b = Tensor::new(&[[5f32, 6.], [7., 8.]], device)?;
        a.matmul(&b)?.flatten_all()?.to_vec1::<f32>()
    };
    match run() {
        Ok(v) if v == [19., 22., 43., 50.] => Ok(()),
        Ok(v) => Err(InferenceError::Device(format!(
            "device probe computed {v:?}, expected [19, 22, 43, 50]"
        ))),
        Err(e) => Err(InferenceError::Device(format!("device probe failed: {e}"))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_passes_on_cpu() {
        probe(&Device::Cpu).unwrap();
    }

    #[test]
    fn cuda_in_a_cpu_build_is_a_typed_error() {
        if cfg!(feature = "cuda") {
            return;
        }
        let e = open(DeviceKind::Cuda, 0).unwrap_err();
        assert!(matches!(e, InferenceError::Device(_)), "{e}");
        assert!(e.to_string().contains("--features cuda"), "{e}");
    }
}
