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

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::pickle::read_pth_tensor_info;
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
