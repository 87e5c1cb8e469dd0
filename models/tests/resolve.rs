//! Model resolution: paths, the local models folder, the (offline) Hugging
//! Face cache, folder classification and the safetensors path.
//!
//! Every test passes its directories through `ResolveOptions` explicitly,
//! so tests can run in parallel without touching the process environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use earshot_models::ct2::{write_tiny_whisper_ct2, TinySpec};
use earshot_models::{
    classify_folder, import_whisper, load_whisper_tensors, resolve_whisper_with, HubFormat,
    HubSettings, ModelError, ModelSource, ResolveOptions, WhisperFormat,
};

fn small_spec() -> TinySpec {
    TinySpec {
        d_model: 16,
        n_heads: 2,
        ffn_dim: 64,
        vocab_size: 100,
        n_audio_ctx: 50,
        n_text_ctx: 20,
        n_mels: 8,
        encoder_layers: 1,
        decoder_layers: 1,
        ..TinySpec::default()
    }
}

/// A CTranslate2 model folder with a placeholder tokenizer.
fn ct2_folder(dir: &Path) {
    write_tiny_whisper_ct2(dir, small_spec(), 3).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
}

fn options(root: &Path) -> ResolveOptions {
    ResolveOptions {
        models_dir: root.join("models"),
        hub: HubSettings {
            cache_dir: root.join("hf/hub"),
            offline: true,
            endpoint: None,
            token: None,
            progress: false,
            verified_stamps: Some(root.join("models/.verified")),
        },
        hub_format: HubFormat::Safetensors,
    }
}

#[test]
fn resolves_an_existing_folder_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-model");
    ct2_folder(&dir);
    let r = resolve_whisper_with(dir.to_str().unwrap(), &options(tmp.path())).unwrap();
    assert_eq!(r.source, ModelSource::Path);
    assert_eq!(r.name, "my-model");
    assert!(r.catalog.is_none());
    assert_eq!(r.tokenizer, dir.join("tokenizer.json"));
    match &r.format {
        WhisperFormat::CTranslate2 { model_bin, config } => {
            assert_eq!(model_bin, &dir.join("model.bin"));
            assert_eq!(config.as_deref(), Some(dir.join("config.json").as_path()));
        }
        other => panic!("{other:?}"),
    }
    let w = load_whisper_tensors(&r, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(w.config.d_model, 16);

    // Pointing at model.bin means its folder.
    let r2 = resolve_whisper_with(
        dir.join("model.bin").to_str().unwrap(),
        &options(tmp.path()),
    )
    .unwrap();
    assert_eq!(r2.dir, dir);
    // Any other file is not a model.
    std::fs::write(dir.join("talk.wav"), b"RIFF").unwrap();
    let err = resolve_whisper_with(dir.join("talk.wav").to_str().unwrap(), &options(tmp.path()))
        .unwrap_err();
    assert!(
        matches!(err, ModelError::UnrecognizedFolder { .. }),
        "{err:?}"
    );
}

#[test]
fn resolves_catalog_name_from_models_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path());
    ct2_folder(&opts.models_dir.join("whisper-tiny.en"));
    for spec in ["tiny.en", "whisper-tiny.en", " TINY.EN "] {
        let r = resolve_whisper_with(spec, &opts).unwrap();
        assert_eq!(r.source, ModelSource::ModelsDir);
        assert_eq!(r.name, "tiny.en");
        assert_eq!(r.catalog.unwrap().name, "tiny.en");
        assert_eq!(r.dir, opts.models_dir.join("whisper-tiny.en"));
    }
    // A folder named like a catalog model, given as a path, gets its entry.
    let r = resolve_whisper_with(
        opts.models_dir.join("whisper-tiny.en").to_str().unwrap(),
        &opts,
    )
    .unwrap();
    assert_eq!(r.catalog.unwrap().name, "tiny.en");

    // Non-catalog names are looked up in the models dir too.
    ct2_folder(&opts.models_dir.join("whisper-custom"));
    let r = resolve_whisper_with("custom", &opts).unwrap();
    assert_eq!(r.name, "custom");
    assert!(r.catalog.is_none());
}

#[test]
fn unknown_name_and_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path());
    let err = resolve_whisper_with("gigantic-v9", &opts).unwrap_err();
    match &err {
        ModelError::UnknownModel { name, known } => {
            assert_eq!(name, "gigantic-v9");
            assert!(known.iter().any(|k| k == "tiny.en"));
            assert!(known.iter().any(|k| k == "large-v3-turbo"));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("gigantic-v9") && msg.contains("small"),
        "{msg}"
    );

    let err = resolve_whisper_with("", &opts).unwrap_err();
    assert!(matches!(err, ModelError::UnknownModel { .. }), "{err:?}");

    let err = resolve_whisper_with("./does/not/exist", &opts).unwrap_err();
    assert!(matches!(err, ModelError::PathNotFound { .. }), "{err:?}");
}

#[test]
fn incomplete_local_folder_is_an_error_not_a_download() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path());
    let dir = opts.models_dir.join("whisper-base");
    write_tiny_whisper_ct2(&dir, small_spec(), 1).unwrap();
    let err = resolve_whisper_with("base", &opts).unwrap_err();
    match &err {
        ModelError::MissingFile { dir: d, file } => {
            assert_eq!(d, &dir);
            assert_eq!(file, "tokenizer.json");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("whisper-base"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = classify_folder(&empty).unwrap_err();
    assert!(
        matches!(err, ModelError::UnrecognizedFolder { .. }),
        "{err:?}"
    );

    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let err = classify_folder(&empty).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingFile { file, .. } if file.contains("safetensors")),
        "{err:?}"
    );
}

/// Writes an HF-style safetensors checkpoint from an imported CT2 fixture.
fn safetensors_folder(dir: &Path) -> HashMap<String, Tensor> {
    let src = dir.join("src");
    write_tiny_whisper_ct2(&src, small_spec(), 9).unwrap();
    let w = import_whisper(&src, DType::F32, &Device::Cpu).unwrap();
    let st = dir.join("st");
    std::fs::create_dir_all(&st).unwrap();
    candle_core::safetensors::save(&w.tensors, st.join("model.safetensors")).unwrap();
    let c = &w.config;
    let config = serde_json::json!({
        "architectures": ["WhisperForConditionalGeneration"],
        "num_mel_bins": c.num_mel_bins,
        "max_source_positions": c.max_source_positions,
        "d_model": c.d_model,
        "encoder_attention_heads": c.encoder_attention_heads,
        "encoder_layers": c.encoder_layers,
        "vocab_size": c.vocab_size,
        "max_target_positions": c.max_target_positions,
        "decoder_attention_heads": c.decoder_attention_heads,
        "decoder_layers": c.decoder_layers,
        "suppress_tokens": [1, 2],
        "begin_suppress_tokens": [3],
    });
    std::fs::write(st.join("config.json"), config.to_string()).unwrap();
    let generation = serde_json::json!({
        "suppress_tokens": [5, 6],
        "alignment_heads": [[0, 1]],
        "lang_to_id": {"<|fr|>": 50265, "<|en|>": 50259},
    });
    std::fs::write(st.join("generation_config.json"), generation.to_string()).unwrap();
    std::fs::write(st.join("tokenizer.json"), "{}").unwrap();
    w.tensors
}

#[test]
fn safetensors_folder_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let original = safetensors_folder(tmp.path());
    let st = tmp.path().join("st");
    let r = resolve_whisper_with(st.to_str().unwrap(), &options(tmp.path())).unwrap();
    assert!(matches!(&r.format, WhisperFormat::Safetensors { weights, .. } if weights.len() == 1));
    let w = load_whisper_tensors(&r, DType::F16, &Device::Cpu).unwrap();
    assert_eq!(w.config.d_model, 16);
    // generation_config.json wins over config.json.
    assert_eq!(w.config.suppress_tokens, vec![5, 6]);
    assert_eq!(w.generation.suppress_ids_begin, vec![3]);
    assert_eq!(w.generation.alignment_heads, vec![(0, 1)]);
    assert_eq!(w.generation.lang_ids, vec![50259, 50265]);
    assert_eq!(w.tensors.len(), original.len());
    let name = "model.decoder.layers.0.encoder_attn.v_proj.weight";
    assert_eq!(w.tensors[name].dtype(), DType::F16);
    let a: Vec<f32> = original[name].flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = w.tensors[name]
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Fixture values are f16-representable, so the round trip is exact.
    assert_eq!(a, b);
}

/// Lays out files the way hf-hub stores them: blobs named by etag,
/// snapshot symlinks, and a ref pointing at the snapshot.
fn put_in_hf_cache(cache: &Path, repo: &str, revision: &str, files: &[(&str, PathBuf)]) {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = folder.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    let ref_path = folder.join("refs").join(revision);
    std::fs::create_dir_all(ref_path.parent().unwrap()).unwrap();
    std::fs::write(ref_path, "0123456789abcdef").unwrap();
    for (name, src) in files {
        let bytes = std::fs::read(src).unwrap();
        // LFS-style etag for weights, git-sha1-style for small files.
        let etag = if name.ends_with(".bin") || name.ends_with(".safetensors") {
            earshot_models::checksum::sha256_bytes(&bytes)
        } else {
            format!("{:0>40}", name.len())
        };
        let blob = folder.join("blobs").join(&etag);
        std::fs::write(&blob, &bytes).unwrap();
        let link = snapshot.join(name);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
    }
}

#[test]
fn offline_hub_cache_ct2_with_tokenizer_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path());
    opts.hub_format = HubFormat::CTranslate2;
    let src = tmp.path().join("src");
    ct2_folder(&src);
    // The CT2 repo has no tokenizer.json: it must come from the openai repo.
    put_in_hf_cache(
        &opts.hub.cache_dir,
        "Systran/faster-whisper-tiny",
        "main",
        &[
            ("model.bin", src.join("model.bin")),
            ("config.json", src.join("config.json")),
        ],
    );
    put_in_hf_cache(
        &opts.hub.cache_dir,
        "openai/whisper-tiny",
        "main",
        &[("tokenizer.json", src.join("tokenizer.json"))],
    );
    let r = resolve_whisper_with("tiny", &opts).unwrap();
    assert_eq!(
        r.source,
        ModelSource::Hub {
            repo: "Systran/faster-whisper-tiny".into(),
            revision: "main".into()
        }
    );
    assert!(r
        .tokenizer
        .to_string_lossy()
        .contains("models--openai--whisper-tiny"));
    let w = load_whisper_tensors(&r, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(w.config.encoder_layers, 1);
    // The weights blob was hashed once and stamped.
    assert!(
        std::fs::read_dir(opts.models_dir.join(".verified"))
            .unwrap()
            .count()
            == 1
    );

    // Preferring safetensors falls back to the cached CT2 files.
    opts.hub_format = HubFormat::Safetensors;
    let r = resolve_whisper_with("tiny", &opts).unwrap();
    assert!(matches!(r.format, WhisperFormat::CTranslate2 { .. }));
}

#[test]
fn offline_hub_cache_safetensors_with_pr_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path());
    safetensors_folder(tmp.path());
    let st = tmp.path().join("st");
    // tiny.en uses revision refs/pr/15 (see the catalog).
    put_in_hf_cache(
        &opts.hub.cache_dir,
        "openai/whisper-tiny.en",
        "refs/pr/15",
        &[
            ("config.json", st.join("config.json")),
            ("generation_config.json", st.join("generation_config.json")),
            ("model.safetensors", st.join("model.safetensors")),
            ("tokenizer.json", st.join("tokenizer.json")),
        ],
    );
    let r = resolve_whisper_with("tiny.en", &opts).unwrap();
    assert!(matches!(r.format, WhisperFormat::Safetensors { .. }));
    let w = load_whisper_tensors(&r, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(w.config.suppress_tokens, vec![5, 6]);
}

#[test]
fn offline_and_not_cached_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = resolve_whisper_with("small", &options(tmp.path())).unwrap_err();
    match &err {
        ModelError::NotInCache { repo, file, .. } => {
            assert!(repo.starts_with("openai/whisper-small"), "{repo}");
            assert_eq!(file, "config.json");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn corrupted_cached_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path());
    opts.hub_format = HubFormat::CTranslate2;
    let src = tmp.path().join("src");
    ct2_folder(&src);
    put_in_hf_cache(
        &opts.hub.cache_dir,
        "Systran/faster-whisper-base.en",
        "main",
        &[
            ("model.bin", src.join("model.bin")),
            ("config.json", src.join("config.json")),
            ("tokenizer.json", src.join("tokenizer.json")),
        ],
    );
    let blob = std::fs::canonicalize(
        opts.hub
            .cache_dir
            .join("models--Systran--faster-whisper-base.en/snapshots/0123456789abcdef/model.bin"),
    )
    .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xFF;
    std::fs::write(&blob, bytes).unwrap();
    opts.hub_format = HubFormat::CTranslate2;
    let err = resolve_whisper_with("base.en", &opts).unwrap_err();
    // The CT2 error is reported (the safetensors fallback is not cached).
    assert!(
        matches!(err, ModelError::ChecksumMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn sha256sums_in_local_folder_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path());
    let dir = opts.models_dir.join("whisper-small");
    ct2_folder(&dir);
    let digest = earshot_models::sha256_file(&dir.join("model.bin")).unwrap();
    std::fs::write(dir.join("SHA256SUMS"), format!("{digest}  model.bin\n")).unwrap();
    resolve_whisper_with("small", &opts).unwrap();
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!("{}  model.bin\n", "0".repeat(64)),
    )
    .unwrap();
    let err = resolve_whisper_with("small", &opts).unwrap_err();
    assert!(
        matches!(err, ModelError::ChecksumMismatch { .. }),
        "{err:?}"
    );
}
