//! Audio in: any container/codec symphonia knows, plus Opus in Ogg, WebM and
//! Matroska (libopus; see `opus.rs` for why those containers are read
//! here), from a file or from bytes, to 16 kHz mono `f32` — the only shape
//! Whisper accepts.
//!
//! Decoding is streaming and bounded: nothing is pre-allocated from a header's
//! claimed length (a WAV can claim 4 GB and hold 40 bytes), and decoding stops
//! with [`AudioError::TooLong`] once a caller's duration cap is passed, so a
//! hostile upload costs at most `max_duration` worth of memory. Audio at
//! another rate (Opus's 48 kHz, MP3's and AAC's 44.1 or 48 kHz) is
//! resampled to 16 kHz as it decodes ([`KaiserStream`] on a thread beside
//! the decoder), so its source-rate samples are never all held.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

mod matroska;
mod ogg;
mod opus;

/// Whisper's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Lowest source sample rate accepted. Nothing real records below 1 kHz
/// (telephony is 8 kHz); a "1 Hz" header is hostile, and would turn each
/// stored sample into a second of audio to transcribe.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest source sample rate accepted: the top of what recorders produce.
/// Audio is held at its source rate until resampled, so the rate multiplies
/// the memory a duration limit allows; a 768 kHz "bomb" would hold 48×
/// the samples of the same duration at 16 kHz.
pub const MAX_SAMPLE_RATE: u32 = 192_000;

fn check_rate(rate: u32) -> Result<u32, AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(AudioError::BadSampleRate(rate))
    }
}

/// Runs a third-party reader or decoder call, turning a panic inside it
/// (symphonia asserts on some absurd headers, e.g. a 0 Hz WAV) into a typed
/// error: one hostile upload must not take down the worker or the server.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, AudioError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        AudioError::Corrupt(format!("the {what} rejected the stream: {msg}"))
    })
}

/// Why a piece of audio could not be turned into samples.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("audio input is empty (0 bytes)")]
    Empty,
    #[error("not a recognised audio container: {0}")]
    Unrecognized(String),
    #[error(
        "unsupported codec {codec}: earshot decodes PCM WAV, FLAC, MP3, Vorbis, Opus, AAC and ALAC"
    )]
    UnsupportedCodec { codec: String },
    #[error("the container holds no audio track (a video without sound?)")]
    NoAudioTrack,
    #[error("audio stream is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("audio is longer than the {limit_s:.0} s limit")]
    TooLong { limit_s: f64 },
    #[error(
        "invalid sample rate {0} Hz: earshot takes {MIN_SAMPLE_RATE} Hz to {MAX_SAMPLE_RATE} Hz"
    )]
    BadSampleRate(u32),
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Limits applied while decoding untrusted audio.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Stop with [`AudioError::TooLong`] past this many seconds of audio.
    pub max_duration_s: Option<f64>,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // Four hours: far beyond a meeting, far below what exhausts memory
        // (4 h of 16 kHz f32 is ~920 MB).
        Self {
            max_duration_s: Some(4.0 * 3600.0),
        }
    }
}

/// Most samples one byte of a stream can decode to, for
/// [`reserve_samples`]: PCM gives at most one per byte, the lowest
/// bitrates symphonia decodes (AAC-HE at 16 kbit/s, 48 kHz) about 24.
const MAX_SAMPLES_PER_BYTE: u64 = 32;

/// Samples to reserve for a decoded track before its first packet: the
/// frame count its header gives, never more than the duration limit or
/// [`MAX_SAMPLES_PER_BYTE`] times the stream's length allows (a header can
/// lie). Growing by doubling instead ends with up to twice the samples'
/// size reserved, and the smaller buffers freed on the way stay with the
/// allocator: with that and the copy [`into_16k`] avoids, `diarize`'s
/// peak RSS grew 8.0 MB per minute of audio, now 4.5 (the 16 kHz samples
/// are 3.84). `0` (grow as needed) when the header does not say.
fn reserve_samples(
    n_frames: Option<u64>,
    rate: u32,
    limits: DecodeLimits,
    byte_len: Option<u64>,
) -> usize {
    let Some(mut n) = n_frames else { return 0 };
    match limits.max_duration_s {
        Some(max) if rate > 0 && max.is_finite() && max >= 0.0 => {
            n = n.min((max * rate as f64).ceil() as u64 + 1);
        }
        Some(_) => return 0,
        None => {}
    }
    match byte_len {
        Some(len) => n = n.min(len.saturating_mul(MAX_SAMPLES_PER_BYTE)),
        None => return 0,
    }
    usize::try_from(n).unwrap_or(0)
}

/// Decoded audio, already mixed down to mono: at its source rate from the
/// public `decode_*` functions.
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// The codec that produced it, for logs and metrics.
    pub codec: String,
    /// True when the stream ended early but some audio was recovered.
    pub truncated: bool,
}

impl DecodedAudio {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate.max(1) as f64
    }
}

/// Decode a file into 16 kHz mono samples.
pub fn load_file(path: &Path, limits: DecodeLimits) -> Result<Vec<f32>, AudioError> {
    into_16k(decode_path(path, limits, Some(SAMPLE_RATE))?)
}

/// The decoded samples at 16 kHz: audio already at that rate (WAV at
/// 16 kHz, or resampled as it was decoded) is handed over as it is, not
/// copied (a copy is a second 230 MB an hour of audio at the peak, held
/// until the decoded buffer is freed).
fn into_16k(decoded: DecodedAudio) -> Result<Vec<f32>, AudioError> {
    if decoded.sample_rate == SAMPLE_RATE {
        return Ok(decoded.samples);
    }
    resample_to_16k(&decoded.samples, decoded.sample_rate)
}

/// Decode bytes held in memory (an upload, an S3 object) into 16 kHz mono.
pub fn load_bytes(
    bytes: Vec<u8>,
    extension: Option<&str>,
    limits: DecodeLimits,
) -> Result<Vec<f32>, AudioError> {
    into_16k(decode_held(bytes, extension, limits, Some(SAMPLE_RATE))?)
}

/// Decode a file at its own rate, mono.
pub fn decode_file(path: &Path, limits: DecodeLimits) -> Result<DecodedAudio, AudioError> {
    decode_path(path, limits, None)
}

/// Decode a file, mono, at its own rate or, resampled as it decodes
/// ([`opus::OpusSink`], [`MonoOut`]), at `out_rate` (where a
/// [`KaiserStream`] has a filter for the two rates; otherwise at its own).
fn decode_path(
    path: &Path,
    limits: DecodeLimits,
    out_rate: Option<u32>,
) -> Result<DecodedAudio, AudioError> {
    let io_err = |source| AudioError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(AudioError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other("is a directory"),
        });
    }
    if meta.len() == 0 {
        return Err(AudioError::Empty);
    }
    let file = std::fs::File::open(path).map_err(io_err)?;
    let ext = path.extension().and_then(|e| e.to_str());
    decode_source(Box::new(file), ext, limits, out_rate)
}

/// Decode in-memory bytes at their own rate, mono.
pub fn decode_bytes(
    bytes: Vec<u8>,
    extension: Option<&str>,
    limits: DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
    decode_held(bytes, extension, limits, None)
}

/// [`decode_path`] for bytes held in memory.
fn decode_held(
    bytes: Vec<u8>,
    extension: Option<&str>,
    limits: DecodeLimits,
    out_rate: Option<u32>,
) -> Result<DecodedAudio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    decode_source(Box::new(Cursor::new(bytes)), extension, limits, out_rate)
}

fn decode_source(
    mut source: Box<dyn MediaSource>,
    extension: Option<&str>,
    limits: DecodeLimits,
    out_rate: Option<u32>,
) -> Result<DecodedAudio, AudioError> {
    // Opus in Ogg and Matroska/WebM is read here (symphonia has no Opus
    // decoder); Vorbis, FLAC, AAC... in those containers go on to symphonia.
    let mut magic = [0u8; 9];
    let n = read_up_to(&mut *source, &mut magic).map_err(|e| AudioError::Corrupt(e.to_string()))?;
    let magic = &magic[..n];
    let mut with_mkv = false;
    let rewind = |s: &mut Box<dyn MediaSource>| {
        s.seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| AudioError::Corrupt(e.to_string()))
    };
    rewind(&mut source)?;
    if magic.starts_with(b"RIFF") {
        // The WAV reader asserts (panics) on a 0 Hz rate; name it instead.
        let mut head = [0u8; 512];
        let n =
            read_up_to(&mut *source, &mut head).map_err(|e| AudioError::Corrupt(e.to_string()))?;
        if let Some(rate) = wav_header_rate(&head[..n]) {
            check_rate(rate)?;
        }
        rewind(&mut source)?;
    }
    if magic.starts_with(b"OggS") {
        if let Some(d) = ogg::decode(&mut *source, limits, out_rate)? {
            return Ok(d);
        }
        rewind(&mut source)?;
    } else if magic.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        if let Some(d) = matroska::decode(&mut *source, limits, out_rate)? {
            return Ok(d);
        }
        // Other codecs go to symphonia's Matroska reader, once every element
        // is known to fit in the file (see `probe()`).
        rewind(&mut source)?;
        ebml_fits(&mut *source)?;
        rewind(&mut source)?;
        with_mkv = true;
    } else if magic.starts_with(b"#!AMR") {
        // AMR-NB/WB storage format (RFC 4867 §5): no maintained Rust
        // decoder was found; see the README.
        let wb = magic.starts_with(b"#!AMR-WB");
        return Err(AudioError::UnsupportedCodec {
            codec: if wb { "amr-wb" } else { "amr" }.into(),
        });
    }
    flac_metadata_fits(&mut *source)?;
    rewind(&mut source)?;
    // symphonia 0.5's MP4 reader parses edit lists but does not apply them, so
    // AAC's encoder priming (1024 samples from most encoders) would shift
    // all audio late by ~23 ms at 44.1 kHz, and the frame padding would
    // lengthen it. Read the edit here and trim after decoding.
    let mp4_track = mp4_first_sound_track(&mut *source);
    let mp4_edit = mp4_track
        .as_ref()
        .and_then(|t| mp4_track_edit(&mut *source, t));
    let mp4_entry = mp4_track
        .as_ref()
        .and_then(|t| mp4_track_entry(&mut *source, t));
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| AudioError::Corrupt(e.to_string()))?;
    let source_len = source.byte_len();
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let probed = guarded("container reader", || {
        probe(with_mkv).format(
            &hint,
            mss,
            &FormatOptions {
                enable_gapless: true,
                ..Default::default()
            },
            &MetadataOptions::default(),
        )
    })?
    .map_err(|e| match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Corrupt("stream ends inside its header".into())
        }
        other => AudioError::Unrecognized(other.to_string()),
    })?;
    let mut format = probed.format;
    let Some(track) = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
    else {
        // symphonia gives sample entries it does not know no codec; a 3GP
        // voice memo holds AMR, which deserves its name in the error.
        return Err(match mp4_entry {
            Some(e) => AudioError::UnsupportedCodec {
                codec: match &e {
                    b"samr" => "amr".into(),
                    b"sawb" => "amr-wb".into(),
                    other => String::from_utf8_lossy(other).trim().to_string(),
                },
            },
            None => AudioError::NoAudioTrack,
        });
    };
    let track_id = track.id;
    let params = track.codec_params.clone();
    let codec_name = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map(|d| d.short_name.to_string())
        .unwrap_or_else(|| codec_label(params.codec));
    let mut decoder = guarded("decoder", || {
        symphonia::default::get_codecs().make(&params, &DecoderOptions::default())
    })?
    .map_err(|_| AudioError::UnsupportedCodec {
        codec: codec_name.clone(),
    })?;

    let mut sample_rate = params.sample_rate.unwrap_or(0);
    if sample_rate != 0 {
        check_rate(sample_rate)?;
    }
    // Made at the first decoded samples, once the rate is certain.
    let mut out: Option<MonoOut> = None;
    // Samples decoded, before any edit: what the limits count.
    let mut decoded_n = 0usize;
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut truncated = false;
    let mut max_samples: Option<usize> = None;
    // One packet's samples mixed down.
    let mut mono: Vec<f32> = Vec::new();
    loop {
        let packet = match guarded("container reader", || format.next_packet())? {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                // Normal end of stream for most demuxers; an early end for a
                // truncated file. Either way, keep what decoded.
                break;
            }
            Err(SymError::ResetRequired) => break,
            Err(SymError::DecodeError(msg)) => {
                truncated = true;
                tracing::debug!("demux error, stopping: {msg}");
                break;
            }
            Err(e) => {
                if decoded_n == 0 {
                    return Err(AudioError::Corrupt(e.to_string()));
                }
                truncated = true;
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match guarded("decoder", || decoder.decode(&packet))? {
            Ok(d) => d,
            // A damaged packet: skip it like every player does.
            Err(SymError::DecodeError(msg)) => {
                tracing::debug!("skipping undecodable packet: {msg}");
                truncated = true;
                continue;
            }
            Err(SymError::IoError(_)) => {
                truncated = true;
                break;
            }
            Err(SymError::Unsupported(what)) => {
                return Err(AudioError::UnsupportedCodec {
                    codec: format!("{codec_name} ({what})"),
                })
            }
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        let spec = *decoded.spec();
        if sample_rate == 0 {
            sample_rate = check_rate(spec.rate)?;
        }
        if max_samples.is_none() {
            max_samples = limits
                .max_duration_s
                .map(|s| (s * sample_rate.max(1) as f64).ceil() as usize);
        }
        let channels = spec.channels.count().max(1);
        let frames = decoded.frames();
        if frames == 0 {
            continue;
        }
        let needed = (frames * channels) as u64;
        let sb = match &mut buf {
            Some(b) if b.capacity() as u64 >= needed => b,
            _ => {
                buf = Some(SampleBuffer::<f32>::new(frames as u64, spec));
                buf.as_mut().expect("just set")
            }
        };
        sb.copy_interleaved_ref(decoded);
        let inter = sb.samples();
        let scale = 1.0 / channels as f32;
        mono.clear();
        mono.extend(inter.chunks_exact(channels).map(|frame| {
            let s: f32 = frame.iter().sum::<f32>() * scale;
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }));
        decoded_n += mono.len();
        let sink = out.get_or_insert_with(|| {
            let reserve = reserve_samples(params.n_frames, sample_rate, limits, source_len);
            MonoOut::new(sample_rate, out_rate, reserve, mp4_edit.as_ref())
        });
        sink.push(&mono)?;
        if let Some(max) = max_samples {
            if decoded_n > max {
                return Err(AudioError::TooLong {
                    limit_s: limits.max_duration_s.unwrap_or(0.0),
                });
            }
        }
    }
    if sample_rate == 0 {
        if decoded_n == 0 {
            // A header with no frames at all: empty audio, not an error.
            sample_rate = SAMPLE_RATE;
        } else {
            return Err(AudioError::BadSampleRate(0));
        }
    }
    if decoded_n == 0 && truncated {
        return Err(AudioError::Corrupt(
            "no decodable audio before the stream broke".into(),
        ));
    }
    let (samples, sample_rate) = match out {
        Some(o) => o.finish(sample_rate)?,
        None => (Vec::new(), sample_rate),
    };
    Ok(DecodedAudio {
        samples,
        sample_rate,
        codec: codec_name,
        truncated,
    })
}

/// Where a symphonia decoder's mono samples go: kept at the source rate,
/// or, when the caller wants another rate, resampled as they come
/// ([`Resampling`]), so a long MP3, AAC or FLAC recording is never held
/// whole at 44.1 or 48 kHz. MP4's edit (encoder priming and padding) is
/// taken off on the way in. Either way the result is that of decoding
/// whole, trimming, then resampling, bit for bit.
struct MonoOut {
    /// Samples at the source rate, when not resampling.
    whole: Vec<f32>,
    resampler: Option<Resampling>,
    /// Leading samples still to drop (the edit's start).
    skip: usize,
    /// Samples still to keep after them (the edit's length).
    keep: usize,
}

impl MonoOut {
    /// `reserve`: source-rate samples to make room for once.
    fn new(rate: u32, out_rate: Option<u32>, reserve: usize, edit: Option<&Mp4Edit>) -> Self {
        let (skip, keep) = edit.map_or((0, None), |e| e.window(rate));
        let resampler = out_rate.and_then(|to| Resampling::new(rate, to, reserve));
        let mut whole = Vec::new();
        if resampler.is_none() {
            // Only address space until written; where the system refuses
            // even that (strict overcommit), the buffer grows instead.
            let _ = whole.try_reserve_exact(reserve);
        }
        Self {
            whole,
            resampler,
            skip,
            keep: keep.unwrap_or(usize::MAX),
        }
    }

    fn push(&mut self, x: &[f32]) -> Result<(), AudioError> {
        let drop = self.skip.min(x.len());
        self.skip -= drop;
        let x = &x[drop..];
        let x = &x[..x.len().min(self.keep)];
        self.keep -= x.len();
        match &mut self.resampler {
            Some(r) => r.push(x),
            None => {
                self.whole.extend_from_slice(x);
                Ok(())
            }
        }
    }

    /// The samples and their rate (`rate`, the source's, unless resampled).
    fn finish(self, rate: u32) -> Result<(Vec<f32>, u32), AudioError> {
        match self.resampler {
            Some(r) => {
                let to = r.rate;
                Ok((r.finish()?, to))
            }
            None => Ok((self.whole, rate)),
        }
    }
}

/// The sample rate of a WAV's `fmt ` chunk, when it is within `head`.
fn wav_header_rate(head: &[u8]) -> Option<u32> {
    if head.len() < 12 || &head[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12usize;
    while pos + 8 <= head.len() {
        let len = u32::from_le_bytes(head[pos + 4..pos + 8].try_into().ok()?) as usize;
        if &head[pos..pos + 4] == b"fmt " {
            let rate = head.get(pos + 12..pos + 16)?;
            return Some(u32::from_le_bytes(rate.try_into().ok()?));
        }
        pos = pos.checked_add(8)?.checked_add(len + (len & 1))?;
    }
    None
}

/// symphonia's container readers; its Matroska one only on request.
///
/// Fuzzing (`fuzz/`, target `audio`) found that symphonia 0.5's Matroska
/// reader allocates whatever size an element claims before reading it: a
/// 3 KB upload asked for 3 TB, and a failed allocation aborts the whole
/// process (server or worker), which `guarded` cannot catch. Its probe also
/// scans past the start of a stream, so any bytes holding the EBML magic
/// reached it (a RIFF header with a Matroska body did). So that reader is
/// only used for files that start as Matroska and pass [`ebml_fits`].
fn probe(with_mkv: bool) -> &'static symphonia::core::probe::Probe {
    use symphonia::core::probe::Probe;
    static PROBES: [std::sync::OnceLock<Probe>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    PROBES[with_mkv as usize].get_or_init(|| {
        use symphonia::default::formats::*;
        let mut p = Probe::default();
        p.register_all::<AdtsReader>();
        p.register_all::<CafReader>();
        p.register_all::<FlacReader>();
        p.register_all::<IsoMp4Reader>();
        p.register_all::<MpaReader>();
        p.register_all::<AiffReader>();
        p.register_all::<WavReader>();
        p.register_all::<OggReader>();
        if with_mkv {
            p.register_all::<MkvReader>();
        }
        p.register_all::<symphonia_metadata::id3v2::Id3v2Reader>();
        p
    })
}

/// Matroska master elements (RFC 9559) whose children symphonia reads.
const EBML_MASTERS: &[u32] = &[
    0x1A45_DFA3, // EBML header
    0x1853_8067, // Segment
    0x114D_9B74, // SeekHead
    0x4DBB,      // Seek
    0x1549_A966, // Info
    0x1654_AE6B, // Tracks
    0xAE,        // TrackEntry
    0xE0,        // Video
    0xE1,        // Audio
    0x6D80,      // ContentEncodings
    0x6240,      // ContentEncoding
    0x1F43_B675, // Cluster
    0xA0,        // BlockGroup
    0x1C53_BB6B, // Cues
    0xBB,        // CuePoint
    0xB7,        // CueTrackPositions
    0x1254_C367, // Tags
    0x7373,      // Tag
    0x63C0,      // Targets
    0x67C8,      // SimpleTag
    0x1043_A770, // Chapters
    0x45B9,      // EditionEntry
    0xB6,        // ChapterAtom
    0x80,        // ChapterDisplay
    0x1941_A469, // Attachments
    0x61A7,      // AttachedFile
];

/// How far past the end of a file an element may claim to run: a cut
/// upload's last cluster does, and symphonia still decodes what is there.
const EBML_CUT_SLACK: u64 = 16 << 20;

/// Checks that every element of a Matroska file (outside Opus tracks,
/// which `matroska.rs` reads itself) fits in its parent and the file, so
/// that symphonia's reader, which allocates each element's claimed size,
/// allocates at most the file's size (plus [`EBML_CUT_SLACK`]).
fn ebml_fits<R: Read + Seek + ?Sized>(r: &mut R) -> Result<(), AudioError> {
    let len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| AudioError::Corrupt(e.to_string()))?;
    let mut elements = 0usize;
    ebml_walk(
        r,
        0,
        len.saturating_add(EBML_CUT_SLACK),
        len,
        0,
        &mut elements,
    )
}

fn ebml_walk<R: Read + Seek + ?Sized>(
    r: &mut R,
    mut pos: u64,
    end: u64,
    file_len: u64,
    depth: usize,
    elements: &mut usize,
) -> Result<(), AudioError> {
    let bad = |m: String| AudioError::Corrupt(format!("Matroska: {m}"));
    if depth > 16 {
        return Err(bad("elements nested over 16 deep".into()));
    }
    // Elements are read from the file's bytes: past its end nothing is left.
    while pos < end.min(file_len) {
        *elements += 1;
        if *elements > 4_000_000 {
            return Err(bad("over 4 million elements".into()));
        }
        let mut head = [0u8; 12];
        r.seek(SeekFrom::Start(pos))
            .map_err(|e| AudioError::Corrupt(e.to_string()))?;
        let n = read_up_to(r, &mut head).map_err(|e| AudioError::Corrupt(e.to_string()))?;
        let head = &head[..n];
        // IDs keep their marker bit and take up to 4 bytes; sizes up to 8.
        let Some(&first) = head.first() else { break };
        let id_len = first.leading_zeros() as usize + 1;
        if id_len > 4 || head.len() < id_len + 1 {
            // A cut or junk tail: nothing for symphonia to size from.
            break;
        }
        let id = head[..id_len]
            .iter()
            .fold(0u32, |a, &b| (a << 8) | b as u32);
        let size_first = head[id_len];
        if size_first == 0 {
            return Err(bad(format!(
                "element {id:#x} has a size wider than 8 bytes"
            )));
        }
        let size_len = size_first.leading_zeros() as usize + 1;
        if head.len() < id_len + size_len {
            break;
        }
        let mut size = (size_first as u64) & (0xFF >> size_len);
        let mut unknown = size == (0xFF >> size_len);
        for &b in &head[id_len + 1..id_len + size_len] {
            size = (size << 8) | b as u64;
            unknown &= b == 0xFF;
        }
        let body = pos + (id_len + size_len) as u64;
        if unknown {
            // Unknown size (live recordings' Segment and Clusters): it runs
            // to its parent's end; read its children in line.
            pos = body;
            continue;
        }
        let elem_end = body
            .checked_add(size)
            .filter(|&e| e <= end)
            .ok_or_else(|| {
                bad(format!(
                    "element {id:#x} of {size} bytes at byte {pos} runs past its parent"
                ))
            })?;
        if EBML_MASTERS.contains(&id) {
            ebml_walk(r, body, elem_end, file_len, depth + 1, elements)?;
        }
        pos = elem_end;
    }
    Ok(())
}

/// Checks the FLAC metadata symphonia would read: wherever its probe could
/// find a `fLaC` marker (it scans the first MiB), every length inside a
/// VORBIS_COMMENT or PICTURE block must fit in that block.
///
/// Fuzzing found symphonia-metadata 0.5 allocating those lengths before
/// reading them (a 2.5 KB input asked for 4 GB for a picture's MIME type).
fn flac_metadata_fits<R: Read + Seek + ?Sized>(r: &mut R) -> Result<(), AudioError> {
    const PROBE_WINDOW: usize = 1 << 20;
    let io = |e: std::io::Error| AudioError::Corrupt(e.to_string());
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut window = vec![0u8; PROBE_WINDOW + 3];
    let n = read_up_to(r, &mut window).map_err(io)?;
    window.truncate(n);
    let starts: Vec<u64> = window
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"fLaC")
        .map(|(i, _)| i as u64 + 4)
        // symphonia's probe takes the first marker it finds; the first few
        // are all that can matter.
        .take(64)
        .collect();
    // Bounds the work on a file full of markers: 64 MiB examined at most.
    let mut budget: usize = 64 << 20;
    for mut pos in starts {
        for _ in 0..128 {
            let mut head = [0u8; 4];
            r.seek(SeekFrom::Start(pos)).map_err(io)?;
            if read_up_to(r, &mut head).map_err(io)? < 4 {
                break;
            }
            let kind = head[0] & 0x7F;
            let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            if kind == 4 || kind == 6 {
                budget = budget.checked_sub(len.max(4)).ok_or_else(|| {
                    AudioError::Corrupt("FLAC metadata: too many blocks to check".into())
                })?;
                let mut block = vec![0u8; len];
                let got = read_up_to(r, &mut block).map_err(io)?;
                block.truncate(got);
                if !flac_block_fits(kind, &block) {
                    return Err(AudioError::Corrupt(format!(
                        "FLAC metadata block (type {kind}) holds a length past its end"
                    )));
                }
            }
            if head[0] & 0x80 != 0 {
                break;
            }
            pos += 4 + len as u64;
        }
    }
    Ok(())
}

/// Whether the lengths inside a VORBIS_COMMENT (4) or PICTURE (6) block
/// stay inside it.
fn flac_block_fits(kind: u8, b: &[u8]) -> bool {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let ok = (|| -> Option<()> {
        if kind == 4 {
            let le = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
            let vendor = le(take(4)?);
            take(vendor)?;
            let count = le(take(4)?);
            for _ in 0..count {
                let n = le(take(4)?);
                take(n)?;
            }
        } else {
            let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
            take(4)?; // picture type
            let mime = be(take(4)?);
            take(mime)?;
            let desc = be(take(4)?);
            take(desc)?;
            take(16)?; // width, height, depth, colours
            let data = be(take(4)?);
            take(data)?;
        }
        Some(())
    })();
    ok.is_some()
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the source.
fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The presentation window of an MP4 audio track, from its edit list
/// (`moov/trak/edts/elst`): where playback starts in the decoded stream
/// (encoder priming to drop) and how long it lasts (padding to drop).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mp4Edit {
    /// Leading samples to drop, in the track's media timescale.
    media_time: u64,
    media_timescale: u32,
    /// Presentation length in the movie timescale; `None` when the edit
    /// does not say (0 in fragmented files).
    duration: Option<u64>,
    movie_timescale: u32,
}

impl Mp4Edit {
    /// The edit at `rate`: leading samples to drop, then how many to keep
    /// (`None`: all the rest).
    fn window(&self, rate: u32) -> (usize, Option<usize>) {
        let skip = (self.media_time as u128 * rate as u128 / self.media_timescale as u128) as usize;
        // The movie timescale is often 1000: round up, never cut audio.
        let keep = self.duration.map(|d| {
            usize::try_from((d as u128 * rate as u128).div_ceil(self.movie_timescale as u128))
                .unwrap_or(usize::MAX)
        });
        (skip, keep)
    }
}

/// One ISO-BMFF box: its type and the byte range of its body.
struct Mp4Box {
    kind: [u8; 4],
    body: u64,
    end: u64,
}

fn mp4_box<R: Read + Seek + ?Sized>(r: &mut R, pos: u64, limit: u64) -> Option<Mp4Box> {
    if pos.checked_add(8)? > limit {
        return None;
    }
    r.seek(SeekFrom::Start(pos)).ok()?;
    let mut h = [0u8; 8];
    r.read_exact(&mut h).ok()?;
    let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let kind = [h[4], h[5], h[6], h[7]];
    let (body, end) = match size {
        0 => (pos + 8, limit),
        1 => {
            let mut l = [0u8; 8];
            r.read_exact(&mut l).ok()?;
            (pos + 16, pos.checked_add(u64::from_be_bytes(l))?)
        }
        n => (pos + 8, pos + n),
    };
    (end >= body && end <= limit).then_some(Mp4Box { kind, body, end })
}

/// The children of a box body, in order (stops at the first malformed one).
fn mp4_children<R: Read + Seek + ?Sized>(r: &mut R, body: u64, end: u64) -> Vec<Mp4Box> {
    let mut out = Vec::new();
    let mut pos = body;
    while let Some(b) = mp4_box(r, pos, end) {
        pos = b.end;
        out.push(b);
        if out.len() > 4096 {
            break;
        }
    }
    out
}

fn read_at<R: Read + Seek + ?Sized, const N: usize>(r: &mut R, pos: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    r.seek(SeekFrom::Start(pos)).ok()?;
    r.read_exact(&mut b).ok()?;
    Some(b)
}

/// Timescale of an `mvhd` or `mdhd` body (same layout up to it).
fn mp4_timescale<R: Read + Seek + ?Sized>(r: &mut R, b: &Mp4Box) -> Option<u32> {
    let version = read_at::<_, 1>(r, b.body)?[0];
    let at = b.body + if version == 1 { 20 } else { 12 };
    let ts = u32::from_be_bytes(read_at::<_, 4>(r, at)?);
    (ts > 0).then_some(ts)
}

/// The first sound track of an MP4/MOV/3GP file, as the children of the
/// movie box, of the track box and of its media box. `None` when it has
/// none or is not MP4. Only box headers and a few fields are read.
struct Mp4SoundTrack {
    moov: Vec<Mp4Box>,
    trak: Vec<Mp4Box>,
    mdia: Vec<Mp4Box>,
}

fn mp4_first_sound_track<R: Read + Seek + ?Sized>(r: &mut R) -> Option<Mp4SoundTrack> {
    let head = read_at::<_, 8>(r, 0)?;
    if &head[4..8] != b"ftyp" {
        return None;
    }
    let len = r.seek(SeekFrom::End(0)).ok()?;
    let top = mp4_children(r, 0, len);
    let moov_box = top.iter().find(|b| &b.kind == b"moov")?;
    let moov = mp4_children(r, moov_box.body, moov_box.end);
    for trak_box in moov.iter().filter(|b| &b.kind == b"trak") {
        let trak = mp4_children(r, trak_box.body, trak_box.end);
        let Some(mdia_box) = trak.iter().find(|b| &b.kind == b"mdia") else {
            continue;
        };
        let mdia = mp4_children(r, mdia_box.body, mdia_box.end);
        let is_sound = mdia
            .iter()
            .find(|b| &b.kind == b"hdlr")
            .and_then(|h| read_at::<_, 4>(r, h.body + 8))
            .is_some_and(|t| &t == b"soun");
        if is_sound {
            return Some(Mp4SoundTrack { moov, trak, mdia });
        }
    }
    None
}

/// The edit of the first sound track of an MP4/M4A, when it is the simple
/// kind encoders write (one edit, normal rate). Anything else, or any
/// parse problem: `None`, and the audio is left as decoded.
#[cfg(test)]
fn mp4_audio_edit<R: Read + Seek + ?Sized>(r: &mut R) -> Option<Mp4Edit> {
    let track = mp4_first_sound_track(r)?;
    mp4_track_edit(r, &track)
}

/// [`mp4_audio_edit`] for a track already found.
fn mp4_track_edit<R: Read + Seek + ?Sized>(r: &mut R, t: &Mp4SoundTrack) -> Option<Mp4Edit> {
    let mvhd = t.moov.iter().find(|b| &b.kind == b"mvhd")?;
    let movie_timescale = mp4_timescale(r, mvhd)?;
    let media_timescale = mp4_timescale(r, t.mdia.iter().find(|b| &b.kind == b"mdhd")?)?;
    let edts = t.trak.iter().find(|b| &b.kind == b"edts")?;
    let elst = mp4_children(r, edts.body, edts.end)
        .into_iter()
        .find(|b| &b.kind == b"elst")?;
    let vf = read_at::<_, 8>(r, elst.body)?;
    let version = vf[0];
    let count = u32::from_be_bytes([vf[4], vf[5], vf[6], vf[7]]);
    if count != 1 {
        tracing::debug!(count, "mp4 edit list with {count} entries: not applied");
        return None;
    }
    let (duration, media_time, rate) = if version == 1 {
        let e = read_at::<_, 20>(r, elst.body + 8)?;
        (
            u64::from_be_bytes(e[0..8].try_into().ok()?),
            i64::from_be_bytes(e[8..16].try_into().ok()?),
            i16::from_be_bytes([e[16], e[17]]),
        )
    } else {
        let e = read_at::<_, 12>(r, elst.body + 8)?;
        (
            u32::from_be_bytes(e[0..4].try_into().ok()?) as u64,
            i32::from_be_bytes(e[4..8].try_into().ok()?) as i64,
            i16::from_be_bytes([e[8], e[9]]),
        )
    };
    if media_time < 0 || rate != 1 {
        return None;
    }
    Some(Mp4Edit {
        media_time: media_time as u64,
        media_timescale,
        duration: (duration > 0).then_some(duration),
        movie_timescale,
    })
}

/// The sample entry type (`mp4a`, `samr`, ...) of a sound track.
fn mp4_track_entry<R: Read + Seek + ?Sized>(r: &mut R, t: &Mp4SoundTrack) -> Option<[u8; 4]> {
    let child = |r: &mut R, parent: &Mp4Box, kind: &[u8; 4]| {
        mp4_children(r, parent.body, parent.end)
            .into_iter()
            .find(|b| &b.kind == kind)
    };
    let minf = t.mdia.iter().find(|b| &b.kind == b"minf")?;
    let stbl = child(r, minf, b"stbl")?;
    let stsd = child(r, &stbl, b"stsd")?;
    // stsd: version/flags (4), entry count (4), then the first entry's size
    // (4) and type (4).
    read_at::<_, 4>(r, stsd.body + 12)
}

fn codec_label(codec: symphonia::core::codecs::CodecType) -> String {
    use symphonia::core::codecs as c;
    match codec {
        c::CODEC_TYPE_OPUS => "opus".into(),
        c::CODEC_TYPE_SPEEX => "speex".into(),
        c::CODEC_TYPE_WAVPACK => "wavpack".into(),
        c::CODEC_TYPE_MONKEYS_AUDIO => "ape".into(),
        c::CODEC_TYPE_AC4 => "ac4".into(),
        c::CODEC_TYPE_EAC3 => "eac3".into(),
        c::CODEC_TYPE_DCA => "dts".into(),
        c::CODEC_TYPE_WMA => "wma".into(),
        other => format!("{other}"),
    }
}

/// Resample mono audio to 16 kHz with rubato's FFT resampler (band-limited,
/// no aliasing), compensating its delay so timestamps stay aligned.
pub fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    match KaiserResampler::new(rate, SAMPLE_RATE) {
        Some(k) => Ok(k.process(samples)),
        None => resample(samples, rate, SAMPLE_RATE),
    }
}

/// Exact-rational polyphase resampler with a Kaiser-windowed sinc: the
/// filter design ffmpeg's libswresample uses by default (cutoff 0.97 of the
/// lower Nyquist, 32 zero crossings scaled by the rate ratio, β = 9).
///
/// Why not rubato alone: faster-whisper and most Whisper deployments decode
/// through ffmpeg, and Whisper's greedy decoding is sensitive enough that the
/// resampler's roll-off near 8 kHz flipped words on 22.05 and 32 kHz input
/// (1.6% WER between earshot and faster-whisper, all on resampled clips).
/// Matching the filter removes that source of disagreement. Ratios with
/// more than 4096 phases (odd rates such as 44.101 kHz) use rubato.
pub struct KaiserResampler {
    /// Output rate / gcd: the number of filter phases.
    phases: usize,
    /// Input rate / gcd: input samples advanced per `phases` outputs.
    step: usize,
    taps: usize,
    center: usize,
    /// `phases × taps` coefficients, each phase summing to 1.
    bank: Vec<f32>,
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut sum, mut term, mut k) = (1.0f64, 1.0f64, 1.0f64);
    loop {
        term *= q / (k * k);
        let next = sum + term;
        if next == sum {
            return sum;
        }
        sum = next;
        k += 1.0;
    }
}

impl KaiserResampler {
    const MAX_PHASES: usize = 4096;
    const CUTOFF: f64 = 0.97;
    const FILTER_SIZE: f64 = 32.0;
    const BETA: f64 = 9.0;

    pub fn new(from: u32, to: u32) -> Option<Self> {
        if from == 0 || to == 0 || from == to {
            return None;
        }
        let g = gcd(from, to) as usize;
        let (phases, step) = (to as usize / g, from as usize / g);
        if phases > Self::MAX_PHASES {
            return None;
        }
        let factor = (to as f64 * Self::CUTOFF / from as f64).min(1.0);
        let taps = ((Self::FILTER_SIZE / factor).ceil() as usize).max(1);
        let center = (taps - 1) / 2;
        let mut bank = vec![0f32; phases * taps];
        let mut tab = vec![0f64; taps];
        for ph in 0..phases {
            let mut norm = 0.0;
            for (i, t) in tab.iter_mut().enumerate() {
                let d = (i as f64 - center as f64) - ph as f64 / phases as f64;
                let x = std::f64::consts::PI * d * factor;
                let sinc = if x == 0.0 { 1.0 } else { x.sin() / x };
                let w = 2.0 * x / (factor * taps as f64 * std::f64::consts::PI);
                *t = sinc * bessel_i0(Self::BETA * (1.0 - w * w).max(0.0).sqrt());
                norm += *t;
            }
            for (i, t) in tab.iter().enumerate() {
                bank[ph * taps + i] = (t / norm) as f32;
            }
        }
        Some(Self {
            phases,
            step,
            taps,
            center,
            bank,
        })
    }

    /// Resample a whole signal; the output is centred on the input (no
    /// delay) and `ceil(len × to / from)` samples long. Edges reflect.
    pub fn process(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len();
        if n == 0 {
            return Vec::new();
        }
        let out_len = (n * self.phases).div_ceil(self.step);
        let mut out = vec![0f32; out_len];
        self.interior_into(x, 0, 0, &mut out, |k| self.edge(k, n, |i| x[i]));
        out
    }

    /// Output `k`'s phase and first input sample (negative before the
    /// signal's start).
    fn window(&self, k: usize) -> (usize, isize) {
        let num = k * self.step;
        let (i0, ph) = (num / self.phases, num % self.phases);
        (ph, i0 as isize - self.center as isize)
    }

    /// Outputs `first..first + out.len()`, in parallel, from `x`, which
    /// holds the input from sample `base` on. A window that leaves `x` goes
    /// to `edge` (with the whole input in `x`: a window past either end of
    /// the signal). Interior outputs are computed here only and edge ones
    /// in [`Self::edge`] only, for [`Self::process`] and [`KaiserStream`]
    /// alike, so the two agree bit for bit.
    fn interior_into(
        &self,
        x: &[f32],
        base: usize,
        first: usize,
        out: &mut [f32],
        edge: impl Fn(usize) -> f32 + Sync,
    ) {
        use rayon::prelude::*;
        out.par_chunks_mut(1 << 14)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (j, o) in chunk.iter_mut().enumerate() {
                    let k = first + c * (1 << 14) + j;
                    let (ph, start) = self.window(k);
                    let h = &self.bank[ph * self.taps..(ph + 1) * self.taps];
                    *o = match usize::try_from(start - base as isize) {
                        Ok(s) if s + self.taps <= x.len() => {
                            h.iter().zip(&x[s..s + self.taps]).map(|(a, b)| a * b).sum()
                        }
                        _ => edge(k),
                    };
                }
            });
    }

    /// Output `k` of a signal `n` samples long whose window crosses an end:
    /// samples past the ends reflect (`get` reads input sample `i < n`).
    fn edge(&self, k: usize, n: usize, get: impl Fn(usize) -> f32) -> f32 {
        let (ph, start) = self.window(k);
        let h = &self.bank[ph * self.taps..(ph + 1) * self.taps];
        let at = |i: isize| -> f32 {
            if n == 1 {
                return get(0);
            }
            let period = 2 * (n as isize - 1);
            let m = i.rem_euclid(period);
            get(if m >= n as isize {
                (period - m) as usize
            } else {
                m as usize
            })
        };
        h.iter()
            .enumerate()
            .map(|(t, a)| a * at(start + t as isize))
            .sum()
    }
}

/// [`KaiserResampler::process`] fed piece by piece: the input is held only
/// until every output whose window covers it is written, so decoding an
/// hour of 48 kHz Opus holds the 16 kHz result and a few blocks of input,
/// not the whole recording at 48 kHz first (three times the samples). The
/// output is `process`'s on the concatenated input, bit for bit: the same
/// function computes every sample, windows that cross the signal's start
/// wait (with its first `taps` samples kept) until [`Self::finish`], when
/// the length is known and they can reflect as `process`'s do.
pub struct KaiserStream {
    k: KaiserResampler,
    /// Input from sample `base` on that some pending output still needs.
    held: Vec<f32>,
    base: usize,
    /// The signal's first `taps` samples, for the outputs whose windows
    /// start before it (reflected).
    head: Vec<f32>,
    /// Input samples pushed so far.
    n: usize,
    /// Outputs written (the first `lead` of them placeholders until
    /// [`Self::finish`]).
    out: Vec<f32>,
    lead: usize,
}

impl KaiserStream {
    /// Interior outputs are computed once this many are ready, in parallel.
    const BLOCK: usize = 1 << 18;

    /// `None` where [`KaiserResampler::new`] is (equal rates, or more than
    /// 4096 phases).
    pub fn new(from: u32, to: u32) -> Option<Self> {
        let k = KaiserResampler::new(from, to)?;
        // Outputs whose window starts before the signal (k·step <
        // center·phases): written at finish.
        let lead = (k.center * k.phases).div_ceil(k.step);
        Some(Self {
            head: Vec::with_capacity(k.taps),
            k,
            held: Vec::new(),
            base: 0,
            n: 0,
            out: Vec::new(),
            lead,
        })
    }

    /// Reserves room for the output of `n_in` input samples in all
    /// (fallible: a refusal leaves the output to grow as it goes).
    pub fn reserve(&mut self, n_in: usize) {
        let want = n_in
            .saturating_mul(self.k.phases)
            .div_ceil(self.k.step)
            .saturating_sub(self.out.len());
        let _ = self.out.try_reserve_exact(want);
    }

    /// Appends input samples, writing every output whose window they
    /// complete (in blocks of [`Self::BLOCK`]).
    pub fn push(&mut self, x: &[f32]) {
        let want = self.k.taps.saturating_sub(self.head.len()).min(x.len());
        self.head.extend_from_slice(&x[..want]);
        self.held.extend_from_slice(x);
        self.n += x.len();
        if self.ready() >= Self::BLOCK {
            self.drain(self.ready());
        }
    }

    /// Outputs past those written whose windows lie inside the input so far.
    fn ready(&self) -> usize {
        let first = self.out.len().max(self.lead);
        // Output k's window ends inside the input while
        // floor(k·step / phases) − center + taps ≤ n, that is while
        // k·step < (n + center − taps + 1)·phases.
        let end = match (self.n + self.k.center + 1).checked_sub(self.k.taps) {
            Some(m) => (m * self.k.phases).div_ceil(self.k.step),
            None => 0,
        };
        end.saturating_sub(first)
    }

    /// Writes the next `count` outputs (all interior), then lets go of
    /// input no later output needs.
    fn drain(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let first = self.out.len().max(self.lead);
        self.out.resize(first + count, 0.0);
        let (held, base) = (&self.held, self.base);
        self.k
            .interior_into(held, base, first, &mut self.out[first..], |k| {
                unreachable!("output {k} is interior by `ready`")
            });
        let keep_from = (self.k.window(first + count).1.max(0) as usize).min(self.n);
        if keep_from > self.base {
            self.held.drain(..keep_from - self.base);
            self.base = keep_from;
        }
    }

    /// The whole output: `process` of everything pushed.
    pub fn finish(mut self) -> Vec<f32> {
        let n = self.n;
        if n == 0 {
            return Vec::new();
        }
        let out_len = (n * self.k.phases).div_ceil(self.k.step);
        // The rest of the interior outputs, then the windows that cross
        // either end, reflected over the now known length.
        let first = self.out.len().max(self.lead).min(out_len);
        let count = self.ready().min(out_len - first);
        self.drain(count);
        let tail_from = self.out.len().max(self.lead.min(out_len));
        self.out.resize(out_len, 0.0);
        let (head, held, base) = (&self.head, &self.held, self.base);
        let get = |i: usize| {
            if i < head.len() {
                head[i]
            } else {
                held[i - base]
            }
        };
        for k in (0..self.lead.min(out_len)).chain(tail_from..out_len) {
            self.out[k] = self.k.edge(k, n, get);
        }
        self.out
    }
}

/// A [`KaiserStream`] on a thread of its own, fed a decoder's samples a
/// second at a time through a short queue: what lets a decoder hand over
/// its samples as it makes them instead of holding them all at the source
/// rate (an hour of 44.1 kHz MP3 is 635 MB of samples before its 230 MB at
/// 16 kHz; Opus at 48 kHz, 690 MB). Resampling costs about as much as
/// decoding Opus or MP3 (the filter's ~99 taps per 16 kHz sample), and
/// decoding is serial: side by side the two overlap instead of taking
/// turns. The queue bounds what waits between them.
struct Resampling {
    tx: std::sync::mpsc::SyncSender<Vec<f32>>,
    worker: std::thread::JoinHandle<Vec<f32>>,
    pending: Vec<f32>,
    chunk: usize,
    rate: u32,
}

impl Resampling {
    /// Messages the queue holds before decoding waits for the resampler.
    const QUEUE: usize = 8;

    /// `from` → `rate`; `None` (keep the source rate, resample afterwards)
    /// when the rates are equal, there is no filter for them, or no thread
    /// is to be had. The output is reserved for `reserve` input samples.
    fn new(from: u32, rate: u32, reserve: usize) -> Option<Self> {
        let mut k = KaiserStream::new(from, rate)?;
        k.reserve(reserve);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(Self::QUEUE);
        let worker = std::thread::Builder::new()
            .name("resample".into())
            .spawn(move || {
                for chunk in rx {
                    k.push(&chunk);
                }
                k.finish()
            })
            .ok()?;
        let chunk = from as usize;
        Some(Self {
            tx,
            worker,
            pending: Vec::with_capacity(chunk),
            chunk,
            rate,
        })
    }

    fn push(&mut self, x: &[f32]) -> Result<(), AudioError> {
        self.pending.extend_from_slice(x);
        if self.pending.len() >= self.chunk {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), AudioError> {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(self.chunk));
        // Fails only when the thread is gone (it panicked): `finish` says so.
        self.tx
            .send(chunk)
            .map_err(|_| AudioError::Resample("the resampling thread stopped".into()))
    }

    /// Everything resampled. Dropping a `Resampling` instead (decoding
    /// failed) closes the queue, and the thread ends on its own.
    fn finish(mut self) -> Result<Vec<f32>, AudioError> {
        if !self.pending.is_empty() {
            self.send()?;
        }
        drop(self.tx);
        self.worker
            .join()
            .map_err(|_| AudioError::Resample("the resampling thread panicked".into()))
    }
}

/// Resample mono audio between two rates.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == 0 {
        return Err(AudioError::BadSampleRate(from));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    // rubato's FFT resampler works in blocks of `k` rate-ratio units
    // (`k * from/g` samples in, `k * to/g` out, g = gcd) and delays by half an
    // input block. `output_delay()` reports that as `k * (to/g) / 2` output
    // samples, rounded down: exact only when `k` is even. With an odd `k` the
    // trim below leaves a fractional shift (1/3 sample from 48 kHz, -0.36
    // from 22.05 kHz) that skews every sample. So ask for an even `k`, about
    // 2048 input samples per block, in one sub-chunk.
    let unit_in = (from / gcd(from, to)) as usize;
    let chunk = 2 * (1024 / unit_in).max(1) * unit_in;
    let mut rs = FftFixedIn::<f32>::new(from as usize, to as usize, chunk, 1, 1)
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let expected = (samples.len() as u128 * to as u128).div_ceil(from as u128) as usize;
    let delay = rs.output_delay();
    let mut out: Vec<f32> = Vec::with_capacity(expected + delay + rs.output_frames_max());
    let mut pos = 0;
    let err = |e: rubato::ResampleError| AudioError::Resample(e.to_string());
    while pos + rs.input_frames_next() <= samples.len() {
        let n = rs.input_frames_next();
        let chunk = rs.process(&[&samples[pos..pos + n]], None).map_err(err)?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    if pos < samples.len() {
        let chunk = rs
            .process_partial(Some(&[&samples[pos..]]), None)
            .map_err(err)?;
        out.extend_from_slice(&chunk[0]);
    }
    // Flush the filter's tail until the delayed samples are out.
    while out.len() < expected + delay {
        let chunk = rs.process_partial::<&[f32]>(None, None).map_err(err)?;
        if chunk[0].is_empty() {
            break;
        }
        out.extend_from_slice(&chunk[0]);
    }
    let end = (delay + expected).min(out.len());
    Ok(out[delay.min(end)..end].to_vec())
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn wav_bytes(samples: &[i16], rate: u32, channels: u16, claimed_data: Option<u32>) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        let riff_len = claimed_data.map_or(36 + data_len, |c| c.saturating_add(36));
        v.extend_from_slice(&riff_len.to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        v.extend_from_slice(&(channels * 2).to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&claimed_data.unwrap_or(data_len).to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    #[test]
    fn decoding_reserves_what_the_header_promises_and_no_more() {
        // 100,003 samples (not a power of two): grown by doubling, the
        // buffer would end at 131,072 or more.
        let pcm: Vec<i16> = (0..100_003).map(|i| ((i * 37) % 2000) as i16).collect();
        let d = decode_bytes(
            wav_bytes(&pcm, 16_000, 1, None),
            Some("wav"),
            DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(d.samples.len(), pcm.len());
        assert!(
            d.samples.capacity() <= pcm.len() + 1,
            "{} reserved for {} samples",
            d.samples.capacity(),
            pcm.len()
        );
        // At 16 kHz the decoded samples are the result, uncopied and intact.
        let x = load_bytes(
            wav_bytes(&pcm, 16_000, 1, None),
            Some("wav"),
            DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(x, d.samples);

        // What a header claims is only believed up to the limit and what
        // the stream's length can hold.
        let lim = |s: f64| DecodeLimits {
            max_duration_s: Some(s),
        };
        assert_eq!(
            reserve_samples(Some(1000), 16_000, lim(3600.0), Some(10_000)),
            1000
        );
        assert_eq!(
            reserve_samples(Some(u64::MAX), 16_000, lim(2.0), Some(u64::MAX)),
            32_001
        );
        assert_eq!(
            reserve_samples(Some(1 << 40), 16_000, lim(1e9), Some(100)),
            3200
        );
        assert_eq!(reserve_samples(None, 16_000, lim(10.0), Some(100)), 0);
        assert_eq!(reserve_samples(Some(1000), 16_000, lim(10.0), None), 0);
        assert_eq!(reserve_samples(Some(1000), 0, lim(10.0), Some(1 << 20)), 0);
        assert_eq!(
            reserve_samples(
                Some(1000),
                0,
                DecodeLimits {
                    max_duration_s: None
                },
                Some(1 << 20)
            ),
            1000
        );
        // A header that lies about its length still decodes what is there.
        let d = decode_bytes(
            wav_bytes(&pcm[..5000], 16_000, 1, Some(u32::MAX - 64)),
            Some("wav"),
            DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(d.samples.len(), 5000);
        assert!(
            d.samples.capacity() <= 32 * 12_000,
            "{}",
            d.samples.capacity()
        );
    }

    #[test]
    fn resample_keeps_length_frequency_and_alignment() {
        let x = sine(44_100, 2.0, 440.0);
        let y = resample(&x, 44_100, 16_000).unwrap();
        assert_eq!(y.len(), 32_000);
        // Compare against the analytic 16 kHz sine, away from the edges.
        let want = sine(16_000, 2.0, 440.0);
        let err: f32 = y[1000..31_000]
            .iter()
            .zip(&want[1000..31_000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "max abs error {err}");
    }

    #[test]
    fn resample_is_sample_aligned_for_any_ratio() {
        // A 2.5 kHz tone shows a sub-sample shift clearly: 1/3 sample (what
        // an odd FFT block count left from 48 kHz) is a 0.16 peak error.
        for rate in [
            8_000, 11_025, 22_050, 32_000, 44_100, 48_000, 96_000, 37_800, 44_101,
        ] {
            let x = sine(rate, 1.5, 2_500.0);
            let y = resample(&x, rate, 16_000).unwrap();
            let want_len = (x.len() as u64 * 16_000).div_ceil(rate as u64) as usize;
            assert_eq!(y.len(), want_len, "{rate} Hz");
            let want = sine(16_000, 1.5, 2_500.0);
            let err = y[800..want_len - 800]
                .iter()
                .zip(&want[800..])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 5e-3, "{rate} Hz: max abs error {err}");
        }
    }

    fn mp4_atom(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    /// ftyp, mdat, then moov (at the end, as ffmpeg writes it) with one
    /// sound track whose edit list is `elst_body`.
    fn m4a_with_edit(elst_body: &[u8]) -> Vec<u8> {
        let header = |timescale: u32| {
            let mut b = vec![0u8; 12];
            b.extend_from_slice(&timescale.to_be_bytes());
            b.extend_from_slice(&[0u8; 16]);
            b
        };
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"soun");
        hdlr.extend_from_slice(&[0u8; 13]);
        let mdia = [mp4_atom(b"mdhd", &header(44_100)), mp4_atom(b"hdlr", &hdlr)].concat();
        let trak = [
            mp4_atom(b"tkhd", &[0u8; 84]),
            mp4_atom(b"edts", &mp4_atom(b"elst", elst_body)),
            mp4_atom(b"mdia", &mdia),
        ]
        .concat();
        let moov = [mp4_atom(b"mvhd", &header(1000)), mp4_atom(b"trak", &trak)].concat();
        [
            mp4_atom(b"ftyp", b"M4A \0\0\0\0M4A mp42isom"),
            mp4_atom(b"mdat", &[0xAA; 300]),
            mp4_atom(b"moov", &moov),
        ]
        .concat()
    }

    #[test]
    fn mono_out_resamples_as_samples_arrive() {
        // 3 s at 44.1 kHz in MP3-sized pieces, with an edit that drops
        // 1024 priming samples and presents 2.5 s: the same 16 kHz samples
        // as trimming the whole and resampling it.
        let edit = Mp4Edit {
            media_time: 1024,
            media_timescale: 44_100,
            duration: Some(2500),
            movie_timescale: 1000,
        };
        let x: Vec<f32> = (0..3 * 44_100)
            .map(|i| (i as f32 * 0.013).sin() * 0.5 + (i as f32 * 0.0007).cos() * 0.25)
            .collect();
        for edit in [None, Some(&edit)] {
            let mut out = MonoOut::new(44_100, Some(SAMPLE_RATE), x.len(), edit);
            assert!(out.resampler.is_some());
            for piece in x.chunks(1152) {
                out.push(piece).unwrap();
            }
            let (y, rate) = out.finish(44_100).unwrap();
            assert_eq!(rate, SAMPLE_RATE);
            let kept = match edit {
                Some(_) => &x[1024..1024 + 110_250],
                None => &x[..],
            };
            let want = resample_to_16k(kept, 44_100).unwrap();
            assert_eq!(y.len(), want.len());
            assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // The same rate in and out: kept as it is, no thread.
        let out = MonoOut::new(SAMPLE_RATE, Some(SAMPLE_RATE), 0, None);
        assert!(out.resampler.is_none());
    }

    #[test]
    fn mp4_edit_list_trims_priming_and_padding() {
        // v0: 2000 ms presented, starting 1024 samples into the media.
        let mut elst = vec![0, 0, 0, 0, 0, 0, 0, 1];
        elst.extend_from_slice(&2000u32.to_be_bytes());
        elst.extend_from_slice(&1024i32.to_be_bytes());
        elst.extend_from_slice(&[0, 1, 0, 0]);
        let edit = mp4_audio_edit(&mut Cursor::new(m4a_with_edit(&elst))).unwrap();
        assert_eq!(
            edit,
            Mp4Edit {
                media_time: 1024,
                media_timescale: 44_100,
                duration: Some(2000),
                movie_timescale: 1000,
            }
        );
        // Taken off as samples arrive, in pieces of any size (here 1000,
        // so the skip and the cut both fall inside a piece).
        let trimmed = |rate: u32, n: usize| {
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut out = MonoOut::new(rate, None, 0, Some(&edit));
            for piece in x.chunks(1000) {
                out.push(piece).unwrap();
            }
            out.finish(rate).unwrap()
        };
        let (x, rate) = trimmed(44_100, 1024 + 88_200 + 700);
        assert_eq!((x.len(), rate), (88_200, 44_100));
        assert_eq!(x[0], 1024.0);
        assert_eq!(x[88_199], (1024 + 88_199) as f32);
        // At another rate, it scales.
        let (y, _) = trimmed(22_050, 50_000);
        assert_eq!(y.len(), 44_100);
        assert_eq!(y[0], 512.0);
        // A stream shorter than the edit keeps what there is past the skip.
        assert_eq!(trimmed(44_100, 1500).0.len(), 476);
        assert!(trimmed(44_100, 1000).0.is_empty());

        // v1 entries parse too.
        let mut elst1 = vec![1, 0, 0, 0, 0, 0, 0, 1];
        elst1.extend_from_slice(&2000u64.to_be_bytes());
        elst1.extend_from_slice(&2112i64.to_be_bytes());
        elst1.extend_from_slice(&[0, 1, 0, 0]);
        let e1 = mp4_audio_edit(&mut Cursor::new(m4a_with_edit(&elst1))).unwrap();
        assert_eq!(e1.media_time, 2112);

        // Two edits, an empty edit, or a truncated file: left alone.
        let mut two = vec![0, 0, 0, 0, 0, 0, 0, 2];
        two.extend_from_slice(&elst[8..]);
        two.extend_from_slice(&elst[8..]);
        assert_eq!(mp4_audio_edit(&mut Cursor::new(m4a_with_edit(&two))), None);
        let mut empty = elst.clone();
        empty[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            mp4_audio_edit(&mut Cursor::new(m4a_with_edit(&empty))),
            None
        );
        let full = m4a_with_edit(&elst);
        for cut in [4, 30, 200, full.len() - 40, full.len() - 1] {
            assert_eq!(
                mp4_audio_edit(&mut Cursor::new(full[..cut].to_vec())),
                None,
                "cut at {cut}"
            );
        }
        // Not MP4 at all.
        let wav = wav_bytes(&[1, 2, 3], 16_000, 1, None);
        assert_eq!(mp4_audio_edit(&mut Cursor::new(wav)), None);
    }

    #[test]
    fn kaiser_resampler_is_aligned_and_band_limited() {
        for from in [8_000u32, 22_050, 32_000, 44_100, 48_000] {
            let k = KaiserResampler::new(from, 16_000).unwrap();
            // Each phase passes DC unchanged.
            for ph in k.bank.chunks(k.taps) {
                assert!((ph.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
            let x = sine(from, 2.0, 440.0);
            let y = k.process(&x);
            assert_eq!(y.len(), (x.len() * 16_000).div_ceil(from as usize));
            let want = sine(16_000, 2.0, 440.0);
            let err = y[500..31_500]
                .iter()
                .zip(&want[500..31_500])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 2e-3, "{from} Hz: max abs error {err}");
        }
        // A tone above the new Nyquist is removed, not aliased.
        let k = KaiserResampler::new(48_000, 16_000).unwrap();
        let y = k.process(&sine(48_000, 1.0, 11_000.0));
        let rms = (y[200..15_800].iter().map(|v| v * v).sum::<f32>() / 15_600.0).sqrt();
        assert!(rms < 1e-3, "aliased energy {rms}");
        // Odd ratios fall back to rubato.
        assert!(KaiserResampler::new(44_101, 16_000).is_none());
        assert!(KaiserResampler::new(16_000, 16_000).is_none());
    }

    /// The streaming resampler against the whole-signal one, bit for bit:
    /// lengths around the filter's size (windows crossing both ends at
    /// once, one end, none) and past a block, fed in pieces of every size
    /// from one sample to all at once.
    #[test]
    fn kaiser_stream_matches_process_bit_for_bit() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked_bound = false;
        for from in [48_000u32, 44_100, 22_050, 8_000] {
            let k = KaiserResampler::new(from, 16_000).unwrap();
            let taps = k.taps;
            let mut lens = vec![
                0,
                1,
                2,
                3,
                48,
                taps - 1,
                taps,
                taps + 1,
                2 * taps,
                2 * taps + 1,
            ];
            lens.extend([
                1000,
                KaiserStream::BLOCK * 3 + 7,
                KaiserStream::BLOCK * 7 + 1,
            ]);
            for n in lens {
                let x: Vec<f32> = (0..n)
                    .map(|_| (rnd() % 20_001) as f32 / 10_000.0 - 1.0)
                    .collect();
                let want = k.process(&x);
                for piece in [1usize, 7, 960, 5_760, 100_003, usize::MAX] {
                    if piece == 1 && n > 5_000 {
                        continue;
                    }
                    let mut st = KaiserStream::new(from, 16_000).unwrap();
                    let mut held_most = 0;
                    for c in x.chunks(piece.min(n.max(1))) {
                        st.push(c);
                        held_most = held_most.max(st.held.len());
                    }
                    let got = st.finish();
                    assert_eq!(got.len(), want.len(), "{from} Hz, {n} samples by {piece}");
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{from} Hz, {n} samples by {piece}: outputs differ");
                    // Bounded: a block's input and a piece, not the signal.
                    if piece <= 5_760 {
                        let bound = (KaiserStream::BLOCK + 2) * k.step / k.phases + taps + piece;
                        if n > 2 * bound {
                            assert!(held_most <= bound, "held {held_most} > {bound}");
                            checked_bound = true;
                        }
                    }
                }
            }
        }
        assert!(checked_bound, "no signal long enough to check the bound");
    }

    #[test]
    fn stereo_wav_is_downmixed() {
        // Left = +0.5, right = -0.5 → mono 0; left = right = 0.25 → 0.25.
        let mut s = Vec::new();
        for _ in 0..1600 {
            s.push(16384i16);
            s.push(-16384);
        }
        for _ in 0..1600 {
            s.push(8192);
            s.push(8192);
        }
        let a = decode_bytes(
            wav_bytes(&s, 16_000, 2, None),
            Some("wav"),
            Default::default(),
        )
        .unwrap();
        assert_eq!(a.samples.len(), 3200);
        assert!(a.samples[..1600].iter().all(|v| v.abs() < 1e-4));
        assert!(a.samples[1600..].iter().all(|v| (v - 0.25).abs() < 1e-3));
    }

    #[test]
    fn empty_bytes_are_a_typed_error() {
        assert!(matches!(
            decode_bytes(vec![], None, Default::default()),
            Err(AudioError::Empty)
        ));
    }

    #[test]
    fn text_is_not_audio() {
        let r = decode_bytes(
            b"hello, I am not audio at all".repeat(20),
            Some("txt"),
            Default::default(),
        );
        assert!(matches!(r, Err(AudioError::Unrecognized(_))), "{r:?}");
    }

    #[test]
    fn header_claiming_4gb_does_not_allocate_it() {
        let s: Vec<i16> = (0..800).map(|i| (i % 100) as i16).collect();
        let a = decode_bytes(
            wav_bytes(&s, 16_000, 1, Some(u32::MAX - 64)),
            Some("wav"),
            Default::default(),
        )
        .unwrap();
        assert_eq!(a.samples.len(), 800);
    }

    #[test]
    fn header_only_wav_is_empty_audio() {
        let a = decode_bytes(
            wav_bytes(&[], 16_000, 1, None),
            Some("wav"),
            Default::default(),
        )
        .unwrap();
        assert!(a.samples.is_empty());
    }

    #[test]
    fn duration_cap_stops_decoding() {
        let s = vec![100i16; 16_000 * 3];
        let r = decode_bytes(
            wav_bytes(&s, 16_000, 1, None),
            Some("wav"),
            DecodeLimits {
                max_duration_s: Some(1.0),
            },
        );
        assert!(matches!(r, Err(AudioError::TooLong { .. })), "{r:?}");
    }

    #[test]
    fn truncated_header_is_an_error() {
        let full = wav_bytes(&[1, 2, 3], 16_000, 1, None);
        let r = decode_bytes(full[..20].to_vec(), Some("wav"), Default::default());
        assert!(r.is_err(), "{r:?}");
    }
}
