//! Where earshot's weights come from.
//!
//! The inference crate wants one thing: candle tensors plus a config. This
//! crate hides how they got there:
//!
//! - [`catalog`]: the Whisper models known by name (`tiny.en` … `large-v3-turbo`);
//! - [`resolve`]: spec string → folder on disk (explicit path, local models
//!   folder, or the Hugging Face hub and its cache, online or offline);
//! - [`ct2`]: a validating reader for CTranslate2 `model.bin` files and an
//!   importer that turns faster-whisper checkpoints into Hugging Face-named
//!   tensors;
//! - [`whisper`]: the common result type and the safetensors loader;
//! - [`llm`]: the summarizer GGUF models by name and where they come from;
//! - [`vad`]: the Silero VAD model file (`silero-vad-v6/`, from the
//!   faster-whisper wheel);
//! - [`checksum`]: SHA-256 verification of downloaded files.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! let resolved = earshot_models::resolve_whisper("tiny.en")?;
//! let weights = earshot_models::load_whisper_tensors(&resolved, DType::F32, &Device::Cpu)?;
//! println!("{} layers", weights.config.encoder_layers);
//! # Ok::<(), earshot_models::ModelError>(())
//! ```

pub mod catalog;
pub mod checksum;
pub mod ct2;
pub mod diarize;
mod error;
pub mod hub;
pub mod llm;
pub mod resolve;
pub mod vad;
pub mod whisper;

pub use catalog::{CatalogEntry, CATALOG};
pub use checksum::{sha256_file, verify_sha256};
pub use ct2::{import_whisper, read_model_bin, Ct2DType, Ct2File, Ct2Var};
pub use diarize::{resolve_diarize, resolve_diarize_with, DiarizeFiles};
pub use error::ModelError;
pub use hub::HubSettings;
pub use llm::{
    lookup_llm, resolve_llm, resolve_llm_with, LlmEntry, ResolvedLlm, DEFAULT_LLM, LLM_CATALOG,
};
pub use resolve::{
    classify_folder, load_whisper_tensors, models_dir, resolve_whisper, resolve_whisper_with,
    HubFormat, ModelSource, ResolveOptions, ResolvedWhisper, WhisperFormat,
};
pub use vad::{
    resolve_silero_vad, resolve_silero_vad_with, SILERO_VAD_FILE, SILERO_VAD_FOLDER,
    SILERO_VAD_SHA256,
};
pub use whisper::{default_dtype, GenerationConfig, ImportedWhisper};
