//! Opus: the identification header, libopus's decoder, and the trimming
//! rules that make earshot's samples line up with ffmpeg's.
//!
//! Why libopus (through `opusic-sys`, built from its bundled source) and not
//! a pure-Rust decoder: the pure-Rust ones on crates.io were all months old,
//! 0.x and single-maintainer when this was written, while libopus is the
//! reference decoder that browsers, Android and ffmpeg's `libopus` wrapper
//! run, fuzzed continuously for a decade. Uploads are hostile input; the
//! decoder is the last place to try something new.
//!
//! Why the containers are parsed here (see `ogg.rs`, `matroska.rs`) and not
//! by symphonia: symphonia 0.5 has no Opus decoder to hand packets to, and
//! reading them here keeps the trimming in one place, written to ffmpeg's
//! arithmetic: pre-skip from the OpusHead at the start, and at the end
//! ffmpeg's rule for the Ogg granule position or Matroska's
//! `DiscardPadding` (which symphonia's Matroska reader skips). Missing
//! pre-skip would make every timestamp 6.5 ms late against ffmpeg's
//! decoding; missing the end trim adds up to a frame of padding.

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ptr::NonNull;

use super::{reserve_samples, AudioError, DecodeLimits, DecodedAudio, Resampling};

/// Opus always decodes at 48 kHz here: its internal rate, and the rate
/// ffmpeg decodes it at before resampling, so the 16 kHz resampler sees the
/// same input as faster-whisper's.
pub(super) const OPUS_RATE: u32 = 48_000;

/// The longest Opus packet: 120 ms at 48 kHz, per channel.
const MAX_FRAME: usize = 5_760;

/// The Opus identification header (RFC 7845 §5.1), the same bytes in Ogg
/// (the first packet), Matroska (`CodecPrivate`) and MP4 (`dOps`, rebuilt).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OpusHead {
    pub channels: u8,
    /// 48 kHz samples to drop from the start of the decoded stream.
    pub pre_skip: u16,
    /// Output gain, Q7.8 dB.
    pub gain_q8: i16,
    pub family: u8,
    pub streams: u8,
    pub coupled: u8,
    /// Output channel → decoded channel (255: silence).
    pub mapping: Vec<u8>,
}

impl OpusHead {
    pub fn parse(b: &[u8]) -> Result<Self, AudioError> {
        let bad = |why: &str| AudioError::Corrupt(format!("invalid OpusHead: {why}"));
        if b.len() < 19 || &b[..8] != b"OpusHead" {
            return Err(bad("shorter than 19 bytes or no magic"));
        }
        // Major version 0 only; minor versions must stay readable.
        if b[8] >> 4 != 0 {
            return Err(bad(&format!("unsupported version {}", b[8])));
        }
        let channels = b[9];
        if channels == 0 {
            return Err(bad("0 channels"));
        }
        let pre_skip = u16::from_le_bytes([b[10], b[11]]);
        let gain_q8 = i16::from_le_bytes([b[16], b[17]]);
        let family = b[18];
        let (streams, coupled, mapping) = if family == 0 {
            if channels > 2 {
                return Err(bad(&format!("{channels} channels in mapping family 0")));
            }
            (1, channels - 1, (0..channels).collect())
        } else {
            if b.len() < 21 + channels as usize {
                return Err(bad("channel mapping table cut short"));
            }
            let (streams, coupled) = (b[19], b[20]);
            if streams == 0 || coupled > streams || streams as u16 + coupled as u16 > 255 {
                return Err(bad(&format!("{streams} streams, {coupled} coupled")));
            }
            if family == 1 && channels > 8 {
                return Err(bad(&format!("{channels} channels in mapping family 1")));
            }
            let mapping = b[21..21 + channels as usize].to_vec();
            let decoded = streams as u16 + coupled as u16;
            if let Some(m) = mapping.iter().find(|&&m| m != 255 && m as u16 >= decoded) {
                return Err(bad(&format!("mapping entry {m} >= {decoded} channels")));
            }
            (streams, coupled, mapping)
        };
        Ok(Self {
            channels,
            pre_skip,
            gain_q8,
            family,
            streams,
            coupled,
            mapping,
        })
    }
}

/// Samples (48 kHz, per channel) in an Opus packet, from its TOC byte
/// (RFC 6716 §3.1); `None` for a malformed packet. For a multistream
/// packet this is the first stream's duration, which all streams share.
pub(super) fn packet_samples(p: &[u8]) -> Option<u32> {
    let toc = *p.first()?;
    let config = toc >> 3;
    let frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][config as usize % 4],
        12..=15 => [480, 960][config as usize % 2],
        _ => [120, 240, 480, 960][config as usize % 4],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => (*p.get(1)? & 0x3F) as u32,
    };
    let n = frame * frames;
    (frames > 0 && n as usize <= MAX_FRAME).then_some(n)
}

/// libopus's multistream decoder (it also decodes mapping family 0, as one
/// stream), at 48 kHz, float output.
struct MsDecoder {
    st: NonNull<opusic_sys::OpusMSDecoder>,
    channels: usize,
}

// SAFETY: the decoder state is plain memory owned by this value; libopus
// keeps no thread-local or global state for it.
unsafe impl Send for MsDecoder {}

impl MsDecoder {
    fn new(head: &OpusHead) -> Result<Self, AudioError> {
        let mut err: std::ffi::c_int = 0;
        // SAFETY: `mapping` holds `channels` entries, each < streams +
        // coupled or 255 (checked by `OpusHead::parse`); libopus copies it.
        let st = unsafe {
            opusic_sys::opus_multistream_decoder_create(
                OPUS_RATE as i32,
                head.channels as _,
                head.streams as _,
                head.coupled as _,
                head.mapping.as_ptr(),
                &mut err,
            )
        };
        match NonNull::new(st) {
            Some(st) if err == opusic_sys::OPUS_OK => Ok(Self {
                st,
                channels: head.channels as usize,
            }),
            _ => Err(AudioError::Corrupt(format!(
                "invalid OpusHead: libopus refuses {} channels, {} streams, {} coupled ({})",
                head.channels,
                head.streams,
                head.coupled,
                opus_error(err)
            ))),
        }
    }

    /// Decodes one packet into `out` (interleaved, at least `MAX_FRAME *
    /// channels` long); returns samples per channel.
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
        assert!(out.len() >= MAX_FRAME * self.channels);
        let len = i32::try_from(packet.len()).map_err(|_| "packet over 2 GB".to_string())?;
        // SAFETY: `packet` is valid for `len` bytes; `out` holds
        // `MAX_FRAME` samples per channel, the frame size passed.
        let n = unsafe {
            opusic_sys::opus_multistream_decode_float(
                self.st.as_ptr(),
                packet.as_ptr(),
                len,
                out.as_mut_ptr(),
                MAX_FRAME as _,
                0,
            )
        };
        if n < 0 {
            Err(opus_error(n))
        } else {
            Ok(n as usize)
        }
    }
}

impl Drop for MsDecoder {
    fn drop(&mut self) {
        // SAFETY: created by `opus_multistream_decoder_create`, freed once.
        unsafe { opusic_sys::opus_multistream_decoder_destroy(self.st.as_ptr()) }
    }
}

fn opus_error(code: i32) -> String {
    // SAFETY: opus_strerror returns a static NUL-terminated string for any code.
    let s = unsafe { std::ffi::CStr::from_ptr(opusic_sys::opus_strerror(code)) };
    s.to_string_lossy().into_owned()
}

/// Decodes a stream's packets to mono. The end trims (Ogg's last granule,
/// Matroska's `DiscardPadding`) refer to the packet just pushed, and the
/// start trim (pre-skip, and an Ogg stream that says it begins before zero)
/// is known once the container says so ([`OpusSink::start_known`]). Until
/// then samples are held; after it, each packet's samples are settled when
/// the next packet arrives: past the start trim, they go to the output, or,
/// when the caller wants another rate, straight into a [`KaiserStream`].
/// So an hour of Opus to 16 kHz holds the 16 kHz samples (230 MB), not the
/// 48 kHz ones first (690 MB, then the 16 kHz copy beside them), and the
/// samples are those of decoding it whole and then resampling, bit for bit.
pub(super) struct OpusSink {
    dec: MsDecoder,
    gain: f32,
    /// Samples still to drop from the start (pre-skip and any start trim).
    skip: usize,
    start_known: bool,
    buf: Vec<f32>,
    /// Decoded samples not yet settled: the last packet's, or all of them
    /// while the start is unknown.
    mono: Vec<f32>,
    /// Settled samples at 48 kHz (when no other rate is asked for).
    out: Vec<f32>,
    resampler: Option<Resampling>,
    /// Samples the last packet added to `mono`.
    last: usize,
    /// Samples decoded and kept so far (end trims taken off).
    kept: usize,
    max_samples: Option<usize>,
    limit_s: f64,
    pub truncated: bool,
    pub packets: u64,
}

impl OpusSink {
    /// `out_rate`: the rate [`Self::finish`] returns (48 kHz, Opus's own,
    /// when `None`, equal, or one [`KaiserStream`] has no filter for).
    /// `length`: the stream's length in 48 kHz samples as its container
    /// gives it (Ogg's last granule, Matroska's `Duration`), to reserve the
    /// output once. Growing it by doubling instead left the smaller copies
    /// with the allocator (mimalloc, purge off): `diarize` of a 40-minute
    /// WebM peaked at 612 MB against 489 MB for the same samples as a WAV.
    /// Capped like any header's claim ([`reserve_samples`]) and fallible: a
    /// wrong figure costs growth, never samples.
    pub fn new(
        head: &OpusHead,
        limits: DecodeLimits,
        out_rate: Option<u32>,
        length: Option<u64>,
        byte_len: u64,
    ) -> Result<Self, AudioError> {
        if !matches!(head.family, 0 | 1 | 2 | 255) {
            // Family 3 (projection ambisonics) needs libopus's projection
            // decoder and a demixing matrix; nobody records speech in it.
            return Err(AudioError::UnsupportedCodec {
                codec: format!("opus (channel mapping family {})", head.family),
            });
        }
        let dec = MsDecoder::new(head)?;
        let channels = dec.channels;
        let reserve = reserve_samples(length, OPUS_RATE, limits, Some(byte_len));
        let resampler = out_rate.and_then(|rate| Resampling::new(OPUS_RATE, rate, reserve));
        let mut out = Vec::new();
        if resampler.is_none() {
            let _ = out.try_reserve_exact(reserve);
        }
        Ok(Self {
            dec,
            gain: 10f32.powf(head.gain_q8 as f32 / (20.0 * 256.0)),
            skip: head.pre_skip as usize,
            start_known: false,
            buf: vec![0.0; MAX_FRAME * channels],
            mono: Vec::new(),
            out,
            resampler,
            last: 0,
            kept: 0,
            max_samples: limits
                .max_duration_s
                .map(|s| (s * OPUS_RATE as f64).ceil() as usize + head.pre_skip as usize),
            limit_s: limits.max_duration_s.unwrap_or(0.0),
            truncated: false,
            packets: 0,
        })
    }

    /// Decodes one packet and appends it, mixed to mono. A packet libopus
    /// refuses is skipped (as ffmpeg and players do) and flags the stream.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), AudioError> {
        // The previous packet can no longer be trimmed.
        self.last = 0;
        self.settle()?;
        if packet.is_empty() {
            // libopus reads an empty packet as a lost one and conceals it
            // with up to 120 ms of made-up audio: drop it instead.
            self.truncated = true;
            return Ok(());
        }
        let n = match self.dec.decode(packet, &mut self.buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("skipping undecodable Opus packet: {e}");
                self.truncated = true;
                return Ok(());
            }
        };
        self.packets += 1;
        let ch = self.dec.channels;
        let scale = self.gain / ch as f32;
        for frame in self.buf[..n * ch].chunks_exact(ch) {
            let s = frame.iter().sum::<f32>() * scale;
            self.mono.push(if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            });
        }
        self.last = n;
        self.kept += n;
        if let Some(max) = self.max_samples {
            if self.kept > max {
                return Err(AudioError::TooLong {
                    limit_s: self.limit_s,
                });
            }
        }
        Ok(())
    }

    /// Drops up to `n` samples from the end of the last packet (Ogg's end
    /// granule, Matroska's `DiscardPadding`).
    pub fn trim_end(&mut self, n: usize) {
        let n = n.min(self.last);
        self.mono.truncate(self.mono.len() - n);
        self.last -= n;
        self.kept -= n;
    }

    /// Drops `n` samples at the start beyond pre-skip (an Ogg stream whose
    /// first granule says it begins before zero). Before
    /// [`Self::start_known`] only.
    pub fn trim_start(&mut self, n: usize) {
        debug_assert!(!self.start_known, "the start trim is already applied");
        self.skip = self.skip.saturating_add(n);
    }

    /// No start trim beyond what is set will come: samples may be settled
    /// from the next packet on.
    pub fn start_known(&mut self) {
        self.start_known = true;
    }

    /// Hands every decoded sample but the last packet's on (the start trim
    /// dropped), once the start is known.
    fn settle(&mut self) -> Result<(), AudioError> {
        if !self.start_known {
            return Ok(());
        }
        let upto = self.mono.len() - self.last;
        let drop = self.skip.min(upto);
        self.skip -= drop;
        let ready = &self.mono[drop..upto];
        match &mut self.resampler {
            Some(r) => r.push(ready)?,
            None => self.out.extend_from_slice(ready),
        }
        self.mono.drain(..upto);
        Ok(())
    }

    pub fn finish(mut self) -> Result<DecodedAudio, AudioError> {
        if self.kept == 0 && self.truncated {
            return Err(AudioError::Corrupt(
                "no decodable audio before the stream broke".into(),
            ));
        }
        self.start_known = true;
        self.last = 0;
        self.settle()?;
        let (samples, sample_rate) = match self.resampler {
            Some(r) => {
                let rate = r.rate;
                (r.finish()?, rate)
            }
            None => (self.out, OPUS_RATE),
        };
        Ok(DecodedAudio {
            samples,
            sample_rate,
            codec: "opus".into(),
            truncated: self.truncated,
        })
    }
}

/// A buffered reader that knows its position and the source's length, with
/// the two moves the container parsers need on damaged input: skipping
/// forward and scanning for a resynchronisation pattern.
pub(super) struct Src<R: Read + Seek> {
    r: BufReader<R>,
    pos: u64,
    pub len: u64,
}

impl<R: Read + Seek> Src<R> {
    pub fn new(mut r: R) -> io::Result<Self> {
        let len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        Ok(Self {
            r: BufReader::with_capacity(64 * 1024, r),
            pos: 0,
            len,
        })
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Fills `buf`; `Ok(n < buf.len())` only at the end of the source.
    pub fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    /// The source's last `max` bytes (all of it when shorter), read
    /// without moving the read position: where containers keep their
    /// last timestamps.
    pub fn read_tail(&mut self, max: u64) -> io::Result<Vec<u8>> {
        let here = self.pos;
        let from = self.len.saturating_sub(max);
        self.seek_to(from)?;
        let mut tail = vec![0u8; (self.len - from) as usize];
        let n = self.read_full(&mut tail)?;
        tail.truncate(n);
        self.seek_to(here)?;
        Ok(tail)
    }

    /// `n` bytes, or `None` when the source ends first. Callers bound `n`.
    pub fn read_vec(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        if n as u64 > self.remaining() {
            return Ok(None);
        }
        let mut v = vec![0u8; n];
        let got = self.read_full(&mut v)?;
        Ok((got == n).then_some(v))
    }

    pub fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        let delta = pos as i64 - self.pos as i64;
        self.r.seek_relative(delta)?;
        self.pos = pos;
        Ok(())
    }

    /// Moves to the next occurrence of `pat` at or after `from`; false
    /// (positioned at the end) when there is none.
    pub fn scan_to(&mut self, from: u64, pat: &[u8]) -> io::Result<bool> {
        let mut at = from;
        let mut w = vec![0u8; 64 * 1024];
        loop {
            self.seek_to(at)?;
            let got = self.read_full(&mut w)?;
            if let Some(i) = w[..got].windows(pat.len()).position(|x| x == pat) {
                self.seek_to(at + i as u64)?;
                return Ok(true);
            }
            if got < w.len() {
                return Ok(false);
            }
            at += (got + 1 - pat.len()) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn head(channels: u8, family: u8, tail: &[u8]) -> Vec<u8> {
        let mut v = b"OpusHead".to_vec();
        v.extend_from_slice(&[1, channels]);
        v.extend_from_slice(&312u16.to_le_bytes());
        v.extend_from_slice(&48_000u32.to_le_bytes());
        v.extend_from_slice(&0i16.to_le_bytes());
        v.push(family);
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn opus_head_parses_and_rejects() {
        let h = OpusHead::parse(&head(2, 0, &[])).unwrap();
        assert_eq!(
            (h.channels, h.pre_skip, h.streams, h.coupled),
            (2, 312, 1, 1)
        );
        assert_eq!(h.mapping, [0, 1]);
        // 5.1, family 1: 4 streams, 2 coupled.
        let h = OpusHead::parse(&head(6, 1, &[4, 2, 0, 4, 1, 2, 3, 5])).unwrap();
        assert_eq!((h.streams, h.coupled, h.mapping.len()), (4, 2, 6));
        for (bytes, why) in [
            (head(2, 0, &[])[..18].to_vec(), "19 bytes"),
            (head(0, 0, &[]), "0 channels"),
            (head(3, 0, &[]), "family 0"),
            (head(6, 1, &[4, 2, 0, 4, 1]), "cut short"),
            (head(6, 1, &[4, 5, 0, 1, 2, 3, 4, 5]), "coupled"),
            (head(2, 1, &[1, 0, 0, 1]), ">= 1"),
            (head(9, 1, &[9, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "family 1"),
        ] {
            match OpusHead::parse(&bytes) {
                Err(AudioError::Corrupt(m)) => assert!(m.contains(why), "{m} vs {why}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        let mut v = head(1, 0, &[]);
        v[8] = 0x10;
        assert!(matches!(OpusHead::parse(&v), Err(AudioError::Corrupt(_))));
        // Family 3 parses, then is refused as a codec feature.
        let h = OpusHead::parse(&head(4, 3, &[2, 2, 0, 1, 2, 3])).unwrap();
        assert!(matches!(
            OpusSink::new(&h, DecodeLimits::default(), None, None, 0),
            Err(AudioError::UnsupportedCodec { .. })
        ));
    }

    #[test]
    fn toc_durations() {
        assert_eq!(packet_samples(&[0x00]), Some(480)); // SILK NB 10 ms
        assert_eq!(packet_samples(&[0x08 | 3 << 3]), Some(2880)); // SILK 60 ms
        assert_eq!(packet_samples(&[31 << 3]), Some(960)); // CELT FB 20 ms
        assert_eq!(packet_samples(&[16 << 3 | 1]), Some(240)); // 2 × 2.5 ms
        assert_eq!(packet_samples(&[31 << 3 | 3, 6]), Some(5760)); // 6 × 20 ms
        assert_eq!(packet_samples(&[31 << 3 | 3, 7]), None); // 140 ms
        assert_eq!(packet_samples(&[31 << 3 | 3, 0]), None);
        assert_eq!(packet_samples(&[31 << 3 | 3]), None);
        assert_eq!(packet_samples(&[]), None);
    }

    #[test]
    fn garbage_packets_are_skipped_not_fatal() {
        let h = OpusHead::parse(&head(1, 0, &[])).unwrap();
        let mut s = OpusSink::new(&h, DecodeLimits::default(), None, None, 0).unwrap();
        s.push(&[]).unwrap();
        s.push(&[0xFF; 3]).unwrap();
        // A valid 20 ms CELT silence frame: TOC alone decodes as silence.
        s.push(&[31 << 3]).unwrap();
        assert!(s.truncated);
        let d = s.finish().unwrap();
        assert_eq!(d.samples.len(), 960 - 312);
    }

    #[test]
    fn duration_cap_stops_decoding() {
        let h = OpusHead::parse(&head(1, 0, &[])).unwrap();
        let lim = DecodeLimits {
            max_duration_s: Some(0.05),
        };
        let mut s = OpusSink::new(&h, lim, None, None, 0).unwrap();
        // 50 ms + 312 of pre-skip = 2712 samples: the third 20 ms packet
        // passes it.
        s.push(&[31 << 3]).unwrap();
        s.push(&[31 << 3]).unwrap();
        assert!(matches!(
            s.push(&[31 << 3]),
            Err(AudioError::TooLong { .. })
        ));
    }

    #[test]
    fn scan_finds_patterns_across_buffer_edges() {
        let mut data = vec![0u8; 200_000];
        for at in [3usize, 65_534, 65_536 + 70_000, 199_996] {
            data[at..at + 4].copy_from_slice(b"OggS");
        }
        let mut s = Src::new(std::io::Cursor::new(data)).unwrap();
        let mut found = Vec::new();
        let mut from = 0;
        while s.scan_to(from, b"OggS").unwrap() {
            found.push(s.pos());
            from = s.pos() + 1;
        }
        assert_eq!(found, [3, 65_534, 135_536, 199_996]);
        assert_eq!(s.pos(), 200_000);
    }
}
