//! Decodes audio files the way every earshot entry point does (file → 16 kHz
//! mono) and reports the codec, rates, lengths and time spent, so a format's
//! decode speed can be set against ffmpeg's on the same file.
//!
//! ```text
//! cargo run -p earshot-inference --example decode_audio -- FILE... [--repeat N] [--out DIR]
//! ```
//!
//! `--out DIR` writes each 16 kHz result as raw little-endian f32
//! (`DIR/<file name>.f32`); `--repeat N` decodes each file N times and
//! reports the fastest; `--load` times [`audio::load_file`] alone, the one
//! call the CLI, the worker and the endpoint make (decoding and resampling
//! together, so its peak memory is theirs).

use std::path::PathBuf;
use std::time::Instant;

use earshot_inference::audio::{self, DecodeLimits};

fn main() {
    let mut files = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut repeat = 1usize;
    let mut load = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from),
            "--load" => load = true,
            "--repeat" => repeat = args.next().and_then(|n| n.parse().ok()).unwrap_or(1),
            "-h" | "--help" => {
                eprintln!("usage: decode_audio FILE... [--repeat N] [--out DIR] [--load]");
                return;
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    let mut failed = false;
    for f in &files {
        if load {
            let t0 = Instant::now();
            match audio::load_file(f, DecodeLimits::default()) {
                Ok(x) => {
                    let secs = t0.elapsed().as_secs_f64();
                    println!(
                        "{}\tload_file samples16k={} total={secs:.3}s ({:.0}x real time)",
                        f.display(),
                        x.len(),
                        x.len() as f64 / audio::SAMPLE_RATE as f64 / secs
                    );
                    write_f32(out.as_deref(), f, &x);
                }
                Err(e) => {
                    println!("{}\terror: {e}", f.display());
                    failed = true;
                }
            }
            continue;
        }
        let mut best: Option<(f64, f64)> = None;
        let mut last = None;
        for _ in 0..repeat.max(1) {
            let t0 = Instant::now();
            let d = match audio::decode_file(f, DecodeLimits::default()) {
                Ok(d) => d,
                Err(e) => {
                    println!("{}\terror: {e}", f.display());
                    failed = true;
                    break;
                }
            };
            let t1 = Instant::now();
            let x = audio::resample_to_16k(&d.samples, d.sample_rate).expect("resample");
            let t2 = Instant::now();
            let (dec, res) = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
            if best.is_none_or(|(a, b)| dec + res < a + b) {
                best = Some((dec, res));
            }
            last = Some((d, x));
        }
        let (Some((d, x)), Some((dec, res))) = (last, best) else {
            continue;
        };
        println!(
            "{}\tcodec={} rate={} decoded={:.3}s samples16k={} truncated={} \
             decode={:.3}s resample={:.3}s total={:.3}s ({:.0}x real time)",
            f.display(),
            d.codec,
            d.sample_rate,
            d.duration_s(),
            x.len(),
            d.truncated,
            dec,
            res,
            dec + res,
            d.duration_s() / (dec + res)
        );
        write_f32(out.as_deref(), f, &x);
    }
    if failed {
        std::process::exit(1);
    }
}

/// Writes `x` as raw little-endian f32 to `dir/<file name>.f32`.
fn write_f32(dir: Option<&std::path::Path>, f: &std::path::Path, x: &[f32]) {
    let Some(dir) = dir else {
        return;
    };
    std::fs::create_dir_all(dir).expect("create --out");
    let name = f.file_name().expect("a file name").to_string_lossy();
    let bytes: Vec<u8> = x.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(dir.join(format!("{name}.f32")), bytes).expect("write");
}
