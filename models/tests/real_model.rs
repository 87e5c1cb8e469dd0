//! Import of a real faster-whisper `tiny.en` checkpoint, when installed.
//!
//! Looks for `$EARSHOT_MODELS_DIR/whisper-tiny.en/model.bin` (the default
//! models dir when the variable is unset) and skips with a notice otherwise,
//! so the suite passes before the setup script has downloaded anything.

use candle_core::{DType, Device, Tensor};
use earshot_models::{import_whisper, models_dir, read_model_bin};

#[test]
fn real_tiny_en_imports() {
    let dir = models_dir().join("whisper-tiny.en");
    if !dir.join("model.bin").is_file() {
        eprintln!(
            "SKIPPED real_tiny_en_imports: {} not found (set EARSHOT_MODELS_DIR or run the setup script)",
            dir.join("model.bin").display()
        );
        return;
    }
    let file = read_model_bin(&dir.join("model.bin")).unwrap();
    assert_eq!(file.spec, "WhisperSpec");

    // The converter fuses q|k|v with a zero k bias: checking that the middle
    // third of a real fused bias is zero (while q and v are not) confirms the
    // q, k, v block order the importer assumes.
    let b = file
        .to_f32_vec("encoder/layer_0/self_attention/linear_0/bias")
        .unwrap();
    assert_eq!(b.len(), 3 * 384);
    assert!(b[384..768].iter().all(|&x| x == 0.0));
    assert!(b[..384].iter().any(|&x| x != 0.0));
    assert!(b[768..].iter().any(|&x| x != 0.0));
    let kv = file
        .to_f32_vec("decoder/layer_0/attention/linear_1/bias")
        .unwrap();
    assert!(kv[..384].iter().all(|&x| x == 0.0));

    let w = import_whisper(&dir, DType::F32, &Device::Cpu).unwrap();
    let c = &w.config;
    assert_eq!(c.d_model, 384);
    assert_eq!(c.encoder_layers, 4);
    assert_eq!(c.decoder_layers, 4);
    assert_eq!(c.encoder_attention_heads, 6);
    assert_eq!(c.decoder_attention_heads, 6);
    assert_eq!(c.vocab_size, 51864);
    assert_eq!(c.num_mel_bins, 80);
    assert_eq!(c.max_source_positions, 1500);
    assert_eq!(c.max_target_positions, 448);
    assert!(c.suppress_tokens.contains(&50257));
    assert_eq!(w.generation.suppress_ids_begin, vec![220, 50256]);

    // The weights drive candle's Whisper: the tiny.en decoder, fed
    // <|startoftranscript|><|notimestamps|> over a silent (all -1.5 log-mel,
    // roughly what padding looks like after normalisation) input, should not
    // put end-of-text or garbage first; we only check the logits are finite
    // and well-formed here, the decoding itself belongs to the inference crate.
    let dev = Device::Cpu;
    let vb = candle_nn::VarBuilder::from_tensors(w.tensors, DType::F32, &dev);
    let mut model =
        candle_transformers::models::whisper::model::Whisper::load(&vb, w.config.clone()).unwrap();
    let mel = Tensor::full(-1.5f32, (1, 80, 3000), &dev).unwrap();
    let audio = model.encoder.forward(&mel, true).unwrap();
    assert_eq!(audio.dims(), [1, 1500, 384]);
    let tokens = Tensor::new(&[[50257u32, 50362]], &dev).unwrap();
    let h = model.decoder.forward(&tokens, &audio, true).unwrap();
    let logits = model.decoder.final_linear(&h).unwrap();
    assert_eq!(logits.dims(), [1, 2, 51864]);
    let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}

/// Every catalog model installed in the models dir resolves (offline: a
/// test must never download) and imports with the catalog's mel count and
/// a vocabulary matching its multilingual flag.
#[test]
fn installed_catalog_models_resolve_and_import() {
    let mut opts = earshot_models::ResolveOptions::from_env();
    opts.hub.offline = true;
    let mut found = 0;
    for entry in earshot_models::CATALOG {
        if !opts.models_dir.join(entry.folder_name()).is_dir() {
            continue;
        }
        found += 1;
        let r = earshot_models::resolve_whisper_with(entry.name, &opts).unwrap();
        assert_eq!(r.source, earshot_models::ModelSource::ModelsDir);
        assert!(r.tokenizer.is_file());
        let w = earshot_models::load_whisper_tensors(&r, DType::F16, &Device::Cpu).unwrap();
        assert_eq!(w.config.num_mel_bins, entry.n_mels, "{}", entry.name);
        assert_eq!(
            w.config.vocab_size > 51864,
            entry.multilingual,
            "{}",
            entry.name
        );
        eprintln!("{}: imported {} tensors", entry.name, w.tensors.len());
    }
    if found == 0 {
        eprintln!(
            "SKIPPED installed_catalog_models_resolve_and_import: no whisper-* folder in {}",
            opts.models_dir.display()
        );
    }
}
