//! A bounded GGUF header reader producing candle's
//! [`gguf_file::Content`](candle_core::quantized::gguf_file::Content).
//!
//! Why not candle's own `Content::read`: fuzzing it (`fuzz/`, target `gguf`)
//! found hostile headers that panic inside it rather than return an error:
//! `general.alignment = 0` divides by zero, tensor dimensions whose
//! product overflows `usize` panic when the tensor is read, and a tensor
//! with a zero dimension makes candle build a misaligned slice (undefined
//! behaviour, caught by the debug precondition checks). A model file is
//! untrusted input (a user names any path or Hugging Face repo), so the
//! header is read here, where every count, length, dimension and offset is
//! checked against the file before it is used, and the result is handed to
//! candle's tensor loader unchanged.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;

use crate::error::InferenceError;

/// llama.cpp's string and dimension limits (`GGUF_MAX_STRING_LENGTH`,
/// `GGML_MAX_DIMS`). Arrays are capped lower than llama.cpp's 2^30: each
/// element becomes a 32-byte [`Value`], and the largest real array (a
/// vocabulary) holds a few hundred thousand; 2^24 bounds a hostile one to
/// 512 MiB. Arrays of arrays nest at most [`MAX_DEPTH`] deep.
const MAX_STRING: u64 = 1 << 30;
const MAX_ARRAY: u64 = 1 << 24;
const MAX_DIMS: u32 = 4;
const MAX_DEPTH: usize = 16;
const DEFAULT_ALIGNMENT: u64 = 32;

fn bad(msg: impl Into<String>) -> InferenceError {
    InferenceError::Model(format!("not a readable GGUF file: {}", msg.into()))
}

/// Reads the header of a GGUF file (from its start) and checks that every
/// tensor it lists lies inside the file.
pub fn read_content<R: Read + Seek>(file: &mut R) -> Result<Content, InferenceError> {
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| bad(e.to_string()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(e.to_string()))?;
    let mut r = Reader {
        inner: BufReader::new(file),
        pos: 0,
        size,
        magic: VersionedMagic::GgufV3,
    };
    let magic = r.u32()?;
    if magic != 0x4655_4747 && magic != 0x4747_5546 {
        return Err(bad(format!("unknown magic {magic:#010x}")));
    }
    r.magic = match r.u32()? {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(bad(format!("unsupported version {v}"))),
    };
    let tensor_count = r.len()?;
    let kv_count = r.len()?;
    let prefix = r.len_size();
    // Smallest possible entries: a key and a one-byte value; a name, a
    // dimension count, a dtype and an offset.
    let needed = kv_count
        .saturating_mul(prefix + 5)
        .saturating_add(tensor_count.saturating_mul(prefix + 16));
    if needed > r.remaining() {
        return Err(bad(format!(
            "header lists {tensor_count} tensors and {kv_count} metadata entries, \
             more than its {size} bytes can hold"
        )));
    }
    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("tensor {name:?} has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = match r.magic {
                VersionedMagic::GgufV1 => r.u32()? as u64,
                _ => r.u64()?,
            };
            dims.push(
                usize::try_from(d).map_err(|_| bad(format!("tensor {name:?}: dimension {d}")))?,
            );
        }
        dims.reverse();
        let code = r.u32()?;
        let dtype = dtype_of(code).ok_or_else(|| bad(format!("tensor {name:?}: dtype {code}")))?;
        let offset = r.u64()?;
        tensors.push((name, dims, dtype, offset));
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = match v {
                Value::U8(v) => *v as u64,
                Value::U16(v) => *v as u64,
                Value::U32(v) => *v as u64,
                Value::U64(v) => *v,
                Value::I8(v) => (*v).max(0) as u64,
                Value::I16(v) => (*v).max(0) as u64,
                Value::I32(v) => (*v).max(0) as u64,
                Value::I64(v) => (*v).max(0) as u64,
                _ => 0,
            };
            if a == 0 || !a.is_power_of_two() {
                return Err(bad(format!(
                    "general.alignment {v:?} is not a power of two"
                )));
            }
            a
        }
    };
    let data_offset = r
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| bad("tensor data offset overflows"))?;
    let mut tensor_infos = HashMap::with_capacity(tensors.len());
    for (name, dims, dtype, offset) in tensors {
        let elems = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {name:?}: {dims:?} elements overflow")))?;
        // No model has an empty tensor, and candle's loader would build a
        // misaligned slice from the empty buffer (undefined behaviour).
        if elems == 0 {
            return Err(bad(format!("tensor {name:?} has no elements ({dims:?})")));
        }
        let block = dtype.block_size();
        if elems % block != 0 {
            return Err(bad(format!(
                "tensor {name:?}: {elems} elements are not whole {dtype:?} blocks of {block}"
            )));
        }
        let bytes = (elems / block)
            .checked_mul(dtype.type_size())
            .map(|b| b as u64);
        let end = data_offset
            .checked_add(offset)
            .and_then(|start| start.checked_add(bytes?));
        if end.is_none_or(|e| e > size) {
            return Err(bad(format!(
                "tensor {name:?} ({dims:?} {dtype:?} at offset {offset}) runs past the \
                 end of the {size}-byte file"
            )));
        }
        tensor_infos.insert(
            name,
            TensorInfo {
                ggml_dtype: dtype,
                shape: candle_core::Shape::from(dims),
                offset,
            },
        );
    }
    Ok(Content {
        magic: r.magic,
        metadata,
        tensor_infos,
        tensor_data_offset: data_offset,
    })
}

/// GGML's on-disk type codes (the ones candle can load).
fn dtype_of(code: u32) -> Option<GgmlDType> {
    Some(match code {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Little-endian reads that know how much of the file is left.
struct Reader<R: Read> {
    inner: R,
    pos: u64,
    size: u64,
    magic: VersionedMagic,
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], InferenceError> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| bad(format!("ends inside its header (at byte {})", self.pos)))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, InferenceError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, InferenceError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// Bytes of a length prefix: 4 in version 1, 8 after.
    fn len_size(&self) -> u64 {
        match self.magic {
            VersionedMagic::GgufV1 => 4,
            _ => 8,
        }
    }

    fn len(&mut self) -> Result<u64, InferenceError> {
        match self.magic {
            VersionedMagic::GgufV1 => Ok(self.u32()? as u64),
            _ => self.u64(),
        }
    }

    fn string(&mut self) -> Result<String, InferenceError> {
        let n = self.len()?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(bad(format!("a string of {n} bytes at byte {}", self.pos)));
        }
        let mut v = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|_| bad("ends inside a string"))?;
        self.pos += n;
        // Strings should not be NUL-terminated, but some writers do it.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// Smallest encoding of a value of type `ty`, for bounding arrays.
    fn min_size(&self, ty: u32) -> u64 {
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => self.len_size(),
            _ => 4 + self.len_size(),
        }
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, InferenceError> {
        Ok(match ty {
            0 => Value::U8(self.bytes::<1>()?[0]),
            1 => Value::I8(self.bytes::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(bad(format!("bool value {b}"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(bad(format!("arrays nested over {MAX_DEPTH} deep")));
                }
                let elem = self.u32()?;
                if elem > 12 {
                    return Err(bad(format!("value type {elem}")));
                }
                let n = self.len()?;
                if n > MAX_ARRAY || n.saturating_mul(self.min_size(elem)) > self.remaining() {
                    return Err(bad(format!("an array of {n} values at byte {}", self.pos)));
                }
                // Grown as elements are read, not reserved from the claim.
                let mut v = Vec::with_capacity((n as usize).min(4096));
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(bad(format!("value type {other}"))),
        })
    }
}
