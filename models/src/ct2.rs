//! CTranslate2 `model.bin` reader and the Whisper importer.
//!
//! Why this exists: the faster-whisper ecosystem publishes (and many users
//! already have on disk) Whisper weights in CTranslate2's format, often as
//! float16, which is half the download of the float32 `model.safetensors` in
//! the `openai/*` repos. Reading them directly lets earshot reuse those files
//! with candle instead of requiring a second copy.
//!
//! # Format (little-endian)
//!
//! ```text
//! u32 binary_version                  (1..=6; we see 6)
//! if version >= 2: string spec_name, u32 spec_revision
//! u32 variable_count
//! per variable:
//!     string name
//!     u8 rank, rank × u32 shape
//!     version >= 4: u8 dtype code, u32 byte count
//!     version <  4: u8 item size,  u32 element count
//!     raw bytes
//! if version >= 3: u32 alias_count, alias_count × (string alias, string target)
//! string = u16 length (including a trailing NUL) + bytes
//! ```
//!
//! Every length is checked against the file size before it is used, so a
//! truncated or hostile file yields a [`ModelError`] and never a panic or a
//! large allocation. The file is memory-mapped: variables are byte ranges
//! into the mapping, so a 1.6 GB model is never read into memory twice.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::whisper;
use memmap2::Mmap;

use crate::whisper::{GenerationConfig, ImportedWhisper};
use crate::ModelError;

/// Newest `model.bin` binary version this reader understands.
pub const MAX_BINARY_VERSION: u32 = 6;

/// Spec name CTranslate2 gives Whisper models.
pub const WHISPER_SPEC: &str = "WhisperSpec";

/// int16 models written before scales were saved used this global scale
/// (CTranslate2's `Quantize::global_int16_scale`).
const LEGACY_INT16_SCALE: f32 = 1000.0;

/// Element type of a CTranslate2 variable (the on-disk codes are CTranslate2's
/// `DataType` enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ct2DType {
    /// Code 0.
    F32,
    /// Code 1; used for quantized weights (with a `<name>_scale` variable) and flags.
    I8,
    /// Code 2; used for int16-quantized weights and small integer scalars.
    I16,
    /// Code 3.
    I32,
    /// Code 4.
    F16,
    /// Code 5.
    BF16,
}

impl Ct2DType {
    /// Decodes an on-disk dtype code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 => 3,
            Self::F16 => 4,
            Self::BF16 => 5,
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    /// The candle dtype holding the same bits, for the float types.
    fn candle_float(self) -> Option<DType> {
        match self {
            Self::F32 => Some(DType::F32),
            Self::F16 => Some(DType::F16),
            Self::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// Pre-v4 files store an item size instead of a dtype; this is
    /// CTranslate2's own (lossy) interpretation of it.
    fn from_legacy_item_size(size: u8) -> Option<Self> {
        match size {
            4 => Some(Self::F32),
            2 => Some(Self::I16),
            1 => Some(Self::I8),
            _ => None,
        }
    }
}

/// One variable of a `model.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Var {
    /// Slash-separated name, e.g. `encoder/layer_0/self_attention/linear_0/weight`.
    pub name: String,
    /// Dimensions, outermost first; empty for scalars.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: Ct2DType,
    /// Byte range of the raw data inside the file (see [`Ct2File::bytes`]).
    pub data: Range<usize>,
}

impl Ct2Var {
    /// Number of elements (1 for scalars).
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed, memory-mapped `model.bin`.
#[derive(Debug)]
pub struct Ct2File {
    /// Where it was read from (used in error messages).
    pub path: PathBuf,
    /// Binary format version.
    pub version: u32,
    /// Spec name (e.g. `WhisperSpec`); empty for version 1 files.
    pub spec: String,
    /// Spec revision.
    pub revision: u32,
    /// Variables in file order.
    pub vars: Vec<Ct2Var>,
    /// `(alias, target)` pairs, e.g. `decoder/projection/weight -> decoder/embeddings/weight`.
    pub aliases: Vec<(String, String)>,
    index: HashMap<String, usize>,
    alias_map: HashMap<String, String>,
    mmap: Mmap,
}

/// Reads and validates a CTranslate2 `model.bin`.
///
/// The whole structure is validated up front (every length against the file
/// size, every byte count against its shape), so later accessors cannot hit
/// an out-of-range slice.
pub fn read_model_bin(path: &Path) -> Result<Ct2File, ModelError> {
    let file = File::open(path).map_err(ModelError::io(path))?;
    let len = file.metadata().map_err(ModelError::io(path))?.len();
    if len < 4 {
        return Err(ModelError::Truncated {
            path: path.to_path_buf(),
            what: "binary version".into(),
            offset: 0,
            needed: 4,
            available: len,
        });
    }
    // SAFETY: the mapping is read-only and we assume, like every mmap-based
    // weight loader (candle, safetensors), that nobody truncates or rewrites
    // the model file while it is loaded. All slicing is bounds-checked
    // against the mapping's length.
    let mmap = unsafe { Mmap::map(&file) }.map_err(ModelError::io(path))?;
    let parsed = parse(&mmap, path)?;
    tracing::debug!(
        path = %path.display(),
        version = parsed.version,
        spec = %parsed.spec,
        revision = parsed.revision,
        vars = parsed.vars.len(),
        aliases = parsed.aliases.len(),
        "read CTranslate2 model"
    );
    let index = parsed
        .vars
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    let alias_map = parsed.aliases.iter().cloned().collect();
    Ok(Ct2File {
        path: path.to_path_buf(),
        version: parsed.version,
        spec: parsed.spec,
        revision: parsed.revision,
        vars: parsed.vars,
        aliases: parsed.aliases,
        index,
        alias_map,
        mmap,
    })
}

struct Parsed {
    version: u32,
    spec: String,
    revision: u32,
    vars: Vec<Ct2Var>,
    aliases: Vec<(String, String)>,
}

/// Bounds-checked little-endian cursor over the mapped file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], ModelError> {
        if n > self.remaining() {
            return Err(ModelError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, ModelError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, ModelError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn invalid(&self, offset: usize, reason: String) -> ModelError {
        ModelError::InvalidCt2 {
            path: self.path.to_path_buf(),
            offset: offset as u64,
            reason,
        }
    }

    /// A u16-length-prefixed, NUL-terminated string. CTranslate2 builds a
    /// C string from the bytes, so anything after the first NUL is ignored
    /// here too.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, ModelError> {
        let start = self.pos;
        let len = self.u16(|| format!("length of {}", what()))? as usize;
        let bytes = self.take(len, what)?;
        let bytes = match bytes.iter().position(|&b| b == 0) {
            Some(nul) => &bytes[..nul],
            None => bytes,
        };
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| self.invalid(start, format!("{} is not UTF-8: {e}", what())))
    }
}

fn parse(buf: &[u8], path: &Path) -> Result<Parsed, ModelError> {
    let mut c = Cursor { buf, pos: 0, path };
    let version = c.u32(|| "binary version".into())?;
    if version == 0 || version > MAX_BINARY_VERSION {
        return Err(ModelError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            max: MAX_BINARY_VERSION,
        });
    }
    let (spec, revision) = if version >= 2 {
        let spec = c.string(&|| "spec name".into())?;
        let revision = c.u32(|| "spec revision".into())?;
        (spec, revision)
    } else {
        (String::new(), 1)
    };

    let count = c.u32(|| "variable count".into())? as usize;
    // Each variable needs at least 2 (name length) + 1 (rank) + 1 (dtype) +
    // 4 (byte count) bytes, so a count beyond remaining/8 is a lie: cap the
    // reservation instead of trusting it.
    let mut vars = Vec::with_capacity(count.min(c.remaining() / 8));
    for i in 0..count {
        let name = c.string(&|| format!("name of variable #{i}"))?;
        let rank = c.u8(|| format!("rank of variable {name:?}"))? as usize;
        let mut shape = Vec::with_capacity(rank);
        for d in 0..rank {
            shape.push(c.u32(|| format!("dimension {d} of variable {name:?}"))? as usize);
        }
        let header_pos = c.pos;
        let (dtype, num_bytes) = if version >= 4 {
            let code = c.u8(|| format!("dtype of variable {name:?}"))?;
            let dtype = Ct2DType::from_code(code).ok_or_else(|| ModelError::UnknownDType {
                path: path.to_path_buf(),
                name: name.clone(),
                code,
            })?;
            let n = c.u32(|| format!("byte count of variable {name:?}"))? as u64;
            (dtype, n)
        } else {
            let size = c.u8(|| format!("item size of variable {name:?}"))?;
            let dtype = Ct2DType::from_legacy_item_size(size).ok_or_else(|| {
                c.invalid(
                    header_pos,
                    format!("variable {name:?} has item size {size}"),
                )
            })?;
            let n = c.u32(|| format!("element count of variable {name:?}"))? as u64;
            (dtype, n * size as u64)
        };
        let expected = shape
            .iter()
            .try_fold(dtype.size_in_bytes() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            });
        if expected != Some(num_bytes) {
            return Err(c.invalid(
                header_pos,
                format!(
                    "variable {name:?} with shape {shape:?} and dtype {dtype:?} \
                     claims {num_bytes} bytes"
                ),
            ));
        }
        if num_bytes > c.remaining() as u64 {
            return Err(ModelError::Truncated {
                path: path.to_path_buf(),
                what: format!("data of variable {name:?}"),
                offset: c.pos as u64,
                needed: num_bytes,
                available: c.remaining() as u64,
            });
        }
        let start = c.pos;
        c.take(num_bytes as usize, String::new)?;
        vars.push(Ct2Var {
            name,
            shape,
            dtype,
            data: start..c.pos,
        });
    }

    let mut aliases = Vec::new();
    if version >= 3 {
        let n = c.u32(|| "alias count".into())? as usize;
        aliases.reserve(n.min(c.remaining() / 4));
        for i in 0..n {
            let alias = c.string(&|| format!("alias #{i}"))?;
            let target = c.string(&|| format!("target of alias {alias:?}"))?;
            aliases.push((alias, target));
        }
    }
    if c.remaining() != 0 {
        tracing::warn!(
            path = %path.display(),
            trailing = c.remaining(),
            "CTranslate2 model has trailing bytes after the alias table; ignoring them"
        );
    }
    Ok(Parsed {
        version,
        spec,
        revision,
        vars,
        aliases,
    })
}

/// Data of one variable, ready to be sliced by rows and turned into tensors.
enum VarData<'a> {
    /// Float bits straight from the mapping.
    Raw { bytes: &'a [u8], dtype: DType },
    /// Dequantized values.
    F32(Vec<f32>),
}

impl Ct2File {
    /// Looks a variable up by name, following aliases (and CTranslate2's
    /// implicit `<alias>_scale -> <target>_scale` aliases).
    pub fn get(&self, name: &str) -> Option<&Ct2Var> {
        let mut name = name.to_owned();
        // Aliases could in principle chain; bound the walk so a cyclic table
        // cannot loop forever.
        for _ in 0..8 {
            if let Some(&i) = self.index.get(&name) {
                return Some(&self.vars[i]);
            }
            if let Some(target) = self.alias_map.get(&name) {
                name = target.clone();
            } else if let Some(base) = name.strip_suffix("_scale") {
                name = format!("{}_scale", self.alias_map.get(base)?);
            } else {
                return None;
            }
        }
        None
    }

    /// Like [`Ct2File::get`] but a missing variable is an error.
    pub fn require(&self, name: &str) -> Result<&Ct2Var, ModelError> {
        self.get(name).ok_or_else(|| ModelError::MissingTensor {
            source_file: self.path.clone(),
            name: name.to_owned(),
        })
    }

    /// Raw little-endian bytes of a variable.
    pub fn bytes(&self, var: &Ct2Var) -> &[u8] {
        &self.mmap[var.data.clone()]
    }

    /// Reads an integer (or integral float) scalar such as `encoder/num_heads`.
    /// `Ok(None)` when the variable is absent.
    pub fn scalar_i64(&self, name: &str) -> Result<Option<i64>, ModelError> {
        let Some(var) = self.get(name) else {
            return Ok(None);
        };
        if var.elem_count() != 1 {
            return Err(ModelError::ShapeMismatch {
                source_file: self.path.clone(),
                name: name.to_owned(),
                expected: "a scalar".into(),
                actual: var.shape.clone(),
            });
        }
        let b = self.bytes(var);
        let v = match var.dtype {
            Ct2DType::I8 => b[0] as i8 as i64,
            Ct2DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            Ct2DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Ct2DType::F32 | Ct2DType::F16 | Ct2DType::BF16 => decode_floats(b, var.dtype)[0] as i64,
        };
        Ok(Some(v))
    }

    /// Decodes a variable to `f32`, dequantizing int8/int16 weights with
    /// their `<name>_scale`. Handy for tests and for small tensors.
    pub fn to_f32_vec(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        Ok(match self.data(name)?.0 {
            VarData::Raw { bytes, dtype } => decode_floats(bytes, ct2_of(dtype)),
            VarData::F32(v) => v,
        })
    }

    /// Loads a whole variable as a tensor of `dtype` on `device`.
    pub fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, ModelError> {
        let (data, var) = self.data(name)?;
        make_tensor(&data, 0..var.elem_count(), &var.shape, dtype, device)
    }

    /// The variable's data as floats: borrowed float bits, or dequantized
    /// values for integer weights.
    fn data(&self, name: &str) -> Result<(VarData<'_>, &Ct2Var), ModelError> {
        let var = self.require(name)?;
        let bytes = self.bytes(var);
        if let Some(dtype) = var.dtype.candle_float() {
            return Ok((VarData::Raw { bytes, dtype }, var));
        }
        let quant_err = |reason: String| ModelError::Quantization {
            path: self.path.clone(),
            name: name.to_owned(),
            reason,
        };
        let q: Vec<f32> = match var.dtype {
            Ct2DType::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
            Ct2DType::I16 => bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            _ => return Err(quant_err(format!("{:?} is not a weight type", var.dtype))),
        };
        let scale_name = format!("{name}_scale");
        let scales = match self.get(&scale_name) {
            Some(s) => match s.dtype {
                Ct2DType::F32 | Ct2DType::F16 | Ct2DType::BF16 => {
                    decode_floats(self.bytes(s), s.dtype)
                }
                other => return Err(quant_err(format!("{scale_name} has dtype {other:?}"))),
            },
            None if var.dtype == Ct2DType::I16 => vec![LEGACY_INT16_SCALE],
            None => return Err(quant_err(format!("{scale_name} is missing"))),
        };
        let rows = var.shape.first().copied().unwrap_or(1);
        let per_row = q.len().checked_div(rows).unwrap_or(0);
        let values = if scales.len() == 1 {
            let s = scales[0];
            q.iter().map(|&x| x / s).collect()
        } else if scales.len() == rows {
            // CTranslate2 quantizes int8 per output row: q = round(w * s[row]).
            q.chunks(per_row.max(1))
                .zip(&scales)
                .flat_map(|(row, &s)| row.iter().map(move |&x| x / s))
                .collect()
        } else {
            return Err(quant_err(format!(
                "{} scales for {} rows",
                scales.len(),
                rows
            )));
        };
        tracing::debug!(name, "dequantized {:?} weight", var.dtype);
        Ok((VarData::F32(values), var))
    }
}

fn ct2_of(dtype: DType) -> Ct2DType {
    match dtype {
        DType::F16 => Ct2DType::F16,
        DType::BF16 => Ct2DType::BF16,
        _ => Ct2DType::F32,
    }
}

/// Decodes little-endian float bits of a float dtype to f32.
fn decode_floats(bytes: &[u8], dtype: Ct2DType) -> Vec<f32> {
    match dtype {
        Ct2DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Ct2DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Builds a tensor from the element range `elems` of `data`.
///
/// Row splits of a row-major tensor are contiguous element ranges, so fused
/// q/k/v weights are split by slicing bytes, without an intermediate tensor.
fn make_tensor(
    data: &VarData<'_>,
    elems: Range<usize>,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor, ModelError> {
    let t = match data {
        VarData::Raw { bytes, dtype: src } => {
            let size = src.size_in_bytes();
            let bytes = &bytes[elems.start * size..elems.end * size];
            Tensor::from_raw_buffer(bytes, *src, shape, device)?
        }
        VarData::F32(v) => Tensor::from_slice(&v[elems], shape, device)?,
    };
    Ok(t.to_dtype(dtype)?)
}

// ---------------------------------------------------------------------------
// Whisper import
// ---------------------------------------------------------------------------

/// Imports a faster-whisper / CTranslate2 Whisper folder (`model.bin` plus an
/// optional `config.json`) into candle tensors named like Hugging Face's
/// `WhisperForConditionalGeneration`, which is what
/// `candle_transformers::models::whisper::model::Whisper::load` expects.
///
/// Fused CTranslate2 projections are split back along dim 0 (q|k|v for self
/// attention, k|v for cross attention); float weights are converted to
/// `dtype` (pass `DType::F16` to keep float16 weights as they are).
pub fn import_whisper(
    folder: &Path,
    dtype: DType,
    device: &Device,
) -> Result<ImportedWhisper, ModelError> {
    let file = read_model_bin(&folder.join("model.bin"))?;
    let cfg = folder.join("config.json");
    let generation = if cfg.is_file() {
        GenerationConfig::from_ct2_config(&cfg)?
    } else {
        tracing::warn!(
            folder = %folder.display(),
            "CTranslate2 Whisper folder has no config.json; no suppress tokens will be applied"
        );
        GenerationConfig::default()
    };
    import_whisper_file(&file, generation, dtype, device)
}

/// [`import_whisper`] for an already parsed `model.bin`.
pub fn import_whisper_file(
    file: &Ct2File,
    generation: GenerationConfig,
    dtype: DType,
    device: &Device,
) -> Result<ImportedWhisper, ModelError> {
    if file.version >= 2 && file.spec != WHISPER_SPEC {
        return Err(ModelError::WrongSpec {
            path: file.path.clone(),
            expected: WHISPER_SPEC,
            found: file.spec.clone(),
        });
    }
    let config = whisper_config(file, &generation)?;
    let mut imp = Importer {
        file,
        dtype,
        device,
        d: config.d_model,
        ffn: None,
        out: HashMap::new(),
    };
    let d = config.d_model;

    // Encoder.
    imp.whole(
        "encoder/conv1/weight",
        "model.encoder.conv1.weight",
        &[d, config.num_mel_bins, 3],
    )?;
    imp.whole("encoder/conv1/bias", "model.encoder.conv1.bias", &[d])?;
    imp.whole(
        "encoder/conv2/weight",
        "model.encoder.conv2.weight",
        &[d, d, 3],
    )?;
    imp.whole("encoder/conv2/bias", "model.encoder.conv2.bias", &[d])?;
    imp.whole(
        "encoder/position_encodings/encodings",
        "model.encoder.embed_positions.weight",
        &[config.max_source_positions, d],
    )?;
    for i in 0..config.encoder_layers {
        let c = format!("encoder/layer_{i}");
        let h = format!("model.encoder.layers.{i}");
        imp.self_attention(&c, &h)?;
        imp.ffn(&c, &h)?;
    }
    imp.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")?;

    // Decoder.
    imp.whole(
        "decoder/embeddings/weight",
        "model.decoder.embed_tokens.weight",
        &[config.vocab_size, d],
    )?;
    imp.whole(
        "decoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight",
        &[config.max_target_positions, d],
    )?;
    for i in 0..config.decoder_layers {
        let c = format!("decoder/layer_{i}");
        let h = format!("model.decoder.layers.{i}");
        imp.self_attention(&c, &h)?;
        imp.layer_norm(
            &format!("{c}/attention/layer_norm"),
            &format!("{h}.encoder_attn_layer_norm"),
        )?;
        imp.linear(
            &format!("{c}/attention/linear_0"),
            &format!("{h}.encoder_attn.q_proj"),
            [d, d],
        )?;
        imp.fused_kv(
            &format!("{c}/attention/linear_1"),
            &format!("{h}.encoder_attn"),
        )?;
        imp.linear(
            &format!("{c}/attention/linear_2"),
            &format!("{h}.encoder_attn.out_proj"),
            [d, d],
        )?;
        imp.ffn(&c, &h)?;
    }
    imp.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")?;

    // Whisper ties the output projection to the token embeddings and candle
    // relies on that; an untied projection would silently be ignored.
    let tied = file
        .alias_map
        .get("decoder/projection/weight")
        .is_some_and(|t| t == "decoder/embeddings/weight");
    if !tied && file.index.contains_key("decoder/projection/weight") {
        tracing::warn!(
            path = %file.path.display(),
            "decoder/projection/weight is not tied to the embeddings; candle's Whisper ignores it"
        );
    }

    tracing::info!(
        path = %file.path.display(),
        tensors = imp.out.len(),
        d_model = d,
        encoder_layers = config.encoder_layers,
        decoder_layers = config.decoder_layers,
        vocab = config.vocab_size,
        ?dtype,
        "imported CTranslate2 Whisper"
    );
    let tensors = imp.out;
    Ok(ImportedWhisper {
        config,
        tensors,
        generation,
    })
}

/// Derives candle's Whisper config from tensor shapes and the `num_heads`
/// scalars, so that no Hugging Face `config.json` is needed.
fn whisper_config(
    file: &Ct2File,
    generation: &GenerationConfig,
) -> Result<whisper::Config, ModelError> {
    let shape_err = |name: &str, expected: String, actual: &[usize]| ModelError::ShapeMismatch {
        source_file: file.path.clone(),
        name: name.to_owned(),
        expected,
        actual: actual.to_vec(),
    };
    let conv1 = file.require("encoder/conv1/weight")?;
    let [d_model, num_mel_bins, _k] = conv1.shape[..] else {
        return Err(shape_err(
            &conv1.name,
            "[d_model, n_mels, 3]".into(),
            &conv1.shape,
        ));
    };
    let rows_of = |name: &str| -> Result<usize, ModelError> {
        let v = file.require(name)?;
        match v.shape[..] {
            [rows, cols] if cols == d_model => Ok(rows),
            _ => Err(shape_err(name, format!("[_, {d_model}]"), &v.shape)),
        }
    };
    let vocab_size = rows_of("decoder/embeddings/weight")?;
    let max_source_positions = rows_of("encoder/position_encodings/encodings")?;
    let max_target_positions = rows_of("decoder/position_encodings/encodings")?;
    let count_layers = |stack: &str| -> Result<usize, ModelError> {
        let n = (0..)
            .take_while(|i| {
                file.get(&format!("{stack}/layer_{i}/self_attention/linear_0/weight"))
                    .is_some()
            })
            .count();
        if n == 0 {
            return Err(ModelError::MissingTensor {
                source_file: file.path.clone(),
                name: format!("{stack}/layer_0/self_attention/linear_0/weight"),
            });
        }
        Ok(n)
    };
    let encoder_layers = count_layers("encoder")?;
    let decoder_layers = count_layers("decoder")?;
    let heads = |stack: &str| -> Result<usize, ModelError> {
        let name = format!("{stack}/num_heads");
        let heads = match file.scalar_i64(&name)? {
            Some(h) => h,
            None => {
                // Every Whisper size uses 64-dimensional heads.
                tracing::warn!(%name, "missing; assuming 64-dimensional heads");
                (d_model / 64) as i64
            }
        };
        if heads <= 0 || d_model % heads as usize != 0 {
            return Err(ModelError::InvalidCt2 {
                path: file.path.clone(),
                offset: 0,
                reason: format!("{name} = {heads} does not divide d_model {d_model}"),
            });
        }
        Ok(heads as usize)
    };
    Ok(whisper::Config {
        num_mel_bins,
        max_source_positions,
        d_model,
        encoder_attention_heads: heads("encoder")?,
        encoder_layers,
        vocab_size,
        max_target_positions,
        decoder_attention_heads: heads("decoder")?,
        decoder_layers,
        suppress_tokens: generation.suppress_ids.clone(),
    })
}

struct Importer<'a> {
    file: &'a Ct2File,
    dtype: DType,
    device: &'a Device,
    d: usize,
    /// FFN width, learned from the first layer and checked on the others.
    ffn: Option<usize>,
    out: HashMap<String, Tensor>,
}

impl Importer<'_> {
    fn check_shape(&self, var: &Ct2Var, expected: &[usize]) -> Result<(), ModelError> {
        if var.shape != expected {
            return Err(ModelError::ShapeMismatch {
                source_file: self.file.path.clone(),
                name: var.name.clone(),
                expected: format!("{expected:?}"),
                actual: var.shape.clone(),
            });
        }
        Ok(())
    }

    fn whole(&mut self, ct2: &str, hf: &str, expected: &[usize]) -> Result<(), ModelError> {
        self.split(ct2, &[Some(hf)], expected)
    }

    /// Splits `ct2` into `parts.len()` equal row blocks of shape
    /// `part_shape`; `None` entries are dropped.
    fn split(
        &mut self,
        ct2: &str,
        parts: &[Option<&str>],
        part_shape: &[usize],
    ) -> Result<(), ModelError> {
        let (data, var) = self.file.data(ct2)?;
        let mut full = part_shape.to_vec();
        if let Some(rows) = full.first_mut() {
            *rows *= parts.len();
        }
        self.check_shape(var, &full)?;
        let n: usize = part_shape.iter().product();
        for (i, hf) in parts.iter().enumerate() {
            if let Some(hf) = hf {
                let t = make_tensor(
                    &data,
                    i * n..(i + 1) * n,
                    part_shape,
                    self.dtype,
                    self.device,
                )?;
                self.out.insert((*hf).to_owned(), t);
            }
        }
        Ok(())
    }

    fn layer_norm(&mut self, ct2: &str, hf: &str) -> Result<(), ModelError> {
        let d = self.d;
        self.whole(&format!("{ct2}/gamma"), &format!("{hf}.weight"), &[d])?;
        self.whole(&format!("{ct2}/beta"), &format!("{hf}.bias"), &[d])
    }

    fn linear(&mut self, ct2: &str, hf: &str, shape: [usize; 2]) -> Result<(), ModelError> {
        self.whole(&format!("{ct2}/weight"), &format!("{hf}.weight"), &shape)?;
        self.whole(&format!("{ct2}/bias"), &format!("{hf}.bias"), &shape[..1])
    }

    /// Self attention: `linear_0` is q|k|v stacked along dim 0.
    ///
    /// The k bias is dropped: Whisper's key projection has no bias (the
    /// converter fills zeros), and a key bias would add the same amount to
    /// every score of a query, which softmax cancels anyway.
    fn fused_qkv(&mut self, ct2: &str, hf: &str) -> Result<(), ModelError> {
        let d = self.d;
        let (q, k, v) = (
            format!("{hf}.q_proj"),
            format!("{hf}.k_proj"),
            format!("{hf}.v_proj"),
        );
        self.split(
            &format!("{ct2}/weight"),
            &[
                Some(&format!("{q}.weight")),
                Some(&format!("{k}.weight")),
                Some(&format!("{v}.weight")),
            ],
            &[d, d],
        )?;
        self.split(
            &format!("{ct2}/bias"),
            &[Some(&format!("{q}.bias")), None, Some(&format!("{v}.bias"))],
            &[d],
        )
    }

    /// Cross attention: `linear_1` is k|v stacked along dim 0 (the query has
    /// its own `linear_0` because it reads the decoder stream, not the audio).
    fn fused_kv(&mut self, ct2: &str, hf: &str) -> Result<(), ModelError> {
        let d = self.d;
        let (k, v) = (format!("{hf}.k_proj"), format!("{hf}.v_proj"));
        self.split(
            &format!("{ct2}/weight"),
            &[Some(&format!("{k}.weight")), Some(&format!("{v}.weight"))],
            &[d, d],
        )?;
        self.split(
            &format!("{ct2}/bias"),
            &[None, Some(&format!("{v}.bias"))],
            &[d],
        )
    }

    /// Pre-norm self-attention: layer norm, fused q|k|v, output projection.
    fn self_attention(&mut self, c: &str, h: &str) -> Result<(), ModelError> {
        let d = self.d;
        self.layer_norm(
            &format!("{c}/self_attention/layer_norm"),
            &format!("{h}.self_attn_layer_norm"),
        )?;
        self.fused_qkv(
            &format!("{c}/self_attention/linear_0"),
            &format!("{h}.self_attn"),
        )?;
        self.linear(
            &format!("{c}/self_attention/linear_1"),
            &format!("{h}.self_attn.out_proj"),
            [d, d],
        )
    }

    fn ffn(&mut self, ct2_layer: &str, hf_layer: &str) -> Result<(), ModelError> {
        let d = self.d;
        let fc1 = format!("{ct2_layer}/ffn/linear_0/weight");
        let ffn = match self.ffn {
            Some(f) => f,
            None => {
                let var = self.file.require(&fc1)?;
                let f = var.shape.first().copied().unwrap_or(0);
                if f != 4 * d {
                    tracing::warn!(
                        ffn = f,
                        d_model = d,
                        "FFN width is not 4 × d_model; candle's Whisper will refuse these weights"
                    );
                }
                self.ffn = Some(f);
                f
            }
        };
        self.layer_norm(
            &format!("{ct2_layer}/ffn/layer_norm"),
            &format!("{hf_layer}.final_layer_norm"),
        )?;
        self.linear(
            &format!("{ct2_layer}/ffn/linear_0"),
            &format!("{hf_layer}.fc1"),
            [ffn, d],
        )?;
        self.linear(
            &format!("{ct2_layer}/ffn/linear_1"),
            &format!("{hf_layer}.fc2"),
            [d, ffn],
        )
    }
}

// ---------------------------------------------------------------------------
// Writer (tests and fixtures)
// ---------------------------------------------------------------------------

/// A variable to write with [`write_model_bin`].
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2WriteVar {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Ct2DType,
    pub data: Vec<u8>,
}

#[doc(hidden)]
impl Ct2WriteVar {
    /// float32 variable from values.
    pub fn f32(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: Ct2DType::F32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// float16 variable from values (rounded to f16).
    pub fn f16(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: Ct2DType::F16,
            data: values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }

    /// Float variable of the given float dtype (F32 or F16; anything else is written as F32).
    pub fn float(name: &str, shape: &[usize], values: &[f32], dtype: Ct2DType) -> Self {
        match dtype {
            Ct2DType::F16 => Self::f16(name, shape, values),
            _ => Self::f32(name, shape, values),
        }
    }

    /// int8 scalar (CTranslate2 flags).
    pub fn i8_scalar(name: &str, v: i8) -> Self {
        Self {
            name: name.into(),
            shape: vec![],
            dtype: Ct2DType::I8,
            data: v.to_le_bytes().to_vec(),
        }
    }

    /// int16 scalar (e.g. `num_heads`).
    pub fn i16_scalar(name: &str, v: i16) -> Self {
        Self {
            name: name.into(),
            shape: vec![],
            dtype: Ct2DType::I16,
            data: v.to_le_bytes().to_vec(),
        }
    }
}

/// Serializes a binary-version-6 `model.bin` image.
#[doc(hidden)]
pub fn encode_model_bin(
    spec: &str,
    revision: u32,
    vars: &[Ct2WriteVar],
    aliases: &[(String, String)],
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        let len = u16::try_from(s.len() + 1).expect("CTranslate2 strings are < 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&MAX_BINARY_VERSION.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for v in vars {
        string(&mut out, &v.name);
        out.push(v.shape.len() as u8);
        for &d in &v.shape {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        out.push(v.dtype.code());
        out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&v.data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (a, t) in aliases {
        string(&mut out, a);
        string(&mut out, t);
    }
    out
}

/// Writes a binary-version-6 `model.bin`.
#[doc(hidden)]
pub fn write_model_bin(
    path: &Path,
    spec: &str,
    revision: u32,
    vars: &[Ct2WriteVar],
    aliases: &[(String, String)],
) -> Result<(), ModelError> {
    std::fs::write(path, encode_model_bin(spec, revision, vars, aliases))
        .map_err(ModelError::io(path))
}

/// Dimensions of a random-weight Whisper written by [`write_tiny_whisper_ct2`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinySpec {
    pub n_mels: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// Keep at 4 × `d_model`: candle's Whisper hard-codes that width.
    pub ffn_dim: usize,
    /// 51864 matches the English-only Whisper tokenizer, so real token ids work.
    pub vocab_size: usize,
    pub n_audio_ctx: usize,
    pub n_text_ctx: usize,
    /// Float dtype of the weights (F16 like faster-whisper, or F32).
    pub dtype: Ct2DType,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            n_mels: 80,
            d_model: 32,
            n_heads: 2,
            encoder_layers: 2,
            decoder_layers: 2,
            ffn_dim: 128,
            vocab_size: 51864,
            n_audio_ctx: 1500,
            n_text_ctx: 448,
            dtype: Ct2DType::F16,
        }
    }
}

/// Deterministic PRNG (splitmix64) so fixtures are reproducible without a
/// `rand` dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn values(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next_f32()).collect()
    }
}

/// Accumulates the variables of a random-weight fixture.
struct FixtureWriter {
    rng: SplitMix,
    dtype: Ct2DType,
    d: usize,
    vars: Vec<Ct2WriteVar>,
}

impl FixtureWriter {
    /// Weights are uniform in `offset ± 0.1`: small enough that a forward
    /// pass through a few random layers stays finite.
    fn float(&mut self, name: &str, shape: &[usize], offset: f32) {
        let n = shape.iter().product();
        let values = self.rng.values(n, 0.1, offset);
        self.vars
            .push(Ct2WriteVar::float(name, shape, &values, self.dtype));
    }

    fn layer_norm(&mut self, p: &str) {
        self.float(&format!("{p}/beta"), &[self.d], 0.0);
        self.float(&format!("{p}/gamma"), &[self.d], 1.0);
    }

    fn linear(&mut self, p: &str, out: usize, inp: usize) {
        self.float(&format!("{p}/bias"), &[out], 0.0);
        self.float(&format!("{p}/weight"), &[out, inp], 0.0);
    }

    /// A fused projection of `blocks` d×d blocks whose block `zero_block`
    /// has a zero bias (Whisper's key projection has no bias; the converter
    /// fuses zeros in its place).
    fn fused(&mut self, p: &str, blocks: usize, zero_block: usize) {
        let d = self.d;
        let mut bias = self.rng.values(blocks * d, 0.1, 0.0);
        bias[zero_block * d..(zero_block + 1) * d].fill(0.0);
        self.vars.push(Ct2WriteVar::float(
            &format!("{p}/bias"),
            &[blocks * d],
            &bias,
            self.dtype,
        ));
        self.float(&format!("{p}/weight"), &[blocks * d, d], 0.0);
    }

    fn ffn(&mut self, p: &str, ffn_dim: usize) {
        let d = self.d;
        self.layer_norm(&format!("{p}/ffn/layer_norm"));
        self.linear(&format!("{p}/ffn/linear_0"), ffn_dim, d);
        self.linear(&format!("{p}/ffn/linear_1"), d, ffn_dim);
    }

    fn self_attention(&mut self, p: &str) {
        let d = self.d;
        self.layer_norm(&format!("{p}/self_attention/layer_norm"));
        self.fused(&format!("{p}/self_attention/linear_0"), 3, 1);
        self.linear(&format!("{p}/self_attention/linear_1"), d, d);
    }
}

/// Writes a random-weight Whisper `model.bin` + `config.json` into `dir`
/// with exactly the layout faster-whisper's converter produces (fused q|k|v
/// and k|v projections with zero k biases, the projection alias, the scalar
/// flags, names in sorted order), so tests can exercise the real import path
/// without a download. No tokenizer is written.
#[doc(hidden)]
pub fn write_tiny_whisper_ct2(dir: &Path, spec: TinySpec, seed: u64) -> Result<(), ModelError> {
    let TinySpec {
        n_mels,
        d_model: d,
        n_heads,
        encoder_layers,
        decoder_layers,
        ffn_dim,
        vocab_size,
        n_audio_ctx,
        n_text_ctx,
        dtype,
    } = spec;
    let mut w = FixtureWriter {
        rng: SplitMix(seed),
        dtype,
        d,
        vars: Vec::new(),
    };
    w.vars.push(Ct2WriteVar::i8_scalar("decoder/activation", 3)); // GELU
    w.vars.push(Ct2WriteVar::i8_scalar("decoder/alibi", 0));
    w.vars
        .push(Ct2WriteVar::i16_scalar("decoder/alignment_heads", 1));
    w.vars
        .push(Ct2WriteVar::i16_scalar("decoder/alignment_layer", -1));
    w.float("decoder/embeddings/weight", &[vocab_size, d], 0.0);
    for i in 0..decoder_layers {
        let p = format!("decoder/layer_{i}");
        w.layer_norm(&format!("{p}/attention/layer_norm"));
        w.linear(&format!("{p}/attention/linear_0"), d, d);
        w.fused(&format!("{p}/attention/linear_1"), 2, 0);
        w.linear(&format!("{p}/attention/linear_2"), d, d);
        w.ffn(&p, ffn_dim);
        w.self_attention(&p);
    }
    w.layer_norm("decoder/layer_norm");
    w.vars
        .push(Ct2WriteVar::i16_scalar("decoder/num_heads", n_heads as i16));
    w.float(
        "decoder/position_encodings/encodings",
        &[n_text_ctx, d],
        0.0,
    );
    w.vars.push(Ct2WriteVar::i8_scalar("decoder/pre_norm", 1));
    w.vars
        .push(Ct2WriteVar::i8_scalar("decoder/scale_embeddings", 0));
    w.vars.push(Ct2WriteVar::i8_scalar(
        "decoder/start_from_zero_embedding",
        0,
    ));
    w.float("encoder/conv1/bias", &[d], 0.0);
    w.float("encoder/conv1/weight", &[d, n_mels, 3], 0.0);
    w.float("encoder/conv2/bias", &[d], 0.0);
    w.float("encoder/conv2/weight", &[d, d, 3], 0.0);
    for i in 0..encoder_layers {
        let p = format!("encoder/layer_{i}");
        w.ffn(&p, ffn_dim);
        w.self_attention(&p);
    }
    w.layer_norm("encoder/layer_norm");
    w.vars
        .push(Ct2WriteVar::i16_scalar("encoder/num_heads", n_heads as i16));
    w.float(
        "encoder/position_encodings/encodings",
        &[n_audio_ctx, d],
        0.0,
    );

    std::fs::create_dir_all(dir).map_err(ModelError::io(dir))?;
    write_model_bin(
        &dir.join("model.bin"),
        WHISPER_SPEC,
        3,
        &w.vars,
        &[(
            "decoder/projection/weight".to_owned(),
            "decoder/embeddings/weight".to_owned(),
        )],
    )?;
    let keep = |ids: &[u32]| -> Vec<u32> {
        ids.iter()
            .copied()
            .filter(|&t| (t as usize) < vocab_size)
            .collect()
    };
    let config = serde_json::json!({
        "alignment_heads": [[decoder_layers.saturating_sub(1), 0]],
        "lang_ids": keep(&[50259, 50260]),
        "suppress_ids": keep(&[1, 2, 7, 8, 50257]),
        "suppress_ids_begin": keep(&[220, 50256]),
    });
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config.to_string()).map_err(ModelError::io(&cfg))
}
