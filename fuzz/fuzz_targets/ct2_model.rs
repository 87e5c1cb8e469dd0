//! CTranslate2 `model.bin` bytes through the reader and the Whisper
//! importer, exactly as a downloaded model folder is loaded (the file is
//! memory-mapped from a scratch path). Any bytes must give a `ModelError`,
//! never a panic, an abort or an allocation sized by a header.
//!
//! With `EARSHOT_FUZZ_SEED_DIR` set, the target first writes tiny valid
//! models there (the tests' own fixture writer), so the corpus starts from
//! files that import.
#![no_main]

use candle_core::{DType, Device};
use earshot_models::ct2::{import_whisper_file, read_model_bin, write_tiny_whisper_ct2, TinySpec};
use earshot_models::{Ct2DType, GenerationConfig};
use libfuzzer_sys::fuzz_target;

fn write_seeds() {
    let Some(out) = std::env::var_os("EARSHOT_FUZZ_SEED_DIR") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).expect("seed folder");
    let tmp = std::env::temp_dir().join(format!("earshot-fuzz-ct2-seeds-{}", std::process::id()));
    for (i, dtype) in [Ct2DType::F32, Ct2DType::F16, Ct2DType::I8]
        .into_iter()
        .enumerate()
    {
        let spec = TinySpec {
            n_mels: 2,
            d_model: 4,
            n_heads: 1,
            encoder_layers: 1,
            decoder_layers: 1,
            ffn_dim: 16,
            vocab_size: 4,
            n_audio_ctx: 2,
            n_text_ctx: 2,
            dtype,
        };
        std::fs::create_dir_all(&tmp).expect("scratch folder");
        if write_tiny_whisper_ct2(&tmp, spec, i as u64).is_ok() {
            let _ = std::fs::copy(
                tmp.join("model.bin"),
                out.join(format!("tiny-{dtype:?}.bin")),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fuzz_target!(init: write_seeds(), |data: &[u8]| {
    let path = earshot_fuzz::scratch_file("ct2", data);
    let Ok(file) = read_model_bin(&path) else {
        return;
    };
    // Every accessor must stay in bounds on whatever the reader accepted.
    for v in &file.vars {
        let _ = file.bytes(v);
        let _ = file.scalar_i64(&v.name);
    }
    let _ = import_whisper_file(&file, GenerationConfig::default(), DType::F32, &Device::Cpu);
});
