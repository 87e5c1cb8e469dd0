//! Ogg (RFC 3533) pages to Opus packets (RFC 7845), trimmed the way ffmpeg
//! trims them: pre-skip from the OpusHead at the start, and at the end the
//! samples past the last page's granule position, taken off the last
//! packet. Vorbis and FLAC in Ogg go on to symphonia.
//!
//! Hostile input: pages are CRC-checked and a bad or missing page is
//! skipped by scanning for the next capture pattern, as libogg does; a
//! packet cut by a lost page is dropped; nothing is buffered beyond one
//! packet (at most 16 MiB; the comment packet, which may carry cover art,
//! is skipped without being held).

use std::io::{self, Read, Seek};

use super::opus::{packet_samples, OpusHead, OpusSink, Src};
use super::{AudioError, DecodeLimits, DecodedAudio};

const CONTINUED: u8 = 1;
const BOS: u8 = 2;
const EOS: u8 = 4;
const MAX_PACKET: usize = 16 << 20;

struct Page {
    flags: u8,
    granule: i64,
    serial: u32,
    seq: u32,
    lacing: Vec<u8>,
    body: Vec<u8>,
}

impl Page {
    /// The first packet on the page (all of it, if it continues).
    fn first_packet(&self) -> &[u8] {
        let mut n = 0;
        for &l in &self.lacing {
            n += l as usize;
            if l < 255 {
                break;
            }
        }
        &self.body[..n]
    }
}

enum PageRead {
    Page(Page),
    /// Clean end of the source, between pages.
    Eof,
    /// The source ends inside a page.
    Cut,
    /// No valid page here (bad capture pattern, version or CRC).
    Bad,
}

/// Ogg's CRC-32: polynomial 0x04c11db7, MSB first, initial value 0.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn crc(mut c: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        c = (c << 8) ^ CRC_TABLE[((c >> 24) as u8 ^ b) as usize];
    }
    c
}

fn read_page<R: Read + Seek>(src: &mut Src<R>) -> io::Result<PageRead> {
    let mut h = [0u8; 27];
    match src.read_full(&mut h)? {
        0 => return Ok(PageRead::Eof),
        27 => {}
        _ => return Ok(PageRead::Cut),
    }
    if &h[..4] != b"OggS" || h[4] != 0 {
        return Ok(PageRead::Bad);
    }
    let mut lacing = vec![0u8; h[26] as usize];
    if src.read_full(&mut lacing)? < lacing.len() {
        return Ok(PageRead::Cut);
    }
    let body_len: usize = lacing.iter().map(|&l| l as usize).sum();
    let Some(body) = src.read_vec(body_len)? else {
        return Ok(PageRead::Cut);
    };
    let want = u32::from_le_bytes([h[22], h[23], h[24], h[25]]);
    h[22..26].fill(0);
    if crc(crc(crc(0, &h), &lacing), &body) != want {
        return Ok(PageRead::Bad);
    }
    Ok(PageRead::Page(Page {
        flags: h[5],
        granule: i64::from_le_bytes(h[6..14].try_into().expect("8 bytes")),
        serial: u32::from_le_bytes([h[14], h[15], h[16], h[17]]),
        seq: u32::from_le_bytes([h[18], h[19], h[20], h[21]]),
        lacing,
        body,
    }))
}

/// The largest Ogg page: header, 255 lacing values, 255 × 255 bytes.
const MAX_PAGE: u64 = 27 + 255 + 255 * 255;

/// The granule position of the last page of stream `serial` in the file's
/// last [`MAX_PAGE`] bytes: the stream's length at 48 kHz (pre-skip
/// included), for [`OpusSink::new`] to reserve the output. Only pages whose
/// CRC checks count; `None` when there is none (a cut file, or a stream
/// that ends long before another). The read position is kept.
fn last_granule<R: Read + Seek>(src: &mut Src<R>, serial: u32) -> io::Result<Option<u64>> {
    let tail = src.read_tail(MAX_PAGE)?;
    let found = (0..tail.len().saturating_sub(3))
        .rev()
        .filter(|&i| &tail[i..i + 4] == b"OggS")
        .find_map(|i| {
            let mut page = Src::new(io::Cursor::new(&tail[i..])).ok()?;
            match read_page(&mut page).ok()? {
                PageRead::Page(p) if p.serial == serial && p.granule >= 0 => Some(p.granule as u64),
                _ => None,
            }
        });
    Ok(found)
}

/// What a logical stream carries, from its first packet.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Opus,
    /// Vorbis or FLAC: symphonia decodes these.
    Symphonia,
    /// Audio earshot does not decode.
    OtherAudio(&'static str),
    Video,
    /// Skeleton, Kate subtitles and the like.
    Metadata,
    Unknown(String),
}

fn classify(p: &[u8]) -> Kind {
    let starts = |m: &[u8]| p.starts_with(m);
    if starts(b"OpusHead") {
        Kind::Opus
    } else if starts(b"\x01vorbis") || starts(b"\x7fFLAC") {
        Kind::Symphonia
    } else if starts(b"Speex   ") {
        Kind::OtherAudio("speex")
    } else if starts(b"CELT    ") {
        Kind::OtherAudio("celt")
    } else if starts(b"PCM     ") {
        Kind::OtherAudio("ogg pcm")
    } else if starts(b"\x80theora") || starts(b"OVP80") || starts(b"\x80daala") {
        Kind::Video
    } else if starts(b"fishead\0") || starts(b"\x80kate") || starts(b"fisbone\0") {
        Kind::Metadata
    } else {
        let tag: String = p
            .iter()
            .take(8)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        Kind::Unknown(tag)
    }
}

/// Decodes the first audio stream of an Ogg file when it is Opus (at
/// `out_rate` when one is asked for: [`OpusSink`]). `None` when it is
/// Vorbis or FLAC (symphonia's), an error for other codecs or no audio.
pub(super) fn decode<R: Read + Seek>(
    source: R,
    limits: DecodeLimits,
    out_rate: Option<u32>,
) -> Result<Option<DecodedAudio>, AudioError> {
    let io = |e: io::Error| AudioError::Corrupt(e.to_string());
    let mut src = Src::new(source).map_err(io)?;
    let mut damaged = false;
    // Beginning-of-stream pages come first, one per logical stream.
    let mut streams: Vec<(u32, Kind, Vec<u8>)> = Vec::new();
    let mut pending: Option<Page> = None;
    loop {
        let start = src.pos();
        match read_page(&mut src).map_err(io)? {
            PageRead::Page(p) if p.flags & BOS != 0 => {
                if streams.len() == 255 {
                    return Err(AudioError::Corrupt("more than 255 Ogg streams".into()));
                }
                let first = p.first_packet().to_vec();
                streams.push((p.serial, classify(&first), first));
            }
            PageRead::Page(p) => {
                pending = Some(p);
                break;
            }
            PageRead::Eof | PageRead::Cut if streams.is_empty() => {
                return Err(AudioError::Corrupt("stream ends inside its header".into()));
            }
            PageRead::Eof => break,
            PageRead::Cut => {
                damaged = true;
                break;
            }
            PageRead::Bad => {
                damaged = true;
                if !src.scan_to(start + 1, b"OggS").map_err(io)? {
                    break;
                }
            }
        }
    }
    let audio = streams.iter().find(|(_, k, _)| {
        matches!(
            k,
            Kind::Opus | Kind::Symphonia | Kind::OtherAudio(_) | Kind::Unknown(_)
        )
    });
    let (serial, mut sink) = match audio {
        Some((serial, Kind::Opus, head)) => {
            let head = OpusHead::parse(head)?;
            let length = last_granule(&mut src, *serial).map_err(io)?;
            let sink = OpusSink::new(&head, limits, out_rate, length, src.len)?;
            (*serial, sink)
        }
        Some((_, Kind::Symphonia, _)) => return Ok(None),
        Some((_, Kind::OtherAudio(codec), _)) => {
            return Err(AudioError::UnsupportedCodec {
                codec: (*codec).into(),
            })
        }
        Some((_, Kind::Unknown(tag), _)) => {
            return Err(AudioError::UnsupportedCodec {
                codec: format!("unknown Ogg stream \"{tag}\""),
            })
        }
        _ if streams.is_empty() => {
            return Err(AudioError::Corrupt(
                "Ogg stream without a beginning-of-stream page".into(),
            ))
        }
        _ => return Err(AudioError::NoAudioTrack),
    };

    let mut st = Stream::default();
    let mut eos = false;
    loop {
        let page = match pending.take() {
            Some(p) => p,
            None => {
                let start = src.pos();
                match read_page(&mut src).map_err(io)? {
                    PageRead::Page(p) => p,
                    PageRead::Eof => break,
                    PageRead::Cut => {
                        damaged = true;
                        break;
                    }
                    PageRead::Bad => {
                        damaged = true;
                        if !src.scan_to(start + 1, b"OggS").map_err(io)? {
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        if page.serial != serial {
            continue;
        }
        st.page(&page, &mut sink)?;
        if page.flags & EOS != 0 {
            eos = true;
            break;
        }
    }
    sink.truncated |= damaged || st.damaged || !eos;
    Ok(Some(sink.finish()?))
}

/// Packet assembly and the granule timeline of the chosen stream.
#[derive(Default)]
struct Stream {
    next_seq: Option<u32>,
    /// Bytes of the packet in progress (empty while `dropping`).
    partial: Vec<u8>,
    in_packet: bool,
    /// The packet in progress is being dropped: the comment header, or
    /// one whose start was lost or which grew past `MAX_PACKET`.
    dropping: bool,
    /// Packets completed after the identification header.
    packets: u64,
    /// Where the stream starts on the granule timeline (48 kHz samples),
    /// once the first audio page with a granule position has been seen.
    start: Option<i64>,
    /// Total TOC duration of the audio packets so far.
    total: i64,
    damaged: bool,
}

impl Stream {
    fn page(&mut self, p: &Page, sink: &mut OpusSink) -> Result<(), AudioError> {
        if self.next_seq.is_some_and(|s| s != p.seq) {
            // A lost page: whatever packet spans the gap is gone.
            self.damaged = true;
            self.in_packet = false;
        }
        self.next_seq = Some(p.seq.wrapping_add(1));
        if p.flags & CONTINUED != 0 {
            if !self.in_packet {
                // The start of this packet is missing.
                self.in_packet = true;
                self.dropping = true;
                self.damaged = true;
            }
        } else if self.in_packet {
            self.damaged = true;
            self.in_packet = false;
        }
        let mut off = 0;
        let mut completed = 0u32;
        let mut last_dur = 0i64;
        for &lace in &p.lacing {
            let seg = &p.body[off..off + lace as usize];
            off += lace as usize;
            if !self.in_packet {
                self.in_packet = true;
                self.partial.clear();
                // Packet 0 after the identification header is OpusTags.
                self.dropping = self.packets == 0;
            }
            if !self.dropping {
                if self.partial.len() + seg.len() > MAX_PACKET {
                    self.dropping = true;
                    self.damaged = true;
                    self.partial = Vec::new();
                } else {
                    self.partial.extend_from_slice(seg);
                }
            }
            if lace < 255 {
                self.in_packet = false;
                self.packets += 1;
                if self.dropping {
                    continue;
                }
                let dur = packet_samples(&self.partial).unwrap_or(0) as i64;
                sink.push(&self.partial)?;
                self.total += dur;
                last_dur = dur;
                completed += 1;
            }
        }
        if completed > 0 && p.granule != -1 {
            if self.start.is_none() {
                // The first page's granule minus what it holds is where the
                // stream begins; a first page that is also the last may
                // end early (end trimming) and starts at 0.
                let start = if p.flags & EOS != 0 {
                    0
                } else {
                    p.granule - self.total
                };
                if start < 0 {
                    sink.trim_start((-start) as usize);
                }
                sink.start_known();
                self.start = Some(start);
            }
            if p.flags & EOS != 0 {
                let start = self.start.unwrap_or(0);
                let excess = (start + self.total - p.granule).min(last_dur);
                if excess > 0 {
                    sink.trim_end(excess as usize);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// One Ogg page holding `packets` (each laced whole), CRC filled in.
    pub(crate) fn page(
        flags: u8,
        granule: i64,
        serial: u32,
        seq: u32,
        packets: &[&[u8]],
    ) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for p in packets {
            let mut n = p.len();
            while n >= 255 {
                lacing.push(255);
                n -= 255;
            }
            lacing.push(n as u8);
            body.extend_from_slice(p);
        }
        let mut v = b"OggS\0".to_vec();
        v.push(flags);
        v.extend_from_slice(&granule.to_le_bytes());
        v.extend_from_slice(&serial.to_le_bytes());
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.push(lacing.len() as u8);
        v.extend_from_slice(&lacing);
        v.extend_from_slice(&body);
        let c = crc(0, &v);
        v[22..26].copy_from_slice(&c.to_le_bytes());
        v
    }

    fn opus_head(channels: u8) -> Vec<u8> {
        let mut v = b"OpusHead".to_vec();
        v.extend_from_slice(&[1, channels]);
        v.extend_from_slice(&312u16.to_le_bytes());
        v.extend_from_slice(&48_000u32.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0]);
        v
    }

    /// `n` 20 ms CELT packets (a bare TOC byte decodes as silence), the
    /// last page ending at `end` samples past pre-skip.
    pub(crate) fn ogg_opus(n: usize, end: i64) -> Vec<u8> {
        let pkt: &[u8] = &[31 << 3];
        let mut v = page(BOS, 0, 7, 0, &[&opus_head(1)]);
        v.extend(page(0, 0, 7, 1, &[b"OpusTags\0\0\0\0\0\0\0\0"]));
        let mut seq = 2;
        let mut done = 0;
        while done < n {
            let k = (n - done).min(10);
            done += k;
            let last = done == n;
            let g = if last { end + 312 } else { done as i64 * 960 };
            v.extend(page(if last { EOS } else { 0 }, g, 7, seq, &vec![pkt; k]));
            seq += 1;
        }
        v
    }

    fn run(bytes: Vec<u8>) -> Result<Option<DecodedAudio>, AudioError> {
        decode(std::io::Cursor::new(bytes), DecodeLimits::default(), None)
    }

    /// Where each page of a well-formed Ogg file starts.
    fn page_starts(b: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 27 <= b.len() && &b[i..i + 4] == b"OggS" {
            out.push(i);
            let n = b[i + 26] as usize;
            i += 27
                + n
                + b[i + 27..i + 27 + n]
                    .iter()
                    .map(|&l| l as usize)
                    .sum::<usize>();
        }
        out
    }

    /// Moves the granule position of the page at `at` by `delta`, CRC
    /// mended.
    fn shift_granule(b: &mut [u8], at: usize, delta: i64) {
        let g = i64::from_le_bytes(b[at + 6..at + 14].try_into().unwrap()) + delta;
        b[at + 6..at + 14].copy_from_slice(&g.to_le_bytes());
        b[at + 22..at + 26].fill(0);
        let n = b[at + 26] as usize;
        let len = 27
            + n
            + b[at + 27..at + 27 + n]
                .iter()
                .map(|&l| l as usize)
                .sum::<usize>();
        let c = crc(0, &b[at..at + len]);
        b[at + 22..at + 26].copy_from_slice(&c.to_le_bytes());
    }

    /// The reservation's figure: the final page's granule, found from the
    /// file's end; a cut file's last whole page; nothing for another stream.
    #[test]
    fn last_granule_reads_the_final_page() {
        let real = std::fs::read(crate::testing::fixtures_dir().join("opus.ogg")).unwrap();
        let pages = page_starts(&real);
        let granule = |at: usize| i64::from_le_bytes(real[at + 6..at + 14].try_into().unwrap());
        let serial = u32::from_le_bytes(real[14..18].try_into().unwrap());
        let read = |b: &[u8], serial: u32| {
            let mut src = Src::new(std::io::Cursor::new(b.to_vec())).unwrap();
            src.seek_to(40).unwrap();
            let g = last_granule(&mut src, serial).unwrap();
            assert_eq!(src.pos(), 40, "the read position is kept");
            g
        };
        let (last, before) = (pages[pages.len() - 1], pages[pages.len() - 2]);
        assert_eq!(read(&real, serial), Some(granule(last) as u64));
        assert_eq!(
            read(&real[..last + 30], serial),
            Some(granule(before) as u64)
        );
        assert_eq!(read(&real, serial ^ 1), None);
    }

    /// Resampling while decoding (what `load_file` asks for) gives the
    /// samples of decoding whole at 48 kHz and resampling afterwards, bit
    /// for bit, through every trim: pre-skip, a stream whose first granule
    /// says it starts 2000 samples before zero, an end granule that cuts
    /// into the last packet, and a file cut short. Real speech (the
    /// fixtures' `opus.ogg`), so equal samples mean something.
    #[test]
    fn resampling_as_it_decodes_matches_decoding_whole_then_resampling() {
        let real = std::fs::read(crate::testing::fixtures_dir().join("opus.ogg")).unwrap();
        let pages = page_starts(&real);
        let granule = |at: usize| i64::from_le_bytes(real[at + 6..at + 14].try_into().unwrap());
        let first_audio = *pages
            .iter()
            .find(|&&at| granule(at) > 0)
            .expect("an audio page");
        let last = *pages.last().unwrap();
        assert_ne!(first_audio, last, "opus.ogg should span several pages");
        let mut early = real.clone();
        shift_granule(&mut early, first_audio, -2_000);
        shift_granule(&mut early, last, -2_500);
        let lim = DecodeLimits::default();
        let whole_len = run(real.clone()).unwrap().unwrap().samples.len();
        for (name, bytes) in [
            ("as written", real.clone()),
            ("starting before zero, trimmed at the end", early),
            ("cut at two thirds", real[..real.len() * 2 / 3].to_vec()),
        ] {
            let at48 = run(bytes.clone()).unwrap().unwrap();
            let at16 = decode(std::io::Cursor::new(bytes), lim, Some(16_000))
                .unwrap()
                .unwrap();
            assert_eq!(
                (at48.sample_rate, at16.sample_rate),
                (48_000, 16_000),
                "{name}"
            );
            assert_eq!(at48.truncated, at16.truncated, "{name}");
            let want = crate::audio::resample_to_16k(&at48.samples, 48_000).unwrap();
            assert_eq!(at16.samples.len(), want.len(), "{name}");
            assert!(
                at16.samples
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: samples differ"
            );
            assert!(want.iter().any(|&x| x.abs() > 0.01), "{name}: silent");
            println!(
                "{name}: {} samples at 48 kHz of {whole_len}",
                at48.samples.len()
            );
            if name.starts_with("starting") {
                // 2000 off the start, 500 more than before off the end
                // (as far as the last packet allows).
                assert!(at48.samples.len() < whole_len - 2_000, "{name}");
            }
        }
    }

    #[test]
    fn crc_is_ogg_crc32() {
        // CRC-32 with polynomial 0x04c11db7, init 0, no reflection, no
        // final xor: the standard check value for "123456789".
        assert_eq!(crc(0, b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn pre_skip_and_end_granule_trim() {
        // 25 packets decode to 24 000 samples; the last granule says the
        // audio is 23 500 long after the 312 of pre-skip.
        let d = run(ogg_opus(25, 23_500)).unwrap().unwrap();
        assert_eq!(d.sample_rate, 48_000);
        assert_eq!(d.samples.len(), 23_500);
        assert!(!d.truncated);
        // The end trim never reaches past the last packet.
        let d = run(ogg_opus(25, 1_000)).unwrap().unwrap();
        assert_eq!(d.samples.len(), 24_000 - 960 - 312);
    }

    #[test]
    fn damaged_pages_are_skipped_and_flagged() {
        let full = ogg_opus(40, 40 * 960 - 312);
        // Flip a byte inside the third audio page: its CRC fails, the
        // reader resyncs on the next page, and 10 packets are lost.
        let mut bad = full.clone();
        let third = find_all(&full, b"OggS")[4];
        bad[third + 40] ^= 0x55;
        let d = run(bad).unwrap().unwrap();
        assert!(d.truncated);
        assert_eq!(d.samples.len(), 30 * 960 - 312);
        // Cut inside a page: what came before decodes.
        let cut = find_all(&full, b"OggS")[3] + 30;
        let d = run(full[..cut].to_vec()).unwrap().unwrap();
        assert!(d.truncated);
        assert_eq!(d.samples.len(), 10 * 960 - 312);
        // Cut inside the headers.
        for n in [4, 20, 40] {
            let r = run(full[..n].to_vec());
            assert!(matches!(r, Err(AudioError::Corrupt(_))), "{n}: {r:?}");
        }
        // Garbage between pages.
        let at = find_all(&full, b"OggS")[3];
        let mut junk = full[..at].to_vec();
        junk.extend_from_slice(&[0xAB; 5000]);
        junk.extend_from_slice(&full[at..]);
        let d = run(junk).unwrap().unwrap();
        assert_eq!(d.samples.len(), 40 * 960 - 312);
        assert!(d.truncated);
    }

    fn find_all(h: &[u8], pat: &[u8]) -> Vec<usize> {
        h.windows(pat.len())
            .enumerate()
            .filter(|(_, w)| *w == pat)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn stream_kinds() {
        let head_only = |first: &[u8]| {
            let mut v = page(BOS, 0, 1, 0, &[first]);
            v.extend(page(EOS, 0, 1, 1, &[b"x"]));
            v
        };
        let r = run(head_only(b"Speex   1.2rc1\0\0\0\0\0\0"));
        assert!(
            matches!(&r, Err(AudioError::UnsupportedCodec { codec }) if codec == "speex"),
            "{r:?}"
        );
        let r = run(head_only(b"\x80theora\x03\x02\x01"));
        assert!(matches!(r, Err(AudioError::NoAudioTrack)), "{r:?}");
        let r = run(head_only(b"WHATEVER and more"));
        assert!(
            matches!(&r, Err(AudioError::UnsupportedCodec { codec }) if codec.contains("WHATEVER")),
            "{r:?}"
        );
        assert!(matches!(run(head_only(b"\x01vorbis\0\0\0\0")), Ok(None)));
        // A corrupt identification header.
        let mut h = opus_head(1);
        h[9] = 0;
        let r = run(head_only(&h));
        assert!(matches!(r, Err(AudioError::Corrupt(_))), "{r:?}");
        // Pages but no beginning-of-stream page.
        let r = run(page(0, 960, 1, 5, &[&[31 << 3]]));
        assert!(matches!(r, Err(AudioError::Corrupt(_))), "{r:?}");
    }
}
