//! Replays the `model.bin` inputs the `ct2_model` fuzz target once crashed
//! on (`fuzz/regressions/ct2_model/`, see `scripts/fuzz`) through the same
//! reader and importer calls, so the stable `cargo test` catches a
//! regression without nightly or cargo-fuzz. Each must give a `ModelError`.

use std::path::Path;

use candle_core::{DType, Device};
use earshot_models::ct2::{import_whisper_file, read_model_bin};
use earshot_models::GenerationConfig;

#[test]
fn ct2_model_regressions_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/ct2_model");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    for path in paths {
        let file = tmp.path().join("model.bin");
        std::fs::copy(&path, &file).unwrap();
        let err = match read_model_bin(&file) {
            Err(e) => e,
            Ok(f) => {
                for v in &f.vars {
                    let _ = f.bytes(v);
                    let _ = f.scalar_i64(&v.name);
                }
                import_whisper_file(&f, GenerationConfig::default(), DType::F32, &Device::Cpu)
                    .err()
                    .unwrap_or_else(|| panic!("{} imported", path.display()))
            }
        };
        eprintln!("{}: {err}", path.display());
    }
}
