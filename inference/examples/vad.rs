//! Silero VAD on audio files or the VAD comparison set: speech spans,
//! probabilities and timings as JSON. The earshot side of
//! `scripts/compare-vad`.
//!
//! ```text
//! cargo run -p earshot-inference --example vad -- --model silero_vad_v6.onnx \
//!     --out ours.json [--dump-dir DIR] [--options JSON] [--repeat N] \
//!     [--time-clip NAME] (--set FIXTURES_DIR | [--raw F32_FILE]... FILE...)
//! ```
//!
//! `--set DIR`: `testing::vad_clips(DIR)` (manifest clips, edge cases and
//! generated silence/noise clips); else the given audio files, and with
//! `--raw` files of 16 kHz mono f32 little-endian samples. `--options`:
//! a JSON list of `{"name": ..., "params": {faster-whisper VadOptions}}`
//! (default: one set, faster-whisper's defaults). `--dump-dir`: write each
//! clip's decoded samples (`<name>.f32`) and our probabilities
//! (`<name>.ours.probs.f32`) there. `--repeat N`: time `speech_timestamps`
//! with the first option set N times per clip (or only on `--time-clip`).

use std::path::PathBuf;
use std::time::Instant;

use earshot_inference::audio::{load_file, DecodeLimits};
use earshot_inference::vad::{speech_timestamps_from_probs, SileroVad, VadOptions};

fn main() {
    if let Err(e) = run() {
        eprintln!("vad: error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut out, mut dump, mut set) = (None, None, None, None);
    let mut options = r#"[{"name": "default", "params": {}}]"#.to_string();
    let (mut repeat, mut time_clip) = (0usize, None::<String>);
    let mut files = Vec::new();
    let mut raw = Vec::new();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(val()?)),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--dump-dir" => dump = Some(PathBuf::from(val()?)),
            "--set" => set = Some(PathBuf::from(val()?)),
            "--options" => options = val()?,
            "--repeat" => repeat = val()?.parse()?,
            "--time-clip" => time_clip = Some(val()?),
            "--raw" => raw.push(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("see the doc comment of inference/examples/vad.rs");
                return Ok(());
            }
            f if f.starts_with("--") => return Err(format!("unknown option {f}").into()),
            f => files.push(PathBuf::from(f)),
        }
    }
    let model = model.ok_or("--model is required")?;
    let out = out.ok_or("--out is required")?;
    let sets: Vec<serde_json::Value> = serde_json::from_str(&options)?;
    let sets: Vec<(String, VadOptions)> = sets
        .iter()
        .map(|s| -> Result<_, Box<dyn std::error::Error>> {
            let name = s["name"].as_str().ok_or("option set without a name")?;
            Ok((
                name.to_string(),
                serde_json::from_value(s["params"].clone())?,
            ))
        })
        .collect::<Result<_, _>>()?;
    let first = sets.first().ok_or("no option sets")?.1;

    let t0 = Instant::now();
    let vad = SileroVad::load(&model)?;
    let load_s = t0.elapsed().as_secs_f64();

    let mut clips: Vec<(String, Vec<f32>)> = match &set {
        Some(dir) => earshot_inference::testing::vad_clips(dir),
        None => files
            .iter()
            .map(|f| -> Result<_, Box<dyn std::error::Error>> {
                let name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                Ok((name, load_file(f, DecodeLimits::default())?))
            })
            .collect::<Result<_, _>>()?,
    };
    for f in &raw {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let name = name.strip_suffix(".f32").unwrap_or(&name).to_string();
        let samples = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        clips.push((name, samples));
    }
    if let Some(d) = &dump {
        std::fs::create_dir_all(d)?;
    }
    let mut json_clips = Vec::new();
    for (name, samples) in &clips {
        let mut clip = serde_json::json!({"name": name, "n_samples": samples.len()});
        let probs = vad.speech_probs(samples);
        if let Some(d) = &dump {
            let write = |p: PathBuf, v: &[f32]| {
                std::fs::write(
                    &p,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                )
                .map(|()| p)
            };
            let f = write(d.join(format!("{name}.f32")), samples)?;
            let p = write(d.join(format!("{name}.ours.probs.f32")), &probs)?;
            clip["samples"] = f.display().to_string().into();
            clip["probs"] = p.display().to_string().into();
        }
        let mut ts = serde_json::Map::new();
        for (sname, o) in &sets {
            let spans = speech_timestamps_from_probs(&probs, samples.len(), o)?;
            let pairs: Vec<[usize; 2]> = spans.iter().map(|s| [s.start, s.end]).collect();
            ts.insert(sname.clone(), serde_json::to_value(pairs)?);
        }
        clip["timestamps"] = ts.into();
        if repeat > 0 && time_clip.as_deref().is_none_or(|c| c == name) {
            let mut runs = Vec::with_capacity(repeat);
            for _ in 0..repeat {
                let t = Instant::now();
                std::hint::black_box(vad.speech_timestamps(samples, &first)?);
                runs.push(t.elapsed().as_secs_f64());
            }
            clip["seconds"] = serde_json::to_value(runs)?;
        }
        json_clips.push(clip);
    }
    let doc = serde_json::json!({
        "model": model.display().to_string(),
        "load_seconds": load_s,
        "threads": rayon::current_num_threads(),
        "clips": json_clips,
    });
    std::fs::write(&out, serde_json::to_vec(&doc)?)?;
    Ok(())
}
