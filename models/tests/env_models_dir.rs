//! `EARSHOT_MODELS_DIR` through the real environment.
//!
//! This is the only test in its binary, so mutating the process environment
//! cannot race with other tests.

use earshot_models::ct2::{write_tiny_whisper_ct2, TinySpec};
use earshot_models::{models_dir, resolve_whisper, ModelSource};

#[test]
fn models_dir_env_var_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("whisper-base.en");
    let spec = TinySpec {
        d_model: 8,
        n_heads: 1,
        ffn_dim: 32,
        vocab_size: 10,
        n_audio_ctx: 4,
        n_text_ctx: 4,
        n_mels: 4,
        encoder_layers: 1,
        decoder_layers: 1,
        ..TinySpec::default()
    };
    write_tiny_whisper_ct2(&dir, spec, 1).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();

    std::env::set_var("EARSHOT_MODELS_DIR", tmp.path());
    // Never reach for the network from a test.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(models_dir(), tmp.path());
    let r = resolve_whisper("base.en").unwrap();
    assert_eq!(r.source, ModelSource::ModelsDir);
    assert_eq!(r.dir, dir);
}
