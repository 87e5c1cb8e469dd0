//! Matroska and WebM: the first audio track, when it is Opus, with ffmpeg's
//! trimming (pre-skip from the OpusHead in `CodecPrivate`, and each block's
//! `DiscardPadding` off its end). Other audio codecs go on to symphonia;
//! a file without an audio track (a silent screen recording) is
//! [`AudioError::NoAudioTrack`].
//!
//! The reader is flat: Segment and Cluster are entered rather than
//! skipped, so the unknown-size Segments and Clusters that browsers'
//! MediaRecorder writes need nothing special. On a malformed element (bad
//! ID or size, a size past the end of the file) it scans for the next
//! Cluster, as ffmpeg does, and flags the stream; only the audio track's
//! blocks are read into memory, and at most 16 MiB at a time.

use std::io::{self, Read, Seek};

use super::opus::{OpusHead, OpusSink, Src, OPUS_RATE};
use super::{AudioError, DecodeLimits, DecodedAudio};

const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1F43_B675;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CONTENT_ENCODINGS: u32 = 0x6D80;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const DISCARD_PADDING: u32 = 0x75A2;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TIMECODE: u32 = 0xE7;

const MAX_ELEMENT: u64 = 16 << 20;
const TRACK_TYPE_AUDIO: u64 = 2;

/// A variable-length integer (RFC 8794 §4) at the start of `b`: its value
/// (marker bit kept for IDs, removed for sizes), its length, and whether
/// all value bits are set (an unknown size).
fn vint(b: &[u8], max_len: usize, keep_marker: bool) -> Option<(u64, usize, bool)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > max_len || b.len() < len {
        return None;
    }
    // The value bits of the first byte (len 8 leaves none).
    let value_bits = 0xFFu8.checked_shr(len as u32).unwrap_or(0);
    let mask = if keep_marker { 0xFF } else { value_bits };
    let mut v = (first & mask) as u64;
    let mut ones = first & value_bits == value_bits;
    for &x in &b[1..len] {
        v = v << 8 | x as u64;
        ones &= x == 0xFF;
    }
    Some((v, len, ones))
}

enum Header {
    /// ID, size (`None`: unknown), and where its body starts.
    Element(u32, Option<u64>),
    Eof,
    Cut,
    Bad,
}

fn read_header<R: Read + Seek>(src: &mut Src<R>) -> io::Result<Header> {
    let mut b = [0u8; 12];
    if src.read_full(&mut b[..1])? == 0 {
        return Ok(Header::Eof);
    }
    let id_len = b[0].leading_zeros() as usize + 1;
    if id_len > 4 {
        return Ok(Header::Bad);
    }
    if src.read_full(&mut b[1..id_len + 1])? < id_len {
        return Ok(Header::Cut);
    }
    let size_len = b[id_len].leading_zeros() as usize + 1;
    if size_len > 8 {
        return Ok(Header::Bad);
    }
    if src.read_full(&mut b[id_len + 1..id_len + size_len])? < size_len - 1 {
        return Ok(Header::Cut);
    }
    let (id, _, _) = vint(&b, 4, true).expect("length checked");
    let (size, _, unknown) = vint(&b[id_len..], 8, false).expect("length checked");
    Ok(Header::Element(id as u32, (!unknown).then_some(size)))
}

struct TrackInfo {
    number: u64,
    kind: u64,
    codec: String,
    private: Option<Vec<u8>>,
    encoded: bool,
}

/// The children of a master element held in memory: (ID, body).
fn children(mut b: &[u8]) -> Result<Vec<(u32, &[u8])>, AudioError> {
    let bad = || AudioError::Corrupt("malformed Matroska track list".into());
    let mut out = Vec::new();
    while !b.is_empty() {
        let (id, il, _) = vint(b, 4, true).ok_or_else(bad)?;
        let (size, sl, unknown) = vint(&b[il..], 8, false).ok_or_else(bad)?;
        let start = il + sl;
        if unknown || size > (b.len() - start) as u64 {
            return Err(bad());
        }
        out.push((id as u32, &b[start..start + size as usize]));
        b = &b[start + size as usize..];
    }
    Ok(out)
}

fn uint(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0, |v, &x| v << 8 | x as u64)
}

/// What `Info` says: the tick length (`TimecodeScale`, ns; 1 ms when
/// absent) and the segment's length (`Duration`) in 48 kHz samples, for
/// [`OpusSink::new`] to reserve the output; no length without a `Duration`
/// (browsers' MediaRecorder writes none) or with a nonsensical one.
fn info(body: &[u8]) -> (u64, Option<u64>) {
    let Ok(kids) = children(body) else {
        return (1_000_000, None);
    };
    let scale_ns = kids
        .iter()
        .find(|(id, _)| *id == TIMECODE_SCALE)
        .map_or(1_000_000, |(_, b)| uint(b));
    let duration = kids
        .iter()
        .find(|(id, _)| *id == DURATION)
        .and_then(|(_, b)| match b.len() {
            4 => Some(f32::from_be_bytes(b[..4].try_into().ok()?) as f64),
            8 => Some(f64::from_be_bytes(b[..8].try_into().ok()?)),
            _ => None,
        });
    (
        scale_ns,
        duration.and_then(|d| ticks_to_samples(d, scale_ns)),
    )
}

/// `ticks` of `scale_ns` in 48 kHz samples; `None` when that is not a
/// sample count.
fn ticks_to_samples(ticks: f64, scale_ns: u64) -> Option<u64> {
    let samples = ticks * scale_ns as f64 * 1e-9 * OPUS_RATE as f64;
    (samples.is_finite() && samples >= 0.0 && samples < u64::MAX as f64)
        .then(|| samples.ceil() as u64)
}

/// How far back from the file's end [`last_cluster_samples`] looks.
const TAIL: u64 = 1 << 20;

/// For a segment without a `Duration`: where its last Cluster starts (its
/// `Timecode`, found in the file's last MiB) plus the longest a cluster
/// can run (block times are 16-bit offsets from it), in 48 kHz samples;
/// at most 33 s over, which only sizes a reservation. The read position is
/// kept.
fn last_cluster_samples<R: Read + Seek>(
    src: &mut Src<R>,
    scale_ns: u64,
) -> io::Result<Option<u64>> {
    let tail = src.read_tail(TAIL)?;
    let cluster = CLUSTER.to_be_bytes();
    let timecode = (0..tail.len().saturating_sub(3))
        .rev()
        .filter(|&i| tail[i..i + 4] == cluster)
        .find_map(|i| {
            let (_, sl, _) = vint(&tail[i + 4..], 8, false)?;
            let b = &tail[i + 4 + sl..];
            let (id, il, _) = vint(b, 4, true)?;
            let (size, zl, unknown) = vint(&b[il..], 8, false)?;
            let value = b.get(il + zl..il + zl + size as usize)?;
            (id == TIMECODE as u64 && !unknown && size <= 8).then(|| uint(value))
        });
    Ok(timecode.and_then(|t| {
        let ns = (t as u128 + i16::MAX as u128) * scale_ns as u128;
        u64::try_from((ns * OPUS_RATE as u128).div_ceil(1_000_000_000)).ok()
    }))
}

fn tracks(body: &[u8]) -> Result<Vec<TrackInfo>, AudioError> {
    let mut out = Vec::new();
    for (id, entry) in children(body)? {
        if id != TRACK_ENTRY {
            continue;
        }
        let mut t = TrackInfo {
            number: 0,
            kind: 0,
            codec: String::new(),
            private: None,
            encoded: false,
        };
        for (id, v) in children(entry)? {
            match id {
                TRACK_NUMBER => t.number = uint(v),
                TRACK_TYPE => t.kind = uint(v),
                CODEC_ID => {
                    t.codec = String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string()
                }
                CODEC_PRIVATE => t.private = Some(v.to_vec()),
                CONTENT_ENCODINGS => t.encoded = true,
                _ => {}
            }
        }
        out.push(t);
    }
    Ok(out)
}

/// The frames of a Block or SimpleBlock body (after the track number):
/// 2 bytes timecode, 1 byte flags, then one frame or a laced group.
fn frames(b: &[u8]) -> Option<Vec<&[u8]>> {
    let flags = *b.get(2)?;
    let data = &b[3..];
    let lacing = (flags >> 1) & 3;
    if lacing == 0 {
        return Some(vec![data]);
    }
    let n = *data.first()? as usize + 1;
    let mut p = 1;
    let mut sizes = Vec::with_capacity(n);
    match lacing {
        // Xiph: each size but the last as a run of 255s and a final byte.
        1 => {
            for _ in 0..n - 1 {
                let mut s = 0usize;
                loop {
                    let v = *data.get(p)?;
                    p += 1;
                    s += v as usize;
                    if v < 255 {
                        break;
                    }
                }
                sizes.push(s);
            }
        }
        // Fixed: equal sizes.
        2 => {
            let total = data.len() - 1;
            if !total.is_multiple_of(n) {
                return None;
            }
            sizes = vec![total / n; n - 1];
        }
        // EBML: the first size, then signed differences.
        _ => {
            if n > 1 {
                let (first, l, _) = vint(data.get(p..)?, 8, false)?;
                p += l;
                sizes.push(usize::try_from(first).ok()?);
                let mut prev = first as i64;
                for _ in 0..n - 2 {
                    let (raw, l, _) = vint(data.get(p..)?, 8, false)?;
                    p += l;
                    let bias = (1i64 << (7 * l - 1)) - 1;
                    prev += raw as i64 - bias;
                    sizes.push(usize::try_from(prev).ok()?);
                }
            }
        }
    }
    let used = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s))?;
    let last = data.len().checked_sub(p)?.checked_sub(used)?;
    sizes.push(last);
    let mut out = Vec::with_capacity(n);
    for s in sizes {
        out.push(&data[p..p + s]);
        p += s;
    }
    Some(out)
}

enum BlockRead {
    /// The block is the audio track's: its body after the track number.
    Ours(Vec<u8>),
    Other,
    Cut,
    Bad,
}

/// Reads a (Simple)Block body of `size` bytes when it belongs to `track`;
/// skips it otherwise.
fn read_block<R: Read + Seek>(src: &mut Src<R>, size: u64, track: u64) -> io::Result<BlockRead> {
    let start = src.pos();
    if size > src.remaining() {
        return Ok(BlockRead::Cut);
    }
    let mut b = [0u8; 8];
    let n = src.read_full(&mut b[..(size as usize).min(8)])?;
    let Some((num, len, _)) = vint(&b[..n], 8, false) else {
        return Ok(BlockRead::Bad);
    };
    if num != track {
        src.seek_to(start + size)?;
        return Ok(BlockRead::Other);
    }
    if size > MAX_ELEMENT {
        return Ok(BlockRead::Bad);
    }
    src.seek_to(start + len as u64)?;
    match src.read_vec(size as usize - len)? {
        Some(v) => Ok(BlockRead::Ours(v)),
        None => Ok(BlockRead::Cut),
    }
}

/// Decodes the first audio track of a Matroska/WebM file when it is Opus
/// (at `out_rate` when one is asked for: [`OpusSink`]); `None` when it is
/// another codec (symphonia's), or when blocks come before any track list.
pub(super) fn decode<R: Read + Seek>(
    source: R,
    limits: DecodeLimits,
    out_rate: Option<u32>,
) -> Result<Option<DecodedAudio>, AudioError> {
    let io = |e: io::Error| AudioError::Corrupt(e.to_string());
    let mut src = Src::new(source).map_err(io)?;
    let mut chosen: Option<(u64, OpusSink)> = None;
    // The segment's tick and length (Info), when it comes before the
    // track list.
    let (mut scale_ns, mut length) = (1_000_000u64, None::<u64>);
    let mut damaged = false;
    // Where a Segment of known size ends: a file ending before that was cut.
    let mut segment_end: Option<u64> = None;
    loop {
        let start = src.pos();
        let (id, size) = match read_header(&mut src).map_err(io)? {
            Header::Element(id, size) => (id, size),
            Header::Eof => break,
            Header::Cut => {
                damaged = true;
                break;
            }
            Header::Bad => {
                damaged = true;
                if !src.scan_to(start + 1, &CLUSTER.to_be_bytes()).map_err(io)? {
                    break;
                }
                continue;
            }
        };
        let body = src.pos();
        // Segment and Cluster: step inside (their size may be unknown).
        if id == SEGMENT || id == CLUSTER {
            if id == SEGMENT {
                segment_end = size.map(|s| body.saturating_add(s));
            }
            continue;
        }
        let fits = size.is_some_and(|s| s <= src.len - body);
        if !fits {
            // An unknown size on a leaf, or a size past the end of the
            // file: either the file is cut here or this is not an element.
            damaged = true;
            if !src.scan_to(start + 1, &CLUSTER.to_be_bytes()).map_err(io)? {
                break;
            }
            continue;
        }
        let size = size.expect("checked by fits");
        match (id, chosen.as_mut()) {
            // Info (a title, dates, the duration) comes before the tracks
            // in the files ffmpeg and libwebm write; read after them, or
            // huge, it is skipped: it only sizes a reservation.
            (INFO, None) if size <= 64 << 10 => {
                let b = src.read_vec(size as usize).map_err(io)?.expect("fits");
                (scale_ns, length) = info(&b);
            }
            (TRACKS, None) => {
                if size > MAX_ELEMENT {
                    return Err(AudioError::Corrupt(format!(
                        "Matroska track list of {size} bytes"
                    )));
                }
                let b = src.read_vec(size as usize).map_err(io)?.expect("fits");
                let list = tracks(&b)?;
                let Some(t) = list.iter().find(|t| t.kind == TRACK_TYPE_AUDIO) else {
                    return Err(AudioError::NoAudioTrack);
                };
                if t.codec != "A_OPUS" {
                    return Ok(None);
                }
                if t.encoded {
                    return Err(AudioError::UnsupportedCodec {
                        codec: "opus (compressed or encrypted Matroska track)".into(),
                    });
                }
                let head = t.private.as_deref().ok_or_else(|| {
                    AudioError::Corrupt("Opus track without an OpusHead (CodecPrivate)".into())
                })?;
                let head = OpusHead::parse(head)?;
                if length.is_none() {
                    length = last_cluster_samples(&mut src, scale_ns).map_err(io)?;
                }
                // Matroska trims only pre-skip at the start.
                let mut sink = OpusSink::new(&head, limits, out_rate, length, src.len)?;
                sink.start_known();
                chosen = Some((t.number, sink));
            }
            // Blocks before any track list: leave the file to symphonia.
            (SIMPLE_BLOCK | BLOCK_GROUP, None) => return Ok(None),
            (SIMPLE_BLOCK, Some((track, sink))) => {
                match read_block(&mut src, size, *track).map_err(io)? {
                    BlockRead::Ours(b) => damaged |= !push_block(sink, &b, 0)?,
                    BlockRead::Other => {}
                    BlockRead::Cut | BlockRead::Bad => {
                        damaged = true;
                        if !src.scan_to(start + 1, &CLUSTER.to_be_bytes()).map_err(io)? {
                            break;
                        }
                    }
                }
            }
            (BLOCK_GROUP, Some((track, sink))) => {
                let end = body + size;
                let mut ours = None;
                let mut discard_ns = 0i64;
                let mut ok = true;
                while src.pos() < end {
                    let Header::Element(cid, Some(csize)) = read_header(&mut src).map_err(io)?
                    else {
                        ok = false;
                        break;
                    };
                    if csize > end.saturating_sub(src.pos()) {
                        ok = false;
                        break;
                    }
                    match cid {
                        BLOCK => match read_block(&mut src, csize, *track).map_err(io)? {
                            BlockRead::Ours(b) => ours = Some(b),
                            BlockRead::Other => {}
                            BlockRead::Cut | BlockRead::Bad => {
                                ok = false;
                                break;
                            }
                        },
                        DISCARD_PADDING if csize <= 8 => {
                            let v = src.read_vec(csize as usize).map_err(io)?.expect("fits");
                            // Signed, big-endian, sign-extended from its length.
                            let shift = 64 - 8 * csize as u32;
                            discard_ns = if csize == 0 {
                                0
                            } else {
                                ((uint(&v) << shift) as i64) >> shift
                            };
                        }
                        _ => src.seek_to(src.pos() + csize).map_err(io)?,
                    }
                }
                if let Some(b) = ours {
                    // ns → 48 kHz samples, rounded as ffmpeg's av_rescale_q.
                    let discard = if discard_ns > 0 {
                        ((discard_ns as i128 * OPUS_RATE as i128 + 500_000_000) / 1_000_000_000)
                            as usize
                    } else {
                        0
                    };
                    damaged |= !push_block(sink, &b, discard)?;
                }
                if !ok {
                    damaged = true;
                    if !src.scan_to(start + 1, &CLUSTER.to_be_bytes()).map_err(io)? {
                        break;
                    }
                } else {
                    src.seek_to(end).map_err(io)?;
                }
            }
            _ => src.seek_to(body + size).map_err(io)?,
        }
    }
    if segment_end.is_some_and(|end| end > src.len) {
        damaged = true;
    }
    match chosen {
        Some((_, mut sink)) => {
            sink.truncated |= damaged;
            Ok(Some(sink.finish()?))
        }
        None => Err(AudioError::Corrupt(
            "stream ends inside its header (no Matroska track list)".into(),
        )),
    }
}

/// Decodes one block's frames and trims `discard` samples off its end.
/// False when the lacing is malformed (the block is dropped).
fn push_block(sink: &mut OpusSink, b: &[u8], discard: usize) -> Result<bool, AudioError> {
    let Some(fr) = frames(b) else {
        return Ok(false);
    };
    let n = fr.len();
    for (i, f) in fr.into_iter().enumerate() {
        sink.push(f)?;
        if i + 1 == n && discard > 0 {
            sink.trim_end(discard);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(id: u32, body: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = id
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        // 8-byte size, as some muxers write.
        v.push(0x01);
        v.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    fn unknown_size(id: u32) -> Vec<u8> {
        let mut v: Vec<u8> = id
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        v.push(0xFF);
        v
    }

    fn opus_head() -> Vec<u8> {
        let mut v = b"OpusHead".to_vec();
        v.extend_from_slice(&[1, 1]);
        v.extend_from_slice(&312u16.to_le_bytes());
        v.extend_from_slice(&48_000u32.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0]);
        v
    }

    fn track(number: u8, kind: u8, codec: &str, private: Option<&[u8]>) -> Vec<u8> {
        let mut b = el(TRACK_NUMBER, &[number]);
        b.extend(el(TRACK_TYPE, &[kind]));
        b.extend(el(CODEC_ID, codec.as_bytes()));
        if let Some(p) = private {
            b.extend(el(CODEC_PRIVATE, p));
        }
        el(TRACK_ENTRY, &b)
    }

    /// A block body for track `t` holding `frames` 20 ms silent CELT
    /// packets, Xiph-laced when more than one.
    fn block(t: u8, frames: usize) -> Vec<u8> {
        let mut v = vec![0x80 | t, 0, 0];
        if frames == 1 {
            v.push(0x80);
            v.push(31 << 3);
        } else {
            v.push(0x80 | 0x02);
            v.push(frames as u8 - 1);
            v.extend(std::iter::repeat_n(1u8, frames - 1));
            v.extend(std::iter::repeat_n(31u8 << 3, frames));
        }
        v
    }

    /// EBML header, unknown-size Segment, a video and an Opus track, then
    /// clusters of `per` blocks; the last block group pads `pad_ns`.
    fn webm(clusters: usize, per: usize, pad_ns: u64, unknown_clusters: bool) -> Vec<u8> {
        let mut v = el(0x1A45_DFA3, &el(0x4282, b"webm"));
        v.extend(unknown_size(SEGMENT));
        let t = [
            track(1, 1, "V_VP8", None),
            track(2, 2, "A_OPUS", Some(&opus_head())),
        ]
        .concat();
        v.extend(el(TRACKS, &t));
        for c in 0..clusters {
            let mut body = el(0xE7, &[c as u8]);
            for i in 0..per {
                body.extend(el(SIMPLE_BLOCK, &[0x81, 0, 0, 0x80, 0xAA, 0xBB]));
                if c + 1 == clusters && i + 1 == per {
                    let mut g = el(BLOCK, &block(2, 1));
                    g.extend(el(DISCARD_PADDING, &pad_ns.to_be_bytes()));
                    body.extend(el(BLOCK_GROUP, &g));
                } else {
                    body.extend(el(SIMPLE_BLOCK, &block(2, if i % 2 == 0 { 1 } else { 3 })));
                }
            }
            if unknown_clusters {
                v.extend(unknown_size(CLUSTER));
                v.extend(body);
            } else {
                v.extend(el(CLUSTER, &body));
            }
        }
        v
    }

    fn run(b: Vec<u8>) -> Result<Option<DecodedAudio>, AudioError> {
        decode(std::io::Cursor::new(b), DecodeLimits::default(), None)
    }

    #[test]
    fn info_duration_sizes_the_reservation() {
        // TimecodeScale (1 ms, 3-byte value) and Duration, 8- and 4-byte floats.
        let scale: &[u8] = &[0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40];
        let f64_ms = |ms: f64| [&[0x44, 0x89, 0x88][..], &ms.to_be_bytes()].concat();
        let f32_ms = |ms: f32| [&[0x44, 0x89, 0x84][..], &ms.to_be_bytes()].concat();
        let ms = 1_000_000;
        assert_eq!(info(&[scale, &f64_ms(1500.0)].concat()), (ms, Some(72_000)));
        assert_eq!(
            info(&f32_ms(250.0)),
            (ms, Some(12_000)),
            "default scale 1 ms"
        );
        // 10 µs ticks.
        let fine: &[u8] = &[0x2A, 0xD7, 0xB1, 0x82, 0x27, 0x10];
        assert_eq!(info(&[fine, &f64_ms(100.0)].concat()), (10_000, Some(48)));
        assert_eq!(info(fine), (10_000, None), "no Duration");
        assert_eq!(info(&f64_ms(f64::NAN)), (ms, None));
        assert_eq!(info(&f64_ms(-5.0)), (ms, None));
        assert_eq!(info(&[0x44, 0x89, 0x82, 1, 2]), (ms, None), "2-byte float");
        assert_eq!(info(&[0x44, 0x89, 0x88, 1]), (ms, None), "cut element");
    }

    /// Without a `Duration`: the last cluster's timecode (its tick count
    /// here) and the 32.767 s a cluster can run past it, whatever the
    /// clusters' sizes say; nothing in a file with no cluster.
    #[test]
    fn last_cluster_sizes_the_reservation_without_a_duration() {
        for unknown in [false, true] {
            let b = webm(7, 3, 0, unknown);
            let mut src = Src::new(std::io::Cursor::new(b)).unwrap();
            src.seek_to(20).unwrap();
            let got = last_cluster_samples(&mut src, 1_000_000).unwrap();
            assert_eq!(got, Some((6 + 32_767) * 48), "unknown sizes: {unknown}");
            assert_eq!(src.pos(), 20, "the read position is kept");
        }
        let head = el(0x1A45_DFA3, &el(0x4282, b"webm"));
        let mut src = Src::new(std::io::Cursor::new(head)).unwrap();
        assert_eq!(last_cluster_samples(&mut src, 1_000_000).unwrap(), None);
    }

    #[test]
    fn vints() {
        assert_eq!(vint(&[0x81], 8, false), Some((1, 1, false)));
        assert_eq!(vint(&[0x40, 0x02], 8, false), Some((2, 2, false)));
        assert_eq!(vint(&[0xFF], 8, false), Some((127, 1, true)));
        assert_eq!(
            vint(&[0x1A, 0x45, 0xDF, 0xA3], 4, true),
            Some((0x1A45_DFA3, 4, false))
        );
        assert_eq!(vint(&[0x00, 1], 8, false), None);
        assert_eq!(vint(&[0x08, 1, 2, 3, 4], 4, true), None);
        assert_eq!(vint(&[0x40], 8, false), None);
    }

    #[test]
    fn lacing_kinds() {
        let b = |flags: u8, rest: &[u8]| [&[0u8, 0, flags][..], rest].concat();
        // Xiph: 3 frames, sizes 2, 256, rest (1).
        let mut x = vec![2, 2, 255, 1];
        x.extend(std::iter::repeat_n(7u8, 2 + 256 + 1));
        let b1 = b(0x02, &x);
        let f = frames(&b1).unwrap();
        assert_eq!(f.iter().map(|f| f.len()).collect::<Vec<_>>(), [2, 256, 1]);
        // Fixed: 2 frames of 3.
        let b2 = b(0x04, &[1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(frames(&b2).unwrap(), [&[1, 2, 3][..], &[4, 5, 6][..]]);
        // EBML: 3 frames, 4 then 4-1=3, rest 2.
        let b3 = b(0x06, &[2, 0x84, 0x80 | 62, 1, 1, 1, 1, 2, 2, 2, 3, 3]);
        let f = frames(&b3).unwrap();
        assert_eq!(f.iter().map(|f| f.len()).collect::<Vec<_>>(), [4, 3, 2]);
        // Sizes past the data: refused, no panic.
        assert!(frames(&b(0x02, &[1, 200, 1])).is_none());
        assert!(frames(&b(0x04, &[1, 1, 2, 3])).is_none());
        assert!(frames(&b(0x06, &[1, 0x90, 1])).is_none());
        assert!(frames(&[0, 0]).is_none());
    }

    #[test]
    fn webm_decodes_with_pre_skip_and_discard_padding() {
        // 3 clusters × 4 blocks: per cluster 1+3+1+3 frames, the last
        // block a single frame: 8+8+(1+3+1+1)=22 frames of 960.
        for unknown in [false, true] {
            let d = run(webm(3, 4, 10_000_000, unknown)).unwrap().unwrap();
            // 10 ms of padding = 480 samples.
            assert_eq!(d.samples.len(), 22 * 960 - 312 - 480, "unknown {unknown}");
            assert!(!d.truncated);
        }
    }

    #[test]
    fn broken_clusters_and_headers() {
        let full = webm(3, 4, 0, false);
        let clusters: Vec<usize> = full
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == CLUSTER.to_be_bytes())
            .map(|(i, _)| i)
            .collect();
        // Garbage over the second cluster's first bytes: its blocks are
        // lost, the third cluster is found again.
        let mut bad = full.clone();
        bad[clusters[1]..clusters[1] + 30].fill(0x00);
        let d = run(bad).unwrap().unwrap();
        assert!(d.truncated);
        assert_eq!(d.samples.len(), 14 * 960 - 312);
        // An audio block in the second cluster claiming a size past the end
        // of the file: the rest of that cluster is lost.
        let mut bad = full.clone();
        let at = clusters[1]
            + full[clusters[1]..]
                .windows(10)
                .position(|w| w[0] == SIMPLE_BLOCK as u8 && w[1] == 0x01 && w[9] == 0x82)
                .unwrap();
        bad[at + 2..at + 9].fill(0xEE);
        let d = run(bad).unwrap().unwrap();
        assert!(d.truncated);
        assert!(
            d.samples.len() < 22 * 960 - 312 - 3 * 960,
            "{}",
            d.samples.len()
        );
        // Cut anywhere: never a panic; a typed error or fewer samples.
        for cut in (1..full.len()).step_by(7) {
            match run(full[..cut].to_vec()) {
                Ok(Some(d)) => assert!(d.samples.len() < 22 * 960),
                Ok(None) => panic!("cut {cut}: handed to symphonia"),
                Err(AudioError::Corrupt(_)) => {}
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
        // Byte flips anywhere: never a panic.
        for at in (0..full.len()).step_by(3) {
            let mut b = full.clone();
            b[at] ^= 0xA5;
            let _ = run(b);
        }
    }

    #[test]
    fn track_choices() {
        let file = |tracks: Vec<u8>| {
            let mut v = el(0x1A45_DFA3, &el(0x4282, b"webm"));
            v.extend(unknown_size(SEGMENT));
            v.extend(el(TRACKS, &tracks));
            v.extend(el(CLUSTER, &el(SIMPLE_BLOCK, &[0x81, 0, 0, 0x80, 1])));
            v
        };
        let r = run(file(track(1, 1, "V_VP8", None)));
        assert!(matches!(r, Err(AudioError::NoAudioTrack)), "{r:?}");
        let r = run(file(track(1, 2, "A_VORBIS", Some(b"x"))));
        assert!(matches!(r, Ok(None)), "{r:?}");
        let r = run(file(track(1, 2, "A_OPUS", None)));
        assert!(matches!(r, Err(AudioError::Corrupt(_))), "{r:?}");
        let mut head = opus_head();
        head[9] = 7; // 7 channels in family 0
        let r = run(file(track(1, 2, "A_OPUS", Some(&head))));
        assert!(matches!(r, Err(AudioError::Corrupt(_))), "{r:?}");
        // Opus first among two audio tracks wins; AAC first goes to symphonia.
        let two = [
            track(1, 2, "A_OPUS", Some(&opus_head())),
            track(2, 2, "A_AAC", None),
        ]
        .concat();
        assert!(matches!(run(file(two)), Ok(Some(_))));
        let two = [
            track(1, 2, "A_AAC", None),
            track(2, 2, "A_OPUS", Some(&opus_head())),
        ]
        .concat();
        assert!(matches!(run(file(two)), Ok(None)));
    }
}
