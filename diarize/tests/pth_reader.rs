//! `earshot_diarize::pth::read_all` (one pass over the archive) against
//! candle's own per-tensor reader on both shipped checkpoints: the same
//! names, dtypes, shapes and values, to the bit.

#[allow(dead_code)] // only the models directory is used here
mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};

#[test]
fn one_pass_reader_matches_candles_on_the_shipped_checkpoints() {
    let dir = common::models_dir().join("diarize");
    for (file, key) in [
        ("segmentation-3.0.bin", Some("state_dict")),
        ("campplus_cn_en_common.pt", None),
    ] {
        let path = dir.join(file);
        common::require(&path);
        let ours = earshot_diarize::pth::read_all(&path, key).unwrap();
        let theirs: HashMap<String, Tensor> = candle_core::pickle::read_all_with_key(&path, key)
            .unwrap()
            .into_iter()
            .collect();
        let mut a: Vec<&String> = ours.keys().collect();
        let mut b: Vec<&String> = theirs.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{file}");
        assert!(a.len() > 50, "{file}: {} tensors", a.len());
        for (name, t) in &theirs {
            let o = &ours[name];
            assert_eq!(
                (o.dims(), o.dtype()),
                (t.dims(), t.dtype()),
                "{file} {name}"
            );
            let x = o.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            let y = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            let (x, y) = (x.to_vec1::<f64>().unwrap(), y.to_vec1::<f64>().unwrap());
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{file} {name}"
            );
        }
    }
}
