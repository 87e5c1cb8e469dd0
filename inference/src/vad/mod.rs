//! Voice activity detection: Silero VAD v6, run natively.
//!
//! Why: the batched long-form pipeline cuts the speech out of a recording
//! before decoding it, and skipping silence is the standard cure for
//! Whisper's hallucinations on silence and music. faster-whisper does this
//! with Silero VAD through ONNX Runtime; earshot runs the same network on
//! the same weights in plain Rust (candle's `gemm` crate for the matrix
//! products, `rustfft` for the STFT), so there is no runtime library to
//! ship and nothing is downloaded at build time. On the 10-minute fixture it
//! is ~3× faster than faster-whisper's onnxruntime call on one thread, ~5×
//! on two (`scripts/compare-vad`).
//!
//! What:
//! - [`SileroVad`] reads faster-whisper's `silero_vad_v6.onnx` with a small
//!   protobuf reader (the file is installed by `scripts/fetch-models`; see
//!   `earshot_models::resolve_silero_vad`) and returns one speech
//!   probability per 512-sample window (32 ms at 16 kHz). The convolutional
//!   front end is batched over all windows; only the LSTM runs in sequence.
//! - [`speech_timestamps_from_probs`] / [`SileroVad::speech_timestamps`]:
//!   faster-whisper's `get_speech_timestamps` post-processing, with its
//!   parameter names and defaults ([`VadOptions`]).
//! - [`plan_chunks`] / [`collect_chunks`] and [`SpeechTimestampsMap`]: the
//!   batched pipeline's windows of at most 30 s of speech, and the map from
//!   times in those windows back to the original recording.
//!
//! ```no_run
//! use earshot_inference::vad::{collect_chunks, SileroVad, SpeechTimestampsMap, VadOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vad = SileroVad::load("silero_vad_v6.onnx")?;
//! let samples: Vec<f32> = vec![0.0; 16_000 * 60]; // 16 kHz mono
//! let spans = vad.speech_timestamps(&samples, &VadOptions::batched())?;
//! let (windows, chunks) = collect_chunks(&samples, &spans, 30.0);
//! let map = SpeechTimestampsMap::new(&spans, 16_000);
//! // ... decode `windows`; a segment at t seconds of window k sits at
//! // chunks[k].offset_s + t on the speech-only timeline:
//! # let t = 0.0;
//! let original = map.original_time(chunks[0].offset_s + t, None, false);
//! # let _ = (windows, original);
//! # Ok(()) }
//! ```

mod model;
mod onnx;
mod timestamps;

use std::path::PathBuf;

pub use model::{SileroVad, CONTEXT_SAMPLES, SAMPLE_RATE, WINDOW_SAMPLES};
pub use timestamps::{
    collect_chunks, plan_chunks, speech_timestamps_from_probs, SpeechChunk, SpeechSpan,
    SpeechTimestampsMap, VadOptions,
};

/// Everything that can go wrong loading or running the VAD.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VadError {
    #[error("cannot read the Silero VAD model {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable protobuf (truncated, not ONNX).
    #[error("{path} is not a valid ONNX file (byte {offset}): {reason}")]
    Protobuf {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
    /// A valid ONNX file, but not the Silero VAD v6 graph this code runs.
    #[error(
        "{path} is not Silero VAD v6 as faster-whisper ships it \
         (silero_vad_v6.onnx): {reason}"
    )]
    UnsupportedGraph { path: PathBuf, reason: String },
    /// A weight has the wrong shape or storage.
    #[error("{path}: tensor {name:?}: {reason}")]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("invalid VAD option: {0}")]
    BadOption(String),
}

impl SileroVad {
    /// Speech spans of 16 kHz mono `samples`: [`SileroVad::speech_probs`]
    /// then [`speech_timestamps_from_probs`], i.e. faster-whisper's
    /// `get_speech_timestamps(audio, vad_options)`.
    pub fn speech_timestamps(
        &self,
        samples: &[f32],
        opts: &VadOptions,
    ) -> Result<Vec<SpeechSpan>, VadError> {
        opts.validate()?;
        let probs = self.speech_probs(samples);
        speech_timestamps_from_probs(&probs, samples.len(), opts)
    }
}

/// Writes a file with the graph of `silero_vad_v6.onnx` and random weights
/// (deterministic in `seed`); `output_bias` sets the final layer's bias:
/// about +20 makes every window speech, −20 none. For tests.
#[doc(hidden)]
pub fn write_random_vad(
    path: &std::path::Path,
    seed: u64,
    output_bias: f32,
) -> Result<(), VadError> {
    model::write_random(path, seed, output_bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_file_loads_and_bias_controls_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vad.onnx");
        let x: Vec<f32> = (0..40_000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        write_random_vad(&path, 1, 30.0).unwrap();
        let vad = SileroVad::load(&path).unwrap();
        let spans = vad.speech_timestamps(&x, &VadOptions::default()).unwrap();
        assert_eq!(
            spans,
            vec![SpeechSpan {
                start: 0,
                end: x.len()
            }]
        );
        write_random_vad(&path, 1, -30.0).unwrap();
        let vad = SileroVad::load(&path).unwrap();
        assert!(vad
            .speech_timestamps(&x, &VadOptions::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn errors_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<VadError>();
        check::<SileroVad>();
    }
}
