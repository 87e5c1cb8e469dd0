//! Any bytes, under any extension hint, through the whole audio front end:
//! decoding (symphonia, the Ogg/Matroska Opus readers, the MP4 edit-list
//! reader), mixing to mono, resampling to 16 kHz and Whisper's log-mel
//! features. The first byte picks the hint, as an upload's file name would.
#![no_main]

use earshot_inference::audio::{self, DecodeLimits};
use earshot_inference::mel::MelExtractor;
use libfuzzer_sys::fuzz_target;

// Ensure the shared allocator cap is linked in.
use earshot_fuzz as _;

/// Extension hints an upload can carry (`None`: a name without one).
const HINTS: &[Option<&str>] = &[
    None,
    Some("wav"),
    Some("flac"),
    Some("mp3"),
    Some("ogg"),
    Some("opus"),
    Some("webm"),
    Some("mp4"),
    Some("m4a"),
    Some("mkv"),
    Some("aac"),
    Some("txt"),
];

/// Decoding stops at this much audio, like the server's `--max-audio-seconds`
/// (3600 s there): a valid file that is merely long is not a hang.
const MAX_SECONDS: f64 = 30.0;

/// libfuzzer-sys aborts on any panic, even one caught. The audio module
/// contains panics inside symphonia (`audio::guarded`: a typed
/// `AudioError::Corrupt`, as production sees it), so this target goes back
/// to the default hook; a panic that escapes still reaches libfuzzer-sys,
/// which aborts and saves the input.
fn init() {
    drop(std::panic::take_hook());
}

fuzz_target!(init: init(), |data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let hint = HINTS[sel as usize % HINTS.len()];
    let limits = DecodeLimits {
        max_duration_s: Some(MAX_SECONDS),
    };
    let Ok(samples) = audio::load_bytes(bytes.to_vec(), hint, limits) else {
        return;
    };
    // Resampling may overshoot the cap by at most a filter's length.
    assert!(
        samples.len() as f64 <= (MAX_SECONDS + 1.0) * audio::SAMPLE_RATE as f64,
        "{} samples after a {MAX_SECONDS} s cap",
        samples.len()
    );
    static MEL: std::sync::OnceLock<MelExtractor> = std::sync::OnceLock::new();
    let mel = MEL.get_or_init(|| MelExtractor::new(80)).compute(&samples);
    assert!(mel.data.iter().all(|v| v.is_finite()), "non-finite log-mel");
});
