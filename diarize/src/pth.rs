//! Reading a PyTorch zip checkpoint's tensors with one pass over the
//! archive.
//!
//! candle's `pickle::read_all` reopens the file and re-reads the zip's
//! central directory for every tensor (`PthTensors::get`), which is
//! quadratic in the number of entries: CAM++'s checkpoint has ~900 of them
//! (every BatchNorm's four vectors), and loading it took most of the
//! diarization networks' ~0.5 s start. Here the tensor list comes from
//! candle's own pickle reader (`read_pth_tensor_info`, so the two agree on
//! names, dtypes and layouts) and the archive is opened once.
//!
//! [`read_legacy`] reads the format PyTorch wrote before 1.6 (no zip:
//! pickles one after another, then the raw storages), which candle does not
//! open: Resemblyzer's GE2E checkpoint is one. Its pickles are read with
//! candle's pickle machine all the same.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::pickle::{read_pth_tensor_info, Object, Stack};
use candle_core::{Device, Tensor};

/// Every tensor of the checkpoint at `path` (under `key`, e.g.
/// `state_dict`, when given), on the CPU, named as in the state dict.
pub fn read_all(path: &Path, key: Option<&str>) -> candle_core::Result<HashMap<String, Tensor>> {
    let infos = read_pth_tensor_info(path, false, key)?;
    let file = BufReader::new(std::fs::File::open(path)?);
    let mut zip = zip::ZipArchive::new(file).map_err(candle_core::Error::wrap)?;
    let mut out = HashMap::with_capacity(infos.len());
    for info in infos {
        let layout = &info.layout;
        let fortran = layout.is_fortran_contiguous();
        if !layout.is_contiguous() && !fortran {
            candle_core::bail!("{}: cannot read a strided tensor {layout:?}", info.name);
        }
        let mut entry = zip.by_name(&info.path).map_err(candle_core::Error::wrap)?;
        // candle's pickle reader gives the storage offset in bytes.
        let skip = layout.start_offset() as u64;
        std::io::copy(&mut entry.by_ref().take(skip), &mut std::io::sink())?;
        let dims = layout.shape().dims().to_vec();
        let mut bytes = vec![0u8; layout.shape().elem_count() * info.dtype.size_in_bytes()];
        entry.read_exact(&mut bytes)?;
        let rank = dims.len();
        let t = if rank > 1 && fortran {
            // Stored column-major: read as the reversed shape, then
            // transpose every axis back.
            let reversed: Vec<usize> = dims.iter().rev().copied().collect();
            Tensor::from_raw_buffer(&bytes, info.dtype, &reversed, &Device::Cpu)?
                .permute((0..rank).rev().collect::<Vec<_>>())?
        } else {
            Tensor::from_raw_buffer(&bytes, info.dtype, &dims, &Device::Cpu)?
        };
        out.insert(info.name, t);
    }
    Ok(out)
}

/// The first pickle of a legacy (pre-zip) PyTorch file: protocol 2, the
/// magic number 0x1950a86a20f9469cfc6c as a 10-byte long, stop. Compared as
/// bytes: candle's pickle machine keeps longs in an i64.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Every tensor of a legacy-format checkpoint at `path` under `key` (e.g.
/// `model_state`; the top-level dict when `None`), on the CPU.
///
/// The layout: five pickles (the magic number, the protocol version, system
/// info, the object itself with its storages as persistent ids, and the
/// storage keys in the order they follow), then per storage its element
/// count (u64, little endian) and its raw little-endian elements.
pub fn read_legacy(path: &Path, key: Option<&str>) -> candle_core::Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path)?;
    if !bytes.starts_with(&LEGACY_MAGIC) {
        candle_core::bail!(
            "{}: not a legacy PyTorch file (no magic number)",
            path.display()
        );
    }
    let mut r = std::io::Cursor::new(&bytes[..]);
    r.set_position(LEGACY_MAGIC.len() as u64);
    let next = |r: &mut std::io::Cursor<&[u8]>| -> candle_core::Result<Object> {
        let mut stack = Stack::empty();
        stack.read_loop(r)?;
        stack.finalize()
    };
    let _protocol = next(&mut r)?;
    let _sys_info = next(&mut r)?;
    let obj = next(&mut r)?;
    let keys = match next(&mut r)? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|o| candle_core::Error::Msg(format!("storage key {o:?}")))
            })
            .collect::<candle_core::Result<Vec<String>>>()?,
        other => candle_core::bail!("{}: storage keys {other:?}", path.display()),
    };
    // Each storage: where its elements start and how many there are.
    let mut at = r.position() as usize;
    let mut storages: HashMap<String, (usize, usize)> = HashMap::with_capacity(keys.len());
    let elem_size = |name: &str| -> candle_core::Result<usize> {
        Ok(match name {
            "FloatStorage" | "IntStorage" => 4,
            "DoubleStorage" | "LongStorage" => 8,
            "HalfStorage" | "BFloat16Storage" => 2,
            "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
            other => candle_core::bail!("unsupported storage type {other}"),
        })
    };
    // The storages' types, from their persistent ids (the element size
    // decides how far each storage runs).
    let mut types: HashMap<String, String> = HashMap::new();
    collect_storage_types(&obj, &mut types);
    for k in &keys {
        let count_bytes = bytes.get(at..at + 8).ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: truncated at storage {k}", path.display()))
        })?;
        let count = u64::from_le_bytes(count_bytes.try_into().expect("8 bytes")) as usize;
        let size = elem_size(types.get(k).map(String::as_str).unwrap_or("FloatStorage"))?;
        let start = at + 8;
        let end = count
            .checked_mul(size)
            .and_then(|n| n.checked_add(start))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "{}: storage {k} runs past the file",
                    path.display()
                ))
            })?;
        storages.insert(k.clone(), (start, end));
        at = end;
    }
    let obj = match (key, obj) {
        (Some(key), Object::Dict(kv)) => kv
            .into_iter()
            .find(|(k, _)| *k == Object::Unicode(key.to_owned()))
            .map(|(_, v)| v)
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: no key {key}", path.display())))?,
        (_, obj) => obj,
    };
    let Object::Dict(entries) = obj else {
        candle_core::bail!("{}: not a state dict", path.display());
    };
    let mut out = HashMap::with_capacity(entries.len());
    for (name, value) in entries {
        let Some(info) = value.into_tensor_info(name, Path::new(""))? else {
            continue;
        };
        let storage_key = info.path.trim_start_matches('/');
        let &(start, end) = storages.get(storage_key).ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: no storage {storage_key}", info.name))
        })?;
        let layout = &info.layout;
        if !layout.is_contiguous() {
            candle_core::bail!("{}: cannot read a strided tensor {layout:?}", info.name);
        }
        // candle's pickle reader gives the storage offset in bytes.
        let from = start + layout.start_offset();
        let len = layout.shape().elem_count() * info.dtype.size_in_bytes();
        let data = bytes
            .get(from..from + len)
            .filter(|_| from + len <= end)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: runs past its storage", info.name))
            })?;
        let t = Tensor::from_raw_buffer(data, info.dtype, layout.shape().dims(), &Device::Cpu)?;
        out.insert(info.name, t);
    }
    Ok(out)
}

/// Storage key → storage class name, from every persistent id in `obj`
/// (`('storage', <class>, key, location, size, view)`).
fn collect_storage_types(obj: &Object, out: &mut HashMap<String, String>) {
    match obj {
        Object::PersistentLoad(id) => {
            if let Object::Tuple(parts) = id.as_ref() {
                if let (Some(Object::Class { class_name, .. }), Some(Object::Unicode(key))) =
                    (parts.get(1), parts.get(2))
                {
                    out.insert(key.clone(), class_name.clone());
                }
            }
        }
        Object::Tuple(v) | Object::List(v) => v.iter().for_each(|o| collect_storage_types(o, out)),
        Object::Dict(kv) => kv.iter().for_each(|(k, v)| {
            collect_storage_types(k, out);
            collect_storage_types(v, out);
        }),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            collect_storage_types(callable, out);
            collect_storage_types(args, out);
        }
        _ => {}
    }
}
