//! CTranslate2 reader and Whisper importer against fixtures written by the
//! crate's own writer (same layout as faster-whisper's converter).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use earshot_models::ct2::{
    encode_model_bin, import_whisper_file, read_model_bin, write_model_bin, write_tiny_whisper_ct2,
    Ct2WriteVar, TinySpec,
};
use earshot_models::{import_whisper, Ct2DType, GenerationConfig, ModelError};

fn tiny(dir: &Path, dtype: Ct2DType) -> TinySpec {
    let spec = TinySpec {
        d_model: 16,
        n_heads: 2,
        ffn_dim: 64,
        vocab_size: 100,
        n_audio_ctx: 50,
        n_text_ctx: 20,
        n_mels: 8,
        encoder_layers: 2,
        decoder_layers: 3,
        dtype,
    };
    write_tiny_whisper_ct2(dir, spec, 7).unwrap();
    spec
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Independent f16 decoding of a variable straight from the file bytes.
fn raw_f16(file: &earshot_models::Ct2File, name: &str) -> Vec<f32> {
    let var = file.get(name).unwrap();
    assert_eq!(var.dtype, Ct2DType::F16);
    file.bytes(var)
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

#[test]
fn tiny_f16_import_splits_fused_projections() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny(dir.path(), Ct2DType::F16);
    let d = spec.d_model;
    let w = import_whisper(dir.path(), DType::F32, &Device::Cpu).unwrap();

    let c = &w.config;
    assert_eq!(c.d_model, 16);
    assert_eq!(c.num_mel_bins, 8);
    assert_eq!(c.encoder_layers, 2);
    assert_eq!(c.decoder_layers, 3);
    assert_eq!(c.encoder_attention_heads, 2);
    assert_eq!(c.decoder_attention_heads, 2);
    assert_eq!(c.vocab_size, 100);
    assert_eq!(c.max_source_positions, 50);
    assert_eq!(c.max_target_positions, 20);
    // Ids >= vocab are dropped by the fixture writer.
    assert_eq!(c.suppress_tokens, vec![1, 2, 7, 8]);
    assert_eq!(w.generation.suppress_ids, vec![1, 2, 7, 8]);
    assert_eq!(w.generation.alignment_heads, vec![(2, 0)]);

    let file = read_model_bin(&dir.path().join("model.bin")).unwrap();
    let get = |n: &str| w.tensors.get(n).unwrap_or_else(|| panic!("missing {n}"));

    // Self attention: q | k | v rows, k bias dropped.
    for (stack, i) in [("encoder", 1), ("decoder", 2)] {
        let fused_w = raw_f16(
            &file,
            &format!("{stack}/layer_{i}/self_attention/linear_0/weight"),
        );
        let fused_b = raw_f16(
            &file,
            &format!("{stack}/layer_{i}/self_attention/linear_0/bias"),
        );
        let h = format!("model.{stack}.layers.{i}.self_attn");
        for (k, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            let t = get(&format!("{h}.{proj}.weight"));
            assert_eq!(t.dims(), [d, d]);
            assert_eq!(t.dtype(), DType::F32);
            assert_eq!(values(t), fused_w[k * d * d..(k + 1) * d * d], "{h}.{proj}");
        }
        assert!(!w.tensors.contains_key(&format!("{h}.k_proj.bias")));
        assert_eq!(values(get(&format!("{h}.q_proj.bias"))), fused_b[..d]);
        assert_eq!(values(get(&format!("{h}.v_proj.bias"))), fused_b[2 * d..]);
        assert!(fused_b[d..2 * d].iter().all(|&x| x == 0.0));
        assert_eq!(
            values(get(&format!("{h}.out_proj.weight"))),
            raw_f16(
                &file,
                &format!("{stack}/layer_{i}/self_attention/linear_1/weight")
            )
        );
    }

    // Cross attention: q separate, k | v fused, then out.
    let i = 1;
    let h = format!("model.decoder.layers.{i}.encoder_attn");
    let kv = raw_f16(
        &file,
        &format!("decoder/layer_{i}/attention/linear_1/weight"),
    );
    let kv_b = raw_f16(&file, &format!("decoder/layer_{i}/attention/linear_1/bias"));
    assert_eq!(values(get(&format!("{h}.k_proj.weight"))), kv[..d * d]);
    assert_eq!(values(get(&format!("{h}.v_proj.weight"))), kv[d * d..]);
    assert_eq!(values(get(&format!("{h}.v_proj.bias"))), kv_b[d..]);
    assert!(!w.tensors.contains_key(&format!("{h}.k_proj.bias")));
    assert_eq!(
        values(get(&format!("{h}.q_proj.weight"))),
        raw_f16(
            &file,
            &format!("decoder/layer_{i}/attention/linear_0/weight")
        )
    );
    assert_eq!(
        values(get(&format!("{h}.out_proj.bias"))),
        raw_f16(&file, &format!("decoder/layer_{i}/attention/linear_2/bias"))
    );

    // Renames: gamma -> weight, beta -> bias, ffn linear_0/1 -> fc1/fc2.
    assert_eq!(
        values(get("model.decoder.layers.0.encoder_attn_layer_norm.weight")),
        raw_f16(&file, "decoder/layer_0/attention/layer_norm/gamma")
    );
    assert_eq!(
        values(get("model.encoder.layers.0.final_layer_norm.bias")),
        raw_f16(&file, "encoder/layer_0/ffn/layer_norm/beta")
    );
    assert_eq!(get("model.encoder.layers.0.fc1.weight").dims(), [64, d]);
    assert_eq!(get("model.encoder.layers.0.fc2.weight").dims(), [d, 64]);
    assert_eq!(get("model.encoder.conv1.weight").dims(), [d, 8, 3]);
    assert_eq!(get("model.encoder.embed_positions.weight").dims(), [50, d]);
    assert_eq!(get("model.decoder.embed_positions.weight").dims(), [20, d]);
    assert_eq!(
        values(get("model.decoder.embed_tokens.weight")),
        raw_f16(&file, "decoder/embeddings/weight")
    );

    // Exactly the tensors HF's checkpoint has: per encoder layer 15
    // (q,k,v,out weights, q,v,out biases, 2 LN ×2, fc1/fc2 ×2), per decoder
    // layer 15 + 9 (cross attention + its LN), plus conv ×4, positions ×2,
    // embeddings, final LNs ×4.
    let expected = 2 * 15 + 3 * (15 + 9) + 4 + 2 + 1 + 4;
    assert_eq!(w.tensors.len(), expected);
}

#[test]
fn alias_resolves_to_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path(), Ct2DType::F16);
    let file = read_model_bin(&dir.path().join("model.bin")).unwrap();
    assert_eq!(file.version, 6);
    assert_eq!(file.spec, "WhisperSpec");
    assert_eq!(
        file.aliases,
        vec![(
            "decoder/projection/weight".to_string(),
            "decoder/embeddings/weight".to_string()
        )]
    );
    let proj = file.get("decoder/projection/weight").unwrap();
    assert_eq!(proj.name, "decoder/embeddings/weight");
    assert_eq!(proj.shape, vec![100, 16]);
    assert_eq!(
        file.scalar_i64("decoder/alignment_layer").unwrap(),
        Some(-1)
    );
    assert_eq!(file.scalar_i64("encoder/num_heads").unwrap(), Some(2));
    assert_eq!(file.scalar_i64("nope").unwrap(), None);
}

#[test]
fn keep_f16_and_f32_source() {
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path(), Ct2DType::F16);
    let w16 = import_whisper(dir.path(), DType::F16, &Device::Cpu).unwrap();
    let w32 = import_whisper(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let name = "model.decoder.layers.1.self_attn.v_proj.weight";
    assert_eq!(w16.tensors[name].dtype(), DType::F16);
    // f16 -> f32 is exact.
    assert_eq!(values(&w16.tensors[name]), values(&w32.tensors[name]));

    let dir32 = tempfile::tempdir().unwrap();
    tiny(dir32.path(), Ct2DType::F32);
    let w = import_whisper(dir32.path(), DType::F32, &Device::Cpu).unwrap();
    let file = read_model_bin(&dir32.path().join("model.bin")).unwrap();
    let fused = file
        .to_f32_vec("decoder/layer_1/self_attention/linear_0/weight")
        .unwrap();
    assert_eq!(values(&w.tensors[name]), fused[2 * 16 * 16..]);
}

#[test]
fn imported_tensors_run_in_candle_whisper() {
    use candle_transformers::models::whisper::model::Whisper;
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path(), Ct2DType::F16);
    let dev = Device::Cpu;
    let w = import_whisper(dir.path(), DType::F32, &dev).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(w.tensors, DType::F32, &dev);
    let mut model = Whisper::load(&vb, w.config.clone()).unwrap();
    let mel = Tensor::randn(0f32, 1.0, (1, 8, 100), &dev).unwrap();
    let audio = model.encoder.forward(&mel, true).unwrap();
    assert_eq!(audio.dims(), [1, 50, 16]);
    let tokens = Tensor::new(&[[1u32, 5, 9]], &dev).unwrap();
    let hidden = model.decoder.forward(&tokens, &audio, true).unwrap();
    let logits = model.decoder.final_linear(&hidden).unwrap();
    assert_eq!(logits.dims(), [1, 3, 100]);
    assert!(values(&logits).iter().all(|x| x.is_finite()));
}

#[test]
fn int8_weights_are_dequantized() {
    // q = round(w * scale[row]); w ≈ q / scale[row].
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let q: Vec<i8> = vec![10, -20, 127, 0, 5, -5];
    let scale = [2.0f32, 0.5];
    let vars = vec![
        Ct2WriteVar {
            name: "w/weight".into(),
            shape: vec![2, 3],
            dtype: Ct2DType::I8,
            data: q.iter().map(|&v| v as u8).collect(),
        },
        Ct2WriteVar::f32("w/weight_scale", &[2], &scale),
        Ct2WriteVar {
            name: "n/weight".into(),
            shape: vec![1],
            dtype: Ct2DType::I8,
            data: vec![1],
        },
    ];
    write_model_bin(
        &path,
        "TestSpec",
        1,
        &vars,
        &[("a/weight".into(), "w/weight".into())],
    )
    .unwrap();
    let f = read_model_bin(&path).unwrap();
    assert_eq!(
        f.to_f32_vec("w/weight").unwrap(),
        vec![5.0, -10.0, 63.5, 0.0, 10.0, -10.0]
    );
    // Through the alias, with the implicit `_scale` alias.
    assert_eq!(f.to_f32_vec("a/weight").unwrap()[0], 5.0);
    let t = f.tensor("w/weight", DType::F32, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [2, 3]);
    let err = f.to_f32_vec("n/weight").unwrap_err();
    assert!(matches!(err, ModelError::Quantization { .. }), "{err}");
}

// --- malformed files ------------------------------------------------------

fn small_file() -> Vec<u8> {
    encode_model_bin(
        "WhisperSpec",
        3,
        &[
            Ct2WriteVar::f32("a", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            Ct2WriteVar::i16_scalar("encoder/num_heads", 2),
        ],
        &[("b".into(), "a".into())],
    )
}

fn read_bytes(bytes: &[u8]) -> Result<earshot_models::Ct2File, ModelError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.bin");
    std::fs::write(&p, bytes).unwrap();
    read_model_bin(&p)
}

#[test]
fn well_formed_small_file_reads() {
    let f = read_bytes(&small_file()).unwrap();
    assert_eq!(f.vars.len(), 2);
    assert_eq!(f.revision, 3);
    assert_eq!(f.to_f32_vec("b").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn every_truncation_is_a_typed_error() {
    let full = small_file();
    for len in 0..full.len() {
        match read_bytes(&full[..len]) {
            Err(ModelError::Truncated { .. }) => {}
            other => panic!("length {len}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn bad_version_is_rejected() {
    for v in [0u32, 7, 0x4c45_4946] {
        let mut b = small_file();
        b[..4].copy_from_slice(&v.to_le_bytes());
        let err = read_bytes(&b).unwrap_err();
        assert!(
            matches!(err, ModelError::UnsupportedVersion { version, .. } if version == v),
            "{err:?}"
        );
    }
    // A text file is not a model.
    let err = read_bytes(b"{\"not\": \"a model\"}").unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedVersion { .. }),
        "{err:?}"
    );
}

/// Offset of the first variable's dtype byte in `small_file()`.
fn first_dtype_offset() -> usize {
    // version(4) + spec string(2 + 12) + revision(4) + count(4)
    // + name "a"(2 + 2) + rank(1) + 2 dims(8)
    4 + 2 + "WhisperSpec".len() + 1 + 4 + 4 + 2 + 2 + 1 + 8
}

#[test]
fn variable_claiming_4gb_is_rejected_without_allocating() {
    // Shape [1, 0x3FFF_FFFF] f32 and byte count agree (4 GiB - 4 bytes,
    // the most a u32 count can say) but the file is tiny.
    let mut b = small_file();
    let o = first_dtype_offset();
    b[o - 8..o - 4].copy_from_slice(&1u32.to_le_bytes());
    b[o - 4..o].copy_from_slice(&0x3FFF_FFFFu32.to_le_bytes());
    b[o + 1..o + 5].copy_from_slice(&0xFFFF_FFFCu32.to_le_bytes());
    let err = read_bytes(&b).unwrap_err();
    match err {
        ModelError::Truncated { needed, .. } => assert_eq!(needed, 0xFFFF_FFFC),
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Byte count disagreeing with the shape is caught too.
    let mut b = small_file();
    b[o + 1..o + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_bytes(&b).unwrap_err();
    assert!(matches!(err, ModelError::InvalidCt2 { .. }), "{err:?}");
    // And an absurd variable count.
    let mut b = small_file();
    let count_at = 4 + 2 + 12 + 4;
    b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_bytes(&b).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Truncated { .. } | ModelError::InvalidCt2 { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_dtype_is_rejected() {
    let mut b = small_file();
    b[first_dtype_offset()] = 42;
    let err = read_bytes(&b).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnknownDType { code: 42, name, .. } if name == "a"),
        "{err:?}"
    );
}

#[test]
fn wrong_spec_and_missing_tensors() {
    let err = import_whisper_file(
        &read_bytes(&encode_model_bin("TransformerSpec", 1, &[], &[])).unwrap(),
        GenerationConfig::default(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::WrongSpec { .. }), "{err:?}");

    let err = import_whisper_file(
        &read_bytes(&small_file()).unwrap(),
        GenerationConfig::default(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "encoder/conv1/weight"),
        "{err:?}"
    );

    // A real-looking model with one fused tensor of the wrong shape.
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path(), Ct2DType::F32);
    let f = read_model_bin(&dir.path().join("model.bin")).unwrap();
    let mut vars: Vec<Ct2WriteVar> = f
        .vars
        .iter()
        .map(|v| Ct2WriteVar {
            name: v.name.clone(),
            shape: v.shape.clone(),
            dtype: v.dtype,
            data: f.bytes(v).to_vec(),
        })
        .collect();
    let bad = vars
        .iter_mut()
        .find(|v| v.name == "encoder/layer_1/self_attention/linear_0/weight")
        .unwrap();
    bad.shape = vec![32, 24];
    write_model_bin(
        &dir.path().join("model.bin"),
        "WhisperSpec",
        3,
        &vars,
        &f.aliases,
    )
    .unwrap();
    let err = import_whisper(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, .. } if name.contains("layer_1/self_attention/linear_0")),
        "{err:?}"
    );
}
