//! GGUF bytes through the LLM loader: the header reader, the config, the
//! tensor loads, the tokenizer built from the vocabulary and the chat
//! template, as `Llm::load` does for a model file on disk.
//!
//! With `EARSHOT_FUZZ_SEED_DIR` set, the target first writes tiny valid
//! GGUFs of each supported family there (the tests' own writer).
#![no_main]

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use earshot_inference::llm::Llm;
use earshot_inference::testing::{write_tiny_llm, TinyLlm};
use libfuzzer_sys::fuzz_target;

fn write_seeds() {
    let Some(out) = std::env::var_os("EARSHOT_FUZZ_SEED_DIR") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).expect("seed folder");
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        let spec = TinyLlm {
            arch,
            n_embd: 8,
            n_head: 1,
            n_kv_head: 1,
            head_dim: 8,
            n_ff: 8,
            n_layer: 1,
            sliding_window: 4,
            dtype: GgmlDType::F32,
        };
        let _ = write_tiny_llm(&out.join(format!("tiny-{arch}.gguf")), spec, 1);
    }
}

fuzz_target!(init: write_seeds(), |data: &[u8]| {
    let path = earshot_fuzz::scratch_file("gguf", data);
    let _ = Llm::load(&path, None, &Device::Cpu);
});
