//! earshot's engines: audio in, features, Whisper decoding, batching.
//!
//! Everything here is a library with typed errors; the binary decides how to
//! report them.

pub mod audio;
pub mod device;
pub mod error;
pub mod int8;
pub mod llm;
pub mod mel;
pub mod q8;
#[doc(hidden)]
pub mod testing;
pub mod vad;
pub mod whisper;

pub use error::InferenceError;
