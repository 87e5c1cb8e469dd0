//! Word-level timestamps from cross-attention and dynamic time warping.
//!
//! Whisper predicts segment timestamps, not word ones, but a few decoder
//! heads ("alignment heads") attend to the audio frame being spoken while
//! each text token is produced. The reference implementation (openai's
//! `timing.py`) and faster-whisper (CTranslate2's `align`) turn that into word
//! times the same way, and this module follows them step for step so that
//! the times agree:
//!
//! 1. one forced decoder pass over the start sequence, `<|notimestamps|>`,
//!    the window's text tokens and end-of-text, keeping the alignment heads'
//!    pre-softmax cross-attention (the model side: `WhisperModel::prefill_aligned`);
//! 2. per head, crop to the window's real 20 ms frames, softmax over frames,
//!    standardise over tokens, median-filter along frames (width 7, reflect
//!    padding), then average the heads ([`alignment_matrix`]);
//! 3. DTW on the negated matrix ([`dtw`]); a token's time is where its row's
//!    path first arrives;
//! 4. tokens grouped into words by the reference's rules
//!    ([`split_word_tokens`]), word probability = mean token probability;
//! 5. the duration heuristics, punctuation merging and segment snapping
//!    ([`place_words`]).
//!
//! Everything here is plain `f32`/`f64` arithmetic with no I/O, so the rules
//! are unit-tested without a model.

use super::decode::Word;

/// Width of the median filter over attention frames.
pub const MEDIAN_FILTER_WIDTH: usize = 7;
/// Encoder frames per second (20 ms each).
pub const FRAMES_PER_SECOND: f64 = 50.0;
/// Punctuation faster-whisper ignores when scoring hallucinations.
const ANOMALY_PUNCTUATION: &str = "\"'“¿([{-\"'.。,，!！?？:：”)]}、";
/// ASCII punctuation (Python's `string.punctuation`).
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const SENTENCE_END_MARKS: &str = ".。!！?？";

/// Alignment heads of the catalog models whose files may not carry them
/// (decoded from the reference implementation's table; whisper.cpp lists
/// the same). Models whose config carries `alignment_heads` use those.
pub fn builtin_alignment_heads(model: &str) -> Option<Vec<(usize, usize)>> {
    let heads: &[(usize, usize)] = match model {
        "tiny.en" => &[
            (1, 0),
            (2, 0),
            (2, 5),
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4),
        ],
        "tiny" => &[(2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)],
        "base.en" => &[(3, 3), (4, 7), (5, 1), (5, 5), (5, 7)],
        "base" => &[
            (3, 1),
            (4, 2),
            (4, 3),
            (4, 7),
            (5, 1),
            (5, 2),
            (5, 4),
            (5, 6),
        ],
        _ => return None,
    };
    Some(heads.to_vec())
}

/// Every head of the upper half of the decoder's layers: the fallback the
/// reference uses for a model with no known alignment heads.
pub fn upper_half_heads(layers: usize, heads: usize) -> Vec<(usize, usize)> {
    (layers / 2..layers)
        .flat_map(|l| (0..heads).map(move |h| (l, h)))
        .collect()
}

/// The token × frame alignment matrix from per-head attention scores.
///
/// `scores` is `[heads][rows][stride]` (row-major, pre-softmax QKᵀ/√d);
/// only the first `frames` columns are real audio. Returns `[rows][frames]`:
/// per head, softmax over the cropped frames, standardise each frame column
/// over the rows (population std), median-filter each row, then the mean
/// over heads. Computed in `f32`, as the reference does.
pub fn alignment_matrix(
    scores: &[f32],
    heads: usize,
    rows: usize,
    stride: usize,
    frames: usize,
) -> Vec<f32> {
    let frames = frames.min(stride);
    let mut out = vec![0f32; rows * frames];
    if frames == 0 || rows == 0 || heads == 0 {
        return out;
    }
    let mut w = vec![0f32; rows * frames];
    let mut filtered = vec![0f32; frames];
    let mut mean = vec![0f32; frames];
    let mut std = vec![0f32; frames];
    for h in 0..heads {
        for r in 0..rows {
            let src = &scores[(h * rows + r) * stride..(h * rows + r) * stride + frames];
            let dst = &mut w[r * frames..(r + 1) * frames];
            let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (s - max).exp();
                sum += *d;
            }
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            dst.iter_mut().for_each(|d| *d *= inv);
        }
        // Column statistics accumulated a row at a time: each frame's sums
        // add the rows in the same order as a walk down the column would
        // (so the same floats), but memory is read in rows, not 6 KB apart.
        mean.fill(0.0);
        for row in w.chunks_exact(frames) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f32);
        std.fill(0.0);
        for row in w.chunks_exact(frames) {
            for ((v, &m), &x) in std.iter_mut().zip(&mean).zip(row) {
                *v += (x - m).powi(2);
            }
        }
        std.iter_mut().for_each(|v| *v = (*v / rows as f32).sqrt());
        for row in w.chunks_exact_mut(frames) {
            for ((x, &m), &sd) in row.iter_mut().zip(&mean).zip(&std) {
                *x = if sd > 0.0 { (*x - m) / sd } else { 0.0 };
            }
        }
        for r in 0..rows {
            let row = &w[r * frames..(r + 1) * frames];
            median_filter(row, MEDIAN_FILTER_WIDTH, &mut filtered);
            for (o, x) in out[r * frames..(r + 1) * frames].iter_mut().zip(&filtered) {
                *o += x / heads as f32;
            }
        }
    }
    out
}

/// Median of each `width` window along `x`, reflect-padded at both ends
/// (`x[1], x[0] | x[0..] | x[n-1], x[n-2]`). A row no longer than half the
/// width is passed through (reflect padding needs more samples than that).
pub fn median_filter(x: &[f32], width: usize, out: &mut [f32]) {
    let n = x.len();
    let half = width / 2;
    if n <= half {
        out[..n].copy_from_slice(x);
        return;
    }
    // Inside the row a window is a plain slice; only the `half` samples
    // at each end read reflected neighbours. Whisper's width, 7, takes its
    // median from a sorting network in `total_cmp`'s order, the order the
    // selection uses, so the same float comes out.
    // Width 7 inside the row: the network runs on whole runs of positions
    // at once (each comparator a min and a max over 64 lanes, which the
    // compiler vectorises), on integer keys ordered as `total_cmp` orders
    // floats, so the same float comes out as from [`median7`]. Per
    // position one at a time, the filter was ~2% of a word-timed run.
    let interior = if width == 7 && n >= width {
        median7_interior(x, &mut out[half..n - half]);
        half..n - half
    } else {
        0..0
    };
    let mut win = vec![0f32; width];
    for (j, o) in out.iter_mut().enumerate().take(n) {
        if interior.contains(&j) {
            continue;
        }
        if j >= half && j - half + width <= n {
            win.copy_from_slice(&x[j - half..j - half + width]);
        } else {
            for (k, slot) in win.iter_mut().enumerate() {
                *slot = x[reflect(j as isize + k as isize - half as isize, n)];
            }
        }
        *o = match <[f32; 7]>::try_from(win.as_slice()) {
            Ok(seven) => median7(seven),
            Err(_) => {
                win.select_nth_unstable_by(half, |a, b| a.total_cmp(b));
                win[half]
            }
        };
    }
}

/// Index `i` of a row of `n` samples, reflected at both ends
/// (`-1 → 1`, `n → n − 2`); valid for `−n < i ≤ 2n − 2`.
fn reflect(i: isize, n: usize) -> usize {
    let read = i.unsigned_abs();
    if read >= n {
        2 * n - read - 2
    } else {
        read
    }
}

/// `f32::total_cmp`'s order as an `i32` order (the same bit trick): its
/// own inverse.
fn order_key(bits: i32) -> i32 {
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// `out[j]` = the median of `x[j..j + 7]` under `total_cmp`, for every `j`
/// (`out.len() == x.len() - 6`): [`MEDIAN7_NET`] over runs of positions.
fn median7_interior(x: &[f32], out: &mut [f32]) {
    const LANES: usize = 64;
    debug_assert_eq!(out.len() + 6, x.len());
    for (c, chunk) in out.chunks_mut(LANES).enumerate() {
        let base = c * LANES;
        let m = chunk.len();
        let mut v = [[0i32; LANES]; 7];
        for (i, lane) in v.iter_mut().enumerate() {
            for (slot, f) in lane.iter_mut().zip(&x[base + i..base + i + m]) {
                *slot = order_key(f.to_bits() as i32);
            }
        }
        for (a, b) in MEDIAN7_NET {
            let (lo, hi) = v.split_at_mut(b);
            let (va, vb) = (&mut lo[a], &mut hi[0]);
            for (p, q) in va.iter_mut().zip(vb.iter_mut()) {
                let (small, big) = ((*p).min(*q), (*p).max(*q));
                *p = small;
                *q = big;
            }
        }
        for (o, k) in chunk.iter_mut().zip(&v[3]) {
            *o = f32::from_bits(order_key(*k) as u32);
        }
    }
}

/// A 16-comparator sorting network for seven values (every pair `a < b`).
const MEDIAN7_NET: [(usize, usize); 16] = [
    (0, 6),
    (2, 3),
    (4, 5),
    (0, 2),
    (1, 4),
    (3, 6),
    (0, 1),
    (2, 5),
    (3, 4),
    (1, 2),
    (4, 6),
    (2, 3),
    (4, 5),
    (1, 2),
    (3, 4),
    (5, 6),
];

/// The median of seven values under `f32::total_cmp`: the sorting network
/// [`MEDIAN7_NET`], then the middle.
fn median7(mut v: [f32; 7]) -> f32 {
    for (a, b) in MEDIAN7_NET {
        if v[a].total_cmp(&v[b]).is_gt() {
            v.swap(a, b);
        }
    }
    v[3]
}

/// Dynamic time warping that maximises the summed matrix along a monotone
/// path from the first cell to the last. Returns `(row, column)` pairs in
/// path order. Ties prefer moving in time (the reference's rule).
pub fn dtw(matrix: &[f32], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let w = cols + 1;
    let mut cost = vec![f32::INFINITY; (rows + 1) * w];
    let mut trace = vec![0u8; (rows + 1) * w];
    cost[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * w + j] = -matrix[(i - 1) * cols + (j - 1)] + c;
            trace[i * w + j] = t;
        }
    }
    trace[..=cols].fill(2);
    for i in 0..=rows {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (rows, cols);
    let mut path = Vec::with_capacity(rows + cols);
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

/// Languages written without spaces: words are split at every complete
/// character instead.
pub fn splits_on_characters(language: &str) -> bool {
    matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue")
}

/// Groups text tokens into words, as the reference does: first into the
/// shortest runs that decode to complete characters (`decode` returns
/// U+FFFD for a partial UTF-8 sequence), then, unless `by_character`, runs
/// are joined into the previous word unless they start with a space or are
/// punctuation.
pub fn split_word_tokens<E>(
    tokens: &[u32],
    decode: impl Fn(&[u32]) -> Result<String, E>,
    by_character: bool,
) -> Result<Vec<(String, Vec<u32>)>, E> {
    const REPLACEMENT: char = '\u{fffd}';
    let full: Vec<char> = decode(tokens)?.chars().collect();
    let mut pieces: Vec<(String, Vec<u32>)> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut offset = 0usize;
    for &t in tokens {
        current.push(t);
        let text = decode(&current)?;
        let complete = match text.chars().position(|c| c == REPLACEMENT) {
            None => true,
            Some(p) => full.get(offset + p) == Some(&REPLACEMENT),
        };
        if complete {
            offset += text.chars().count();
            pieces.push((text, std::mem::take(&mut current)));
        }
    }
    if by_character {
        return Ok(pieces);
    }
    let mut words: Vec<(String, Vec<u32>)> = Vec::new();
    for (text, toks) in pieces {
        let starts_word =
            text.starts_with(' ') || ASCII_PUNCTUATION.contains(text.trim()) || words.is_empty();
        match words.last_mut() {
            Some((w, wt)) if !starts_word => {
                w.push_str(&text);
                wt.extend(toks);
            }
            _ => words.push((text, toks)),
        }
    }
    Ok(words)
}

/// A word of one window, times relative to the window's start.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// Word times from the DTW path: `words` are the window's text words (the
/// end-of-text token excluded), `path` covers `n_text + 1` rows (the
/// `<|notimestamps|>` row, then one per text token), `token_probs` one per
/// text token.
pub fn timed_words(
    words: Vec<(String, Vec<u32>)>,
    path: &[(usize, usize)],
    token_probs: &[f32],
) -> Vec<TimedWord> {
    // The frame where each row is first reached.
    let mut jump_times: Vec<f64> = Vec::new();
    let mut last_row = None;
    for &(r, c) in path {
        if last_row != Some(r) {
            jump_times.push(c as f64 / FRAMES_PER_SECOND);
            last_row = Some(r);
        }
    }
    let mut out = Vec::with_capacity(words.len());
    let mut at = 0usize;
    for (word, tokens) in words {
        let end_at = at + tokens.len();
        let (Some(&start), Some(&end)) = (jump_times.get(at), jump_times.get(end_at)) else {
            break;
        };
        let probs = &token_probs[at.min(token_probs.len())..end_at.min(token_probs.len())];
        let probability = if probs.is_empty() {
            0.0
        } else {
            probs.iter().map(|&p| p as f64).sum::<f64>() / probs.len() as f64
        };
        out.push(TimedWord {
            word,
            tokens,
            start,
            end,
            probability,
        });
        at = end_at;
    }
    out
}

/// `(median, max)` word duration of a window, and the reference's fix for
/// over-long words at sentence boundaries.
pub fn clamp_sentence_ends(words: &mut [TimedWord]) -> (f64, f64) {
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d != 0.0)
        .collect();
    let median = if durations.is_empty() {
        0.0
    } else {
        durations.sort_by(f64::total_cmp);
        let n = durations.len();
        if n % 2 == 1 {
            durations[n / 2]
        } else {
            (durations[n / 2 - 1] + durations[n / 2]) / 2.0
        }
    };
    let median = median.min(0.7);
    let max = median * 2.0;
    if !durations.is_empty() {
        for i in 1..words.len() {
            if words[i].end - words[i].start > max {
                if SENTENCE_END_MARKS.contains(words[i].word.as_str()) {
                    words[i].end = words[i].start + max;
                } else if SENTENCE_END_MARKS.contains(words[i - 1].word.as_str()) {
                    words[i].start = words[i].end - max;
                }
            }
        }
    }
    (median, max)
}

/// Joins opening punctuation to the following word and closing punctuation
/// to the previous one; the emptied words stay (with no text and no
/// tokens) so token counts still line up with segments.
pub fn merge_punctuations(words: &mut [TimedWord], prepended: &str, appended: &str) {
    if words.len() >= 2 {
        let mut j = words.len() - 1;
        for i in (0..words.len() - 1).rev() {
            let w = &words[i].word;
            if w.starts_with(' ') && prepended.contains(w.trim()) {
                let pw = std::mem::take(&mut words[i].word);
                let pt = std::mem::take(&mut words[i].tokens);
                let f = &mut words[j];
                f.word = pw + &f.word;
                let mut t = pt;
                t.extend_from_slice(&f.tokens);
                f.tokens = t;
            } else {
                j = i;
            }
        }
    }
    let mut i = 0;
    for j in 1..words.len() {
        if !words[i].word.ends_with(' ') && appended.contains(words[j].word.as_str()) {
            let (fw, ft) = (
                std::mem::take(&mut words[j].word),
                std::mem::take(&mut words[j].tokens),
            );
            words[i].word.push_str(&fw);
            words[i].tokens.extend(ft);
        } else {
            i = j;
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One segment of a window, as the word placer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentSpan {
    pub start: f64,
    pub end: f64,
    /// Number of text tokens (timestamps excluded) in the segment.
    pub text_tokens: usize,
    pub words: Vec<Word>,
}

/// Distributes a window's words over its segments and applies the
/// reference's boundary rules: over-long first words after a pause are
/// trimmed, and each segment's edges snap to its first and last word
/// (unless they disagree by more than 0.5 s, in which case the word is
/// clamped instead). `time_offset` is the window's start in the recording;
/// `last_speech` the end of the last word before this window. Returns the
/// new end of speech.
pub fn place_words(
    mut words: Vec<TimedWord>,
    segments: &mut [SegmentSpan],
    time_offset: f64,
    prepended: &str,
    appended: &str,
    mut last_speech: f64,
) -> f64 {
    let (median, max) = clamp_sentence_ends(&mut words);
    merge_punctuations(&mut words, prepended, appended);
    let mut k = 0usize;
    for seg in segments.iter_mut() {
        let mut saved = 0usize;
        let mut out: Vec<Word> = Vec::new();
        while k < words.len() && saved < seg.text_tokens {
            let w = &words[k];
            if !w.word.is_empty() {
                out.push(Word {
                    word: w.word.clone(),
                    start: round2(time_offset + w.start),
                    end: round2(time_offset + w.end),
                    probability: w.probability,
                    speaker: None,
                });
            }
            saved += w.tokens.len();
            k += 1;
        }
        if !out.is_empty() {
            let long_first = out[0].end - out[0].start > max
                || (out.len() > 1 && out[1].end - out[0].start > max * 2.0);
            if out[0].end - last_speech > median * 4.0 && long_first {
                if out.len() > 1 && out[1].end - out[1].start > max {
                    let boundary = (out[1].end / 2.0).max(out[1].end - max);
                    out[0].end = boundary;
                    out[1].start = boundary;
                }
                out[0].start = (out[0].end - max).max(0.0);
            }
            if seg.start < out[0].end && seg.start - 0.5 > out[0].start {
                out[0].start = (out[0].end - median).min(seg.start).max(0.0);
            } else {
                seg.start = out[0].start;
            }
            let last = out.len() - 1;
            if seg.end > out[last].start && seg.end + 0.5 < out[last].end {
                out[last].end = (out[last].start + median).max(seg.end);
            } else {
                seg.end = out[last].end;
            }
            last_speech = seg.end;
        }
        seg.words = out;
    }
    last_speech
}

/// How unlikely a word looks: improbable, very short or very long.
fn word_anomaly(w: &Word) -> f64 {
    let d = w.end - w.start;
    let mut score = 0.0;
    if w.probability < 0.15 {
        score += 1.0;
    }
    if d < 0.133 {
        score += (0.133 - d) * 15.0;
    }
    if d > 2.0 {
        score += d - 2.0;
    }
    score
}

/// Whether a segment's first eight words look hallucinated.
pub fn is_anomalous(seg: Option<&SegmentSpan>) -> bool {
    let Some(seg) = seg else { return false };
    if seg.words.is_empty() {
        return false;
    }
    let words: Vec<&Word> = seg
        .words
        .iter()
        .filter(|w| !ANOMALY_PUNCTUATION.contains(w.word.as_str()))
        .take(8)
        .collect();
    let score: f64 = words.iter().map(|w| word_anomaly(w)).sum();
    score >= 3.0 || score + 0.01 >= words.len() as f64
}

/// What the hallucination check decided for one window.
#[derive(Debug, Clone, PartialEq)]
pub enum SilenceSkip {
    /// Keep every segment.
    Keep,
    /// Drop the whole window and seek to this frame (mel frames, absolute).
    DropWindow { seek: usize },
    /// Keep the segments before `from`, seek to this frame.
    Truncate { from: usize, seek: usize },
}

/// The window's timing, for [`hallucination_skip`].
#[derive(Debug, Clone, Copy)]
pub struct WindowTimes {
    /// Start of the window (seconds).
    pub time_offset: f64,
    /// Seconds of real audio in the window.
    pub duration: f64,
    /// The window's mel frame at its start.
    pub seek: usize,
    /// Seconds of audio in the whole stream.
    pub content_duration: f64,
    /// Mel frames in the whole stream.
    pub content_frames: usize,
}

/// faster-whisper's `hallucination_silence_threshold`: a window whose
/// first worded segment looks hallucinated and starts after a silence
/// longer than `threshold` is skipped up to that segment; a hallucinated
/// segment with silence (or more hallucination) on both sides ends the
/// window there.
pub fn hallucination_skip(
    segments: &[SegmentSpan],
    t: WindowTimes,
    threshold: f64,
    last_speech: f64,
) -> SilenceSkip {
    let frames_per_second = 100.0;
    let first = segments.iter().find(|s| !s.words.is_empty());
    if let Some(f) = first {
        if is_anomalous(Some(f)) {
            let gap = f.start - t.time_offset;
            if gap > threshold {
                return SilenceSkip::DropWindow {
                    seek: t.seek + (gap * frames_per_second).round() as usize,
                };
            }
        }
    }
    let window_end = t.time_offset + 30.0;
    let mut hal_last_end = last_speech;
    for (si, seg) in segments.iter().enumerate() {
        if seg.words.is_empty() {
            continue;
        }
        if is_anomalous(Some(seg)) {
            let next = segments[si + 1..].iter().find(|s| !s.words.is_empty());
            let hal_next_start = match next {
                Some(n) => n.words[0].start,
                None => t.time_offset + t.duration,
            };
            let silence_before = seg.start - hal_last_end > threshold
                || seg.start < threshold
                || seg.start - t.time_offset < 2.0;
            let silence_after = hal_next_start - seg.end > threshold
                || is_anomalous(next)
                || window_end - seg.end < 2.0;
            if silence_before && silence_after {
                let mut seek =
                    ((t.time_offset + 1.0).max(seg.start) * frames_per_second).round() as usize;
                if t.content_duration - seg.end < threshold {
                    seek = t.content_frames;
                }
                return SilenceSkip::Truncate { from: si, seek };
            }
        }
        hal_last_end = seg.end;
    }
    SilenceSkip::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_filter_reflects_at_the_edges() {
        let x = [5.0, 1.0, 9.0, 2.0, 7.0, 3.0, 8.0, 4.0];
        let mut out = [0f32; 8];
        median_filter(&x, 7, &mut out);
        // j = 0 reads x[3], x[2], x[1], x[0], x[1], x[2], x[3] = 2 9 1 5 1 9 2.
        assert_eq!(out[0], 2.0);
        // j = 4 reads x[1..=7] = 1 9 2 7 3 8 4 → 4.
        assert_eq!(out[4], 4.0);
        // j = 7 reads x[4], x[5], x[6], x[7], x[6], x[5], x[4] = 7 3 8 4 8 3 7 → 7.
        assert_eq!(out[7], 7.0);
        // Too short to pad: unchanged.
        let mut o3 = [0f32; 3];
        median_filter(&[3.0, 1.0, 2.0], 7, &mut o3);
        assert_eq!(o3, [3.0, 1.0, 2.0]);
    }

    /// The width-7 path (slices and a sorting network) against the
    /// generic one (reflected reads and a selection), on rows with ties,
    /// signed zeros and infinities, at lengths around the reflect edges;
    /// and the network's middle output is the median of every 0/1 input,
    /// so (the 0-1 principle) of every input.
    #[test]
    fn median_of_seven_matches_the_generic_filter_to_the_bit() {
        for mask in 0u32..128 {
            let mut v = [0f32; 7];
            for (k, x) in v.iter_mut().enumerate() {
                *x = ((mask >> k) & 1) as f32;
            }
            let ones = mask.count_ones() as usize;
            assert_eq!(median7(v), if ones >= 4 { 1.0 } else { 0.0 }, "{mask:07b}");
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pick = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        // Lengths around the reflect edges and the 64-lane runs' ends.
        for n in [4usize, 5, 6, 7, 8, 9, 13, 64, 69, 70, 71, 134, 1500] {
            for _ in 0..20 {
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = next();
                        if r % 3 == 0 {
                            pick[(r >> 8) as usize % pick.len()]
                        } else {
                            ((r >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0) as f32
                        }
                    })
                    .collect();
                let mut fast = vec![0f32; n];
                median_filter(&x, 7, &mut fast);
                let mut slow = vec![0f32; n];
                let half = 3;
                let mut win = [0f32; 7];
                for (j, o) in slow.iter_mut().enumerate() {
                    for (k, slot) in win.iter_mut().enumerate() {
                        *slot = x[reflect(j as isize + k as isize - half, n)];
                    }
                    win.select_nth_unstable_by(3, |a, b| a.total_cmp(b));
                    *o = win[3];
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&slow), "n = {n}, x = {x:?}");
            }
        }
    }

    #[test]
    fn dtw_follows_the_bright_diagonal() {
        // 3 tokens over 6 frames: token 0 at frames 0-1, 1 at 2-3, 2 at 4-5.
        // Off the diagonal the matrix is negative (as a standardised one
        // is below its mean), so lingering on a row costs.
        let (rows, cols) = (3, 6);
        let mut m = vec![-1f32; rows * cols];
        for r in 0..rows {
            m[r * cols + 2 * r] = 1.0;
            m[r * cols + 2 * r + 1] = 1.0;
        }
        let path = dtw(&m, rows, cols);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 5)));
        let first_col: Vec<usize> = (0..rows)
            .map(|r| path.iter().find(|p| p.0 == r).unwrap().1)
            .collect();
        assert_eq!(first_col, vec![0, 2, 4]);
        // Monotone in both coordinates.
        assert!(path
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
    }

    #[test]
    fn matrix_is_the_mean_of_standardised_heads() {
        // One head, two rows, a stride of six frames of which four are real.
        let scores = vec![
            0.0, 0.0, 0.0, 0.0, 9.0, 9.0, // row 0 (stride 6, frames 4)
            5.0, 0.0, 0.0, 0.0, 9.0, 9.0, // row 1
        ];
        let m = alignment_matrix(&scores, 1, 2, 6, 4);
        assert_eq!(m.len(), 8);
        // Softmax: row 0 is uniform, row 1 peaks at frame 0. Standardised
        // over two rows every value is ±1: row 1 is +1 at frame 0 and -1
        // elsewhere. The width-7 median (reflect-padded) then sees row 0 as
        // mostly +1 everywhere and row 1 as mostly -1.
        assert!(m[..4].iter().all(|&v| (v - 1.0).abs() < 1e-5), "{m:?}");
        assert!(m[4..].iter().all(|&v| (v + 1.0).abs() < 1e-5), "{m:?}");
        assert!(alignment_matrix(&scores, 1, 2, 6, 0).is_empty());
    }

    fn decode_test(tokens: &[u32]) -> Result<String, ()> {
        // 1 → " hello", 2 → ",", 3 → " wor", 4 → "ld", 5/6 → the two
        // halves of "é" (a partial UTF-8 sequence decodes to U+FFFD).
        let mut bytes = Vec::new();
        for &t in tokens {
            bytes.extend_from_slice(match t {
                1 => b" hello".as_slice(),
                2 => b",",
                3 => b" wor",
                4 => b"ld",
                5 => &[0xC3],
                6 => &[0xA9],
                _ => b"?",
            });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn words_split_on_spaces_and_punctuation() {
        let w = split_word_tokens(&[1, 2, 3, 4, 5, 6], decode_test, false).unwrap();
        let texts: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, vec![" hello", ",", " worldé"]);
        assert_eq!(w[2].1, vec![3, 4, 5, 6]);
        // By character: the two halves of é stay together.
        let c = split_word_tokens(&[3, 5, 6], decode_test, true).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1], ("é".to_string(), vec![5, 6]));
    }

    fn tw(word: &str, n: usize, start: f64, end: f64) -> TimedWord {
        TimedWord {
            word: word.into(),
            tokens: vec![0; n],
            start,
            end,
            probability: 0.9,
        }
    }

    #[test]
    fn punctuation_joins_its_neighbours() {
        let mut w = vec![
            tw(" \"", 1, 0.0, 0.1),
            tw(" Hi", 1, 0.1, 0.4),
            tw(",", 1, 0.4, 0.5),
            tw(" there", 1, 0.5, 0.9),
            tw(".\"", 1, 0.9, 1.0),
        ];
        merge_punctuations(&mut w, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、");
        let texts: Vec<&str> = w.iter().map(|t| t.word.as_str()).collect();
        // `.\"` is not a substring of the appended set, so it stays alone.
        assert_eq!(texts, vec!["", " \" Hi,", "", " there", ".\""]);
        assert_eq!(w[1].tokens.len(), 3);
        assert_eq!(w.iter().map(|t| t.tokens.len()).sum::<usize>(), 5);
    }

    #[test]
    fn timed_words_use_first_arrival_and_mean_probability() {
        // Row i is the position that predicts text token i (row 0 is
        // <|notimestamps|>); row 3 predicts end-of-text. The path arrives
        // at rows 0, 1, 2, 3 at frames 0, 5, 10, 20.
        let mut path = vec![(0, 0)];
        path.extend((1..=5).map(|c| (0, c)));
        path.extend((5..10).map(|c| (1, c)));
        path.extend((10..20).map(|c| (2, c)));
        path.extend((20..30).map(|c| (3, c)));
        let words = vec![(" a".into(), vec![7]), (" bc".into(), vec![8, 9])];
        let t = timed_words(words, &path, &[0.5, 0.2, 0.4]);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].start, t[0].end), (0.0, 0.1));
        assert_eq!((t[1].start, t[1].end), (0.1, 0.4));
        assert!((t[1].probability - 0.3).abs() < 1e-6);
    }

    #[test]
    fn segments_snap_to_their_words() {
        let words = vec![
            tw(" one", 1, 0.50, 0.80),
            tw(" two", 1, 0.80, 1.10),
            tw(" three", 1, 2.00, 2.40),
        ];
        let mut segs = vec![
            SegmentSpan {
                start: 10.0,
                end: 11.4,
                text_tokens: 2,
                words: vec![],
            },
            SegmentSpan {
                start: 11.4,
                end: 12.6,
                text_tokens: 1,
                words: vec![],
            },
        ];
        let last = place_words(words, &mut segs, 10.0, "", ".", 9.9);
        assert_eq!(segs[0].words.len(), 2);
        assert_eq!(segs[0].start, 10.5);
        assert_eq!(segs[0].end, 11.1);
        assert_eq!(segs[1].words[0].word, " three");
        assert_eq!((segs[1].start, segs[1].end), (12.0, 12.4));
        assert_eq!(last, 12.4);
    }

    #[test]
    fn hallucinated_segment_after_silence_is_dropped() {
        let junk = |s: f64| Word {
            word: " you".into(),
            start: s,
            end: s + 0.05,
            probability: 0.05,
            speaker: None,
        };
        let good = Word {
            word: " hello".into(),
            start: 0.2,
            end: 0.6,
            probability: 0.9,
            speaker: None,
        };
        let t = WindowTimes {
            time_offset: 0.0,
            duration: 30.0,
            seek: 0,
            content_duration: 60.0,
            content_frames: 6000,
        };
        let seg = |start: f64, end: f64, words: Vec<Word>| SegmentSpan {
            start,
            end,
            text_tokens: words.len(),
            words,
        };
        // First worded segment is junk, 12 s into the window: skip to it.
        let segs = vec![seg(12.0, 12.05, vec![junk(12.0)])];
        assert_eq!(
            hallucination_skip(&segs, t, 2.0, 0.0),
            SilenceSkip::DropWindow { seek: 1200 }
        );
        // Good speech, then junk surrounded by silence: cut the window there.
        let segs = vec![
            seg(0.2, 0.6, vec![good.clone()]),
            seg(15.0, 15.05, vec![junk(15.0)]),
        ];
        assert_eq!(
            hallucination_skip(&segs, t, 2.0, 0.0),
            SilenceSkip::Truncate {
                from: 1,
                seek: 1500
            }
        );
        // Only good speech: keep.
        let segs = vec![seg(0.2, 0.6, vec![good])];
        assert_eq!(hallucination_skip(&segs, t, 2.0, 0.0), SilenceSkip::Keep);
    }
}
