//! The contract between the pipeline's stages: what a segmentation model
//! gives per window, what an embedding model gives per clip, and what the
//! pipeline returns. The networks implement the traits; the pipeline and
//! its tests only see the traits, so they run on tiny fakes.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Audio rate every stage works at.
pub const SAMPLE_RATE: usize = 16_000;

/// Where a segmentation model's output frames sit inside its window:
/// frame `i` covers `[start_s + i * step_s, start_s + i * step_s + duration_s)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTiming {
    pub start_s: f64,
    pub step_s: f64,
    pub duration_s: f64,
}

impl FrameTiming {
    /// Centre of frame `i`, seconds from the window's start.
    pub fn center(&self, i: usize) -> f64 {
        self.start_s + i as f64 * self.step_s + self.duration_s / 2.0
    }
}

/// One window's local speaker activity: `probs[f * speakers + s]` is the
/// probability that local speaker `s` speaks in frame `f` (multilabel: two
/// speakers may both be near 1 where they overlap). Local speakers are
/// numbered per window; the same person may be speaker 0 in one window
/// and speaker 2 in the next.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowActivity {
    pub frames: usize,
    pub speakers: usize,
    pub probs: Vec<f32>,
}

impl WindowActivity {
    pub fn get(&self, frame: usize, speaker: usize) -> f32 {
        self.probs[frame * self.speakers + speaker]
    }
}

/// A speaker-segmentation network over fixed windows.
pub trait SegmentModel: Sync {
    /// Samples per window (every slice given to [`Self::segment`] has exactly this many).
    fn window_samples(&self) -> usize;
    /// Output frames per window.
    fn frames(&self) -> usize;
    /// Local speakers per window.
    fn local_speakers(&self) -> usize;
    fn timing(&self) -> FrameTiming;
    /// Window starts should be multiples of this many samples apart (the
    /// pipeline rounds its step to it): a model whose [`Self::segment_at`]
    /// shares work between overlapping windows only on some grid says so
    /// here. 1 by default.
    fn start_quantum(&self) -> usize {
        1
    }
    /// Activity of each window (a batch: implementations run them together).
    fn segment(&self, windows: &[&[f32]]) -> Result<Vec<WindowActivity>>;
    /// Activity of the windows of `audio` starting at `starts` (each whole
    /// inside `audio`): what [`Self::segment`] gives on their slices. A
    /// model may override it to share work between overlapping windows.
    fn segment_at(&self, audio: &[f32], starts: &[usize]) -> Result<Vec<WindowActivity>> {
        let win = self.window_samples();
        if let Some(&s) = starts.iter().find(|&&s| s + win > audio.len()) {
            return Err(crate::error::DiarizeError::Input(format!(
                "window at sample {s} runs past the audio's {} samples",
                audio.len()
            )));
        }
        let slices: Vec<&[f32]> = starts.iter().map(|&s| &audio[s..s + win]).collect();
        self.segment(&slices)
    }
}

/// A speaker-embedding network: one vector per clip of 16 kHz audio.
pub trait EmbedModel: Sync {
    fn dimension(&self) -> usize;
    /// Embeddings of each clip (a batch). Clips may differ in length; each
    /// holds at least [`Self::min_samples`].
    fn embed(&self, clips: &[&[f32]]) -> Result<Vec<Vec<f32>>>;
    /// The shortest clip worth embedding.
    fn min_samples(&self) -> usize {
        SAMPLE_RATE / 2
    }
    /// How many of a `samples`-long clip's first samples the pipeline
    /// should embed so that its clips batch well (a model that batches
    /// only clips of equal length rounds lengths down); all by default.
    fn batchable_samples(&self, samples: usize) -> usize {
        samples
    }
}

/// One speaker turn on the recording's timeline (seconds). `speaker` is a
/// global index: 0 is `SPEAKER_00`, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub start: f64,
    pub end: f64,
    pub speaker: usize,
}

/// `SPEAKER_00`, `SPEAKER_01`, …: pyannote's and WhisperX's labels.
pub fn speaker_label(speaker: usize) -> String {
    format!("SPEAKER_{speaker:02}")
}

/// The arithmetic of the networks' large products (faster-whisper's name
/// for the choice). In CAM++ that is the FCM head's 3×3 convs and the
/// dense blocks' convs, ~95% of an embedding's multiply-adds. In bf16 the
/// operands are rounded to bf16 and the products summed in f32
/// ([`crate::bf16`]): on a CPU with AVX512-BF16 twice the multiply-adds
/// per instruction, and embeddings within a cosine of ~1e-4 of f32's
/// (README: the DER of every test file unchanged). Everything else
/// (fbank, TDNN, pooling) stays f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeType {
    /// bf16 on a CPU with AVX512-BF16, else f32.
    #[default]
    Auto,
    Float32,
    Bfloat16,
}

impl ComputeType {
    /// Whether `network` runs in bf16: `Auto` where the bf16 kernels run
    /// (the CPU device, a CPU with AVX512-BF16); `Bfloat16` elsewhere is
    /// an error.
    pub(crate) fn resolve(
        self,
        on_cpu: bool,
        network: &str,
    ) -> std::result::Result<bool, crate::error::DiarizeError> {
        let can = on_cpu && crate::bf16::available();
        match self {
            Self::Auto => Ok(can),
            Self::Float32 => Ok(false),
            Self::Bfloat16 if can => Ok(true),
            Self::Bfloat16 => Err(crate::error::DiarizeError::Options(format!(
                "bfloat16 {network} needs the CPU device on a CPU with AVX512-BF16 \
                 (use float32 or auto)"
            ))),
        }
    }
}

impl std::str::FromStr for ComputeType {
    type Err = crate::error::DiarizeError;
    fn from_str(s: &str) -> std::result::Result<Self, crate::error::DiarizeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "float32" | "f32" => Ok(Self::Float32),
            "bfloat16" | "bf16" => Ok(Self::Bfloat16),
            other => Err(crate::error::DiarizeError::Options(format!(
                "compute type {other:?}: auto, float32 or bfloat16"
            ))),
        }
    }
}
