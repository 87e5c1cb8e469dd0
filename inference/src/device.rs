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

/// How Whisper's weights are held and multiplied, by faster-whisper's
/// names. `Default` picks per device: float16 on CUDA, float32 on the CPU
/// (int8 is opt-in there until it is measured to keep the accuracy bar on
/// every model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeType {
    #[default]
    Default,
    /// int8 weights for every linear layer and the embeddings, quantized
    /// per row as CTranslate2 does (CPU only).
    Int8,
    Float32,
    /// Half precision (CUDA only: the CPU has no fast f16 matmul).
    Float16,
}

impl std::str::FromStr for ComputeType {
    type Err = InferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" | "auto" => Ok(Self::Default),
            "int8" | "int8_float32" => Ok(Self::Int8),
            "float32" | "f32" => Ok(Self::Float32),
            "float16" | "f16" => Ok(Self::Float16),
            other => Err(InferenceError::BadOption(format!(
                "unknown compute type {other:?} (default, int8, float32, float16)"
            ))),
        }
    }
}

impl ComputeType {
    /// The weights' dtype on `device`, and whether to quantize to int8;
    /// a type the device cannot run is a typed error.
    pub fn resolve(self, device: &Device) -> Result<(DType, bool), InferenceError> {
        match (self, device.is_cuda()) {
            (Self::Default, _) => Ok((compute_dtype(device), false)),
            (Self::Float32, _) => Ok((DType::F32, false)),
            (Self::Float16, true) => Ok((DType::F16, false)),
            (Self::Float16, false) => Err(InferenceError::BadOption(
                "compute type float16 needs CUDA; use float32 or int8 on the CPU".into(),
            )),
            (Self::Int8, false) => Ok((DType::F32, true)),
            (Self::Int8, true) => Err(InferenceError::BadOption(
                "compute type int8 runs on the CPU; use float16 on CUDA".into(),
            )),
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
