//! Decoding every fixture format straight through `earshot_inference::audio`:
//! source rate and duration per clip, 16 kHz output length, and — on
//! variants of one passage made here with sox — that sample format, channel
//! count, container and source rate do not change the 16 kHz signal the
//! model sees (correlation > 0.99, no time shift); that Opus decodes to
//! exactly ffmpeg's samples and length (pre-skip and end trimming); and that
//! hostile and unsupported files (cut Ogg pages, a corrupt OpusHead, a WebM
//! with a broken cluster, Ogg Speex, AMR, videos without sound) give typed
//! errors or flagged partial audio, never a panic.
//!
//! Needs the speech fixtures (`scripts/make-fixtures`, run once by the test
//! when `manifest.tsv` is missing) and `sox` for the variants.

use std::process::Command;

use earshot_inference::audio::{self, AudioError, DecodeLimits, SAMPLE_RATE};
use earshot_inference::testing::{fixture_manifest as manifest, fixtures_dir as fixtures};

/// Pearson correlation of the common prefix.
fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa.sqrt() * sbb.sqrt()).max(1e-30)
}

/// Lag (b relative to a, in samples, within ±max) with the highest dot
/// product, over the first 4 s.
fn best_lag(a: &[f32], b: &[f32], max: usize) -> isize {
    let n = a.len().min(b.len()).min(4 * SAMPLE_RATE as usize);
    assert!(n > 2 * max);
    let dot = |l: isize| -> f64 {
        (max..n - max)
            .map(|i| a[i] as f64 * b[(i as isize + l) as usize] as f64)
            .sum()
    };
    let max = max as isize;
    let dots: Vec<(isize, f64)> = (-max..=max).map(|l| (l, dot(l))).collect();
    dots.iter().max_by(|x, y| x.1.total_cmp(&y.1)).unwrap().0
}

#[test]
fn every_manifest_clip_decodes_at_its_rate_and_duration() {
    for clip in manifest() {
        let path = fixtures().join(&clip.file);
        let d = audio::decode_file(&path, DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", clip.file));
        assert_eq!(
            d.sample_rate, clip.sample_rate,
            "{}: source rate",
            clip.file
        );
        assert!(!d.truncated, "{}: flagged truncated", clip.file);
        assert!(
            d.samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0),
            "{}: samples out of [-1, 1]",
            clip.file
        );
        let src_err = (d.duration_s() - clip.duration_s).abs();
        let x = audio::load_file(&path, DecodeLimits::default()).unwrap();
        let want = clip.duration_s * SAMPLE_RATE as f64;
        let rel = (x.len() as f64 - want).abs() / want;
        println!(
            "{:<22} {:<19} codec={:<10} {:>5} Hz  decoded {:.3} s (manifest {:.3} s, Δ {:+.1} ms)  \
             16 kHz len {} (Δ {:+.3}%)",
            clip.file,
            clip.format,
            d.codec,
            d.sample_rate,
            d.duration_s(),
            clip.duration_s,
            (d.duration_s() - clip.duration_s) * 1e3,
            x.len(),
            (x.len() as f64 - want) / want * 100.0
        );
        assert!(
            rel <= 0.01,
            "{}: 16 kHz length {} vs {:.0} expected ({:.2}% off)",
            clip.file,
            x.len(),
            want,
            rel * 100.0
        );
        assert!(
            src_err < 0.1,
            "{}: decoded {:.3} s",
            clip.file,
            d.duration_s()
        );
        // The resampler's own length rule: ceil(n * 16000 / rate).
        let exp = (d.samples.len() as u64 * SAMPLE_RATE as u64).div_ceil(d.sample_rate as u64);
        assert_eq!(x.len() as u64, exp, "{}: resampled length", clip.file);
        // Opus is resampled as it decodes; every format gives the samples
        // of decoding whole and resampling afterwards, bit for bit.
        let whole = audio::resample_to_16k(&d.samples, d.sample_rate).unwrap();
        assert!(
            x.iter()
                .zip(&whole)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: load_file differs from decode_file + resample_to_16k",
            clip.file
        );
        // Bytes in memory decode to the same samples as the file.
        let ext = path.extension().and_then(|e| e.to_str());
        let y =
            audio::load_bytes(std::fs::read(&path).unwrap(), ext, DecodeLimits::default()).unwrap();
        assert_eq!(x, y, "{}: load_bytes differs from load_file", clip.file);
    }
}

#[test]
fn edge_case_files_decode_or_fail_cleanly() {
    let dir = fixtures();
    let lim = DecodeLimits::default();
    let r = audio::load_file(&dir.join("empty.wav"), lim);
    assert!(matches!(r, Err(AudioError::Empty)), "{r:?}");
    let r = audio::load_file(&dir.join("not-audio.txt"), lim);
    assert!(matches!(r, Err(AudioError::Unrecognized(_))), "{r:?}");
    // Opus at 48 kHz, as long as the 16 kHz clip it was made from.
    let d = audio::decode_file(&dir.join("opus.ogg"), lim).unwrap();
    assert_eq!((d.codec.as_str(), d.sample_rate), ("opus", 48_000));
    let src = audio::decode_file(&dir.join("01-weather.wav"), lim).unwrap();
    assert_eq!(d.samples.len(), src.samples.len() * 3);
    assert!(!d.truncated);
    let x = audio::load_file(&dir.join("header-only.wav"), lim).unwrap();
    assert!(x.is_empty());
    let x = audio::load_file(&dir.join("silence-10s.wav"), lim).unwrap();
    assert_eq!(x.len(), 10 * SAMPLE_RATE as usize);
    // sox dithers even `-n` output: ±1 LSB of 16-bit, not digital zero.
    let peak = x.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak <= 1.0 / 16384.0, "silence peak {peak}");
    // 3000 bytes of a 64 kb/s mp3: ~0.37 s decode, then the stream ends.
    match audio::decode_file(&dir.join("truncated.mp3"), lim) {
        Ok(d) => {
            println!(
                "truncated.mp3: {:.3} s decoded, truncated flag {}",
                d.duration_s(),
                d.truncated
            );
            assert!(d.duration_s() < 1.0, "{}", d.duration_s());
        }
        Err(e) => println!("truncated.mp3: error {e}"),
    }
    hostile_opus_and_other_codecs(dir, lim);
    let r = audio::load_file(dir, lim);
    assert!(matches!(r, Err(AudioError::Io { .. })), "{r:?}");
    let r = audio::load_file(&dir.join("does-not-exist.wav"), lim);
    assert!(matches!(r, Err(AudioError::Io { .. })), "{r:?}");
}

/// The Opus, Ogg, AMR and video edge cases of make-fixtures.
fn hostile_opus_and_other_codecs(dir: &std::path::Path, lim: DecodeLimits) {
    let opus_clip = manifest()
        .into_iter()
        .find(|c| c.format == "ogg-opus")
        .expect("an ogg-opus clip in the manifest");
    // 20000 bytes of a 24 kb/s stream: ~6 s decode, the cut page is dropped.
    let d = audio::decode_file(&dir.join("truncated.opus"), lim).unwrap();
    println!(
        "truncated.opus: {:.3} s, truncated {}",
        d.duration_s(),
        d.truncated
    );
    assert!(d.truncated);
    assert!(d.duration_s() > 3.0 && d.duration_s() < opus_clip.duration_s - 5.0);
    match audio::decode_file(&dir.join("corrupt-head.opus"), lim) {
        Err(AudioError::Corrupt(m)) => assert!(m.contains("OpusHead"), "{m}"),
        other => panic!("corrupt-head.opus: {other:?}"),
    }
    // 2 KiB of junk in the second cluster: that cluster's audio from the
    // junk on is lost, the later clusters decode.
    let webm = manifest()
        .into_iter()
        .find(|c| c.format == "webm-opus-stereo")
        .expect("a webm-opus-stereo clip in the manifest");
    let d = audio::decode_file(&dir.join("broken-cluster.webm"), lim).unwrap();
    println!(
        "broken-cluster.webm: {:.3} s of {:.3} s",
        d.duration_s(),
        webm.duration_s
    );
    assert!(d.truncated);
    assert!(d.duration_s() > webm.duration_s - 8.0 && d.duration_s() < webm.duration_s - 0.1);
    for (file, codec) in [("speex.ogg", "speex"), ("amr-nb.amr", "amr")] {
        match audio::decode_file(&dir.join(file), lim) {
            Err(AudioError::UnsupportedCodec { codec: c }) => assert_eq!(c, codec, "{file}"),
            other => panic!("{file}: {other:?}"),
        }
    }
    for file in ["video-no-audio.mp4", "video-no-audio.webm"] {
        let r = audio::decode_file(&dir.join(file), lim);
        assert!(matches!(r, Err(AudioError::NoAudioTrack)), "{file}: {r:?}");
    }
    // Every prefix of the Opus files: an error or flagged partial audio.
    for file in [
        opus_clip.file.as_str(),
        webm.file.as_str(),
        "18-museum.webm",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let ext = file.rsplit('.').next();
        for cut in (0..bytes.len()).step_by(bytes.len() / 40 + 1).skip(1) {
            let at16 = audio::load_bytes(bytes[..cut].to_vec(), ext, lim);
            match audio::decode_bytes(bytes[..cut].to_vec(), ext, lim) {
                Ok(d) => {
                    assert!(d.truncated || d.samples.is_empty(), "{file} cut at {cut}");
                    // Resampled as it decodes, through the cut: the same
                    // samples as resampling what decoded.
                    let whole = audio::resample_to_16k(&d.samples, d.sample_rate).unwrap();
                    let x = at16.unwrap_or_else(|e| panic!("{file} cut at {cut}: {e}"));
                    assert_eq!(x.len(), whole.len(), "{file} cut at {cut}");
                    assert!(
                        x.iter()
                            .zip(&whole)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{file} cut at {cut}: load_bytes differs"
                    );
                }
                Err(AudioError::Corrupt(_)) => {
                    assert!(
                        matches!(at16, Err(AudioError::Corrupt(_))),
                        "{file} cut at {cut}"
                    )
                }
                Err(e) => panic!("{file} cut at {cut}: {e}"),
            }
        }
    }
}

/// Every format symphonia decodes is resampled as it decodes too (MP3,
/// FLAC, Vorbis, WAV at 44.1 kHz here; AAC with its edit list whole, above: symphonia reads
/// no MP4 cut short): cut anywhere, a file gives through `load_bytes` the
/// samples of decoding the same bytes whole and resampling them, or the
/// same error.
#[test]
fn cut_files_resample_as_they_decode_as_when_whole() {
    let dir = fixtures();
    let lim = DecodeLimits::default();
    for file in [
        "08-ocean.mp3",
        "14-mountain.mp3",
        "12-lighthouse.flac",
        "09-bicycle.ogg",
        "06-library.wav",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let ext = file.rsplit('.').next();
        let whole = audio::decode_bytes(bytes.clone(), ext, lim).unwrap();
        assert_ne!(whole.sample_rate, SAMPLE_RATE, "{file}: resampled at all");
        let mut decoded = 0;
        for cut in (0..=bytes.len()).rev().step_by(bytes.len() / 12 + 1) {
            let at16 = audio::load_bytes(bytes[..cut].to_vec(), ext, lim);
            match audio::decode_bytes(bytes[..cut].to_vec(), ext, lim) {
                Ok(d) => {
                    let want = audio::resample_to_16k(&d.samples, d.sample_rate).unwrap();
                    let x = at16.unwrap_or_else(|e| panic!("{file} cut at {cut}: {e}"));
                    assert_eq!(x.len(), want.len(), "{file} cut at {cut}");
                    assert!(
                        x.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{file} cut at {cut}: load_bytes differs"
                    );
                    decoded += usize::from(!x.is_empty());
                }
                Err(e) => {
                    let got = at16.expect_err("decode_bytes failed, load_bytes did not");
                    assert_eq!(
                        std::mem::discriminant(&got),
                        std::mem::discriminant(&e),
                        "{file} cut at {cut}: {got} against {e}"
                    );
                }
            }
        }
        assert!(decoded >= 6, "{file}: only {decoded} cuts decoded");
    }
}

fn ffmpeg_f32(args: &[&str], input: &std::path::Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(args.iter().take_while(|a| **a != "--"))
        .arg("-i")
        .arg(input)
        .args(args.iter().skip_while(|a| **a != "--").skip(1))
        .args(["-vn", "-ac", "1", "-f", "f32le", "-"])
        .output()
        .expect("ffmpeg is required (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// earshot's Opus decode against ffmpeg's of the same files, at 48 kHz:
/// the same length to the sample (pre-skip and end trimming agree), and
/// the same samples as ffmpeg's libopus decoder (earshot runs libopus too).
/// ffmpeg's own native decoder (what faster-whisper's PyAV uses) differs in
/// SILK-coded speech: it resamples SILK's 8-16 kHz output to 48 kHz its own
/// way, so the waveforms differ by a fraction of a millisecond of phase.
#[test]
fn opus_matches_ffmpeg_sample_for_sample() {
    let mut files: Vec<String> = manifest()
        .into_iter()
        .filter(|c| c.format.contains("opus"))
        .map(|c| c.file)
        .collect();
    files.push("opus.ogg".into());
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let path = fixtures().join(f);
        let d = audio::decode_file(&path, DecodeLimits::default()).unwrap();
        assert_eq!(d.sample_rate, 48_000, "{f}");
        let lib = ffmpeg_f32(&["-c:a", "libopus", "--", "-ar", "48000"], &path);
        let native = ffmpeg_f32(&["--", "-ar", "48000"], &path);
        let (c_lib, c_native) = (
            correlation(&d.samples, &lib),
            correlation(&d.samples, &native),
        );
        println!(
            "{f:<20} {} samples; ffmpeg libopus {} (correlation {c_lib:.6}), native {} ({c_native:.4})",
            d.samples.len(),
            lib.len(),
            native.len()
        );
        assert_eq!(d.samples.len(), lib.len(), "{f}: length vs ffmpeg libopus");
        assert_eq!(
            d.samples.len(),
            native.len(),
            "{f}: length vs ffmpeg native"
        );
        assert!(
            c_lib > 0.99999,
            "{f}: correlation with ffmpeg libopus {c_lib}"
        );
        assert!(
            c_native > 0.95,
            "{f}: correlation with ffmpeg native {c_native}"
        );
    }
}

#[test]
fn telephone_and_long_files() {
    let dir = fixtures();
    let market = manifest()
        .into_iter()
        .find(|c| c.file.contains("market"))
        .expect("market clip in the manifest");
    let d = audio::decode_file(&dir.join("telephone-8k.wav"), DecodeLimits::default()).unwrap();
    assert_eq!(d.sample_rate, 8000);
    let x = audio::load_file(&dir.join("telephone-8k.wav"), DecodeLimits::default()).unwrap();
    assert_eq!(x.len(), d.samples.len() * 2);
    // Same passage as the 32 kHz market clip: band-limited to 4 kHz, still
    // the same waveform below it.
    let m = audio::load_file(&dir.join(&market.file), DecodeLimits::default()).unwrap();
    let want = market.duration_s * SAMPLE_RATE as f64;
    assert!((x.len() as f64 - want).abs() / want < 0.01);
    let c = correlation(&x, &m);
    println!("telephone-8k vs {}: correlation {c:.4}", market.file);
    assert!(c > 0.9, "{c}");

    let long = dir.join("ten-minutes.wav");
    let x = audio::load_file(&long, DecodeLimits::default()).unwrap();
    assert_eq!(x.len(), 600 * SAMPLE_RATE as usize);
    let r = audio::load_file(
        &long,
        DecodeLimits {
            max_duration_s: Some(60.0),
        },
    );
    assert!(matches!(r, Err(AudioError::TooLong { .. })), "{r:?}");
}

/// How a variant is written: sox with output options, or ffmpeg with
/// output options (for the lossy codecs and MP4 containers sox lacks).
enum Tool {
    Sox(&'static [&'static str]),
    Ffmpeg(&'static [&'static str]),
    /// ffmpeg with a test-pattern video track first, the speech second.
    Video(&'static [&'static str]),
}

/// One passage in many sample formats, channel counts, containers, rates
/// and codecs: all must decode to the same 16 kHz signal, at the same time
/// (no lag: a shift here is a shift of every timestamp).
#[test]
fn same_passage_in_every_format_gives_the_same_signal() {
    use Tool::{Ffmpeg, Sox, Video};
    let src = fixtures().join("01-weather.wav");
    let reference = audio::load_file(&src, DecodeLimits::default()).unwrap();
    for tool in ["sox", "ffmpeg"] {
        let ok = Command::new(tool)
            .arg(if tool == "sox" {
                "--version"
            } else {
                "-version"
            })
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is required (apt-get install sox ffmpeg), as for scripts/make-fixtures"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let variants: &[(&str, Tool)] = &[
        ("u8.wav", Sox(&["-e", "unsigned-integer", "-b", "8"])),
        ("s24.wav", Sox(&["-e", "signed-integer", "-b", "24"])),
        ("s32.wav", Sox(&["-e", "signed-integer", "-b", "32"])),
        ("f32.wav", Sox(&["-e", "floating-point", "-b", "32"])),
        ("f64.wav", Sox(&["-e", "floating-point", "-b", "64"])),
        ("stereo.wav", Sox(&["-c", "2"])),
        ("stereo-44k.wav", Sox(&["-r", "44100", "-c", "2"])),
        ("s24-48k.wav", Sox(&["-r", "48000", "-b", "24"])),
        ("s16-22k.wav", Sox(&["-r", "22050"])),
        (
            "u8-11k.wav",
            Sox(&["-r", "11025", "-e", "unsigned-integer", "-b", "8"]),
        ),
        ("s24.flac", Sox(&["-b", "24"])),
        ("stereo-32k.flac", Sox(&["-r", "32000", "-c", "2"])),
        ("s16.aiff", Sox(&[])),
        (
            "ffmpeg-s24.wav",
            Ffmpeg(&["-ar", "48000", "-c:a", "pcm_s24le"]),
        ),
        (
            "44k.mp3",
            Ffmpeg(&["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "64k"]),
        ),
        (
            "stereo-44k.mp3",
            Ffmpeg(&[
                "-ar",
                "44100",
                "-ac",
                "2",
                "-c:a",
                "libmp3lame",
                "-q:a",
                "4",
            ]),
        ),
        (
            "vorbis-22k.ogg",
            Ffmpeg(&["-ar", "22050", "-c:a", "libvorbis", "-q:a", "4"]),
        ),
        (
            "aac-44k.m4a",
            Ffmpeg(&["-ar", "44100", "-c:a", "aac", "-b:a", "96k"]),
        ),
        (
            "aac-stereo-48k.m4a",
            Ffmpeg(&["-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "128k"]),
        ),
        ("alac-44k.m4a", Ffmpeg(&["-ar", "44100", "-c:a", "alac"])),
        // Opus at rates where it codes with CELT: below ~64 kb/s per
        // stream it uses SILK, whose output from libopus runs 2.2 samples
        // at 48 kHz (47 µs) ahead of the input, enough to pull this
        // waveform correlation to ~0.94 (see opus_matches_ffmpeg...).
        (
            "opus-mono.opus",
            Ffmpeg(&["-ar", "48000", "-c:a", "libopus", "-b:a", "96k"]),
        ),
        (
            "opus-stereo.ogg",
            Ffmpeg(&[
                "-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "128k",
            ]),
        ),
        (
            "opus-5.1.ogg",
            Ffmpeg(&[
                "-ar",
                "48000",
                "-ac",
                "6",
                "-c:a",
                "libopus",
                "-b:a",
                "256k",
                "-mapping_family",
                "1",
            ]),
        ),
        (
            "opus-4ch-discrete.ogg",
            Ffmpeg(&[
                "-ar",
                "48000",
                "-ac",
                "4",
                "-c:a",
                "libopus",
                "-b:a",
                "384k",
                "-mapping_family",
                "255",
            ]),
        ),
        (
            "opus-stereo.webm",
            Ffmpeg(&[
                "-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "128k",
            ]),
        ),
        (
            "opus-48k.mka",
            Ffmpeg(&["-ar", "48000", "-c:a", "libopus", "-b:a", "96k"]),
        ),
        (
            "vp8-opus.webm",
            Video(&[
                "-c:v", "libvpx", "-ar", "48000", "-c:a", "libopus", "-b:a", "96k",
            ]),
        ),
        (
            "vp8-vorbis.webm",
            Video(&[
                "-c:v",
                "libvpx",
                "-ar",
                "44100",
                "-c:a",
                "libvorbis",
                "-q:a",
                "6",
            ]),
        ),
        (
            "h264-opus.mkv",
            Video(&[
                "-c:v", "libx264", "-ar", "48000", "-c:a", "libopus", "-b:a", "96k",
            ]),
        ),
        (
            "h264-aac.mkv",
            Video(&[
                "-c:v", "libx264", "-ar", "44100", "-c:a", "aac", "-b:a", "128k",
            ]),
        ),
        (
            "h264-aac.mp4",
            Video(&[
                "-c:v", "libx264", "-ar", "44100", "-c:a", "aac", "-b:a", "128k",
            ]),
        ),
        (
            "h264-aac.mov",
            Video(&[
                "-c:v", "libx264", "-ar", "48000", "-c:a", "aac", "-b:a", "128k",
            ]),
        ),
    ];
    let seconds = format!("{:.3}", reference.len() as f64 / SAMPLE_RATE as f64);
    let mut failures = Vec::new();
    for (name, tool) in variants {
        let out = tmp.path().join(name);
        let st = match tool {
            Sox(opts) => Command::new("sox").arg(&src).args(*opts).arg(&out).status(),
            Ffmpeg(opts) => Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
                .arg(&src)
                .args(*opts)
                .arg(&out)
                .status(),
            Video(opts) => Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
                .arg(&src)
                .args([
                    "-f",
                    "lavfi",
                    "-t",
                    &seconds,
                    "-i",
                    "testsrc=size=96x64:rate=10",
                ])
                .args(["-map", "1:v:0", "-map", "0:a:0", "-pix_fmt", "yuv420p"])
                .args(*opts)
                .arg(&out)
                .status(),
        }
        .unwrap();
        assert!(st.success(), "writing {name} failed");
        let x = match audio::load_file(&out, DecodeLimits::default()) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        // Matroska has no edit list: AAC's encoder priming and Vorbis's
        // padding stay in, for ffmpeg as for earshot. Those are held to
        // ffmpeg's own decode of the file, not to the source.
        let against_ffmpeg = ["h264-aac.mkv", "vp8-vorbis.webm"].contains(name);
        let want = if against_ffmpeg {
            ffmpeg_f32(&["--", "-ar", "16000"], &out)
        } else {
            reference.clone()
        };
        let c = correlation(&want, &x);
        let lag = best_lag(&want, &x, 500);
        let dlen = x.len() as isize - want.len() as isize;
        let vs = if against_ffmpeg { " (vs ffmpeg)" } else { "" };
        println!("{name:<19} len Δ {dlen:+}  lag {lag:+}  correlation {c:.5}{vs}");
        // Length: lossless within 2 samples; MP4 edit lists are in ms.
        if c <= 0.99 || lag != 0 || dlen.abs() > 16 {
            failures.push(format!(
                "{name}: correlation {c:.5}, lag {lag}, length Δ {dlen}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
