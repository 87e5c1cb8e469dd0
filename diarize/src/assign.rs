//! Speakers for words and transcript segments: the join between "who spoke
//! when" (turns) and "what was said when" (Whisper's timed words).
//!
//! A word gets the speaker whose turns cover most of its span: where two
//! people overlap, the one talking over more of the word wins (the
//! dominant speaker). A word that falls in a gap between turns (word
//! timings and turn edges are each off by tens of milliseconds) gets the
//! nearest turn's speaker when that turn is within [`MAX_GAP_S`]; farther
//! than that it stays unlabelled rather than guessing.
//!
//! Segments are then cut where the speaker changes between words
//! ([`speaker_runs`]), so a segment never mixes two speakers; a segment
//! without words takes the speaker covering most of its own span.

use std::ops::Range;

use crate::types::Turn;

/// How far (seconds) a word may sit from the nearest turn and still take
/// its speaker.
pub const MAX_GAP_S: f64 = 1.0;

/// The speaker covering most of `[start, end)`; if no turn overlaps it,
/// the nearest turn's speaker within [`MAX_GAP_S`]. `turns` in any order
/// (they may overlap). Zero-length spans are treated as their instant.
pub fn speaker_for_span(turns: &[Turn], start: f64, end: f64) -> Option<usize> {
    if turns.is_empty() || !start.is_finite() || !end.is_finite() {
        return None;
    }
    let (start, end) = if end < start {
        (end, start)
    } else {
        (start, end)
    };
    // Per-speaker covered time; a span of zero length counts turns that
    // contain its instant.
    let mut cover: Vec<(usize, f64)> = Vec::new();
    for t in turns {
        let overlap = if end > start {
            (t.end.min(end) - t.start.max(start)).max(0.0)
        } else if t.start <= start && start < t.end {
            // An instant inside the turn: weigh by how central it is, so
            // overlapping turns still have a winner.
            (start - t.start).min(t.end - start)
        } else {
            0.0
        };
        if overlap > 0.0 {
            match cover.iter_mut().find(|(s, _)| *s == t.speaker) {
                Some((_, c)) => *c += overlap,
                None => cover.push((t.speaker, overlap)),
            }
        }
    }
    if let Some(&(best, _)) = cover
        .iter()
        // Ties go to the lower label: deterministic.
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    {
        return Some(best);
    }
    let gap = |t: &Turn| {
        if t.end <= start {
            start - t.end
        } else {
            t.start - end
        }
    };
    turns
        .iter()
        .map(|t| (gap(t), t.speaker))
        .filter(|(g, _)| *g <= MAX_GAP_S)
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, s)| s)
}

/// The speaker of each span (`(start, end)` pairs, e.g. a segment's words).
pub fn speakers_for_spans(turns: &[Turn], spans: &[(f64, f64)]) -> Vec<Option<usize>> {
    spans
        .iter()
        .map(|&(s, e)| speaker_for_span(turns, s, e))
        .collect()
}

/// Runs of consecutive equal speakers: the index ranges where a segment is
/// cut. An unlabelled word (`None`) joins the run before it (or the one
/// after, at the start), so a gap in the turns never splits a sentence on
/// its own; an all-`None` input is one run labelled `None`.
pub fn speaker_runs(labels: &[Option<usize>]) -> Vec<(Range<usize>, Option<usize>)> {
    let mut runs: Vec<(Range<usize>, Option<usize>)> = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        match runs.last_mut() {
            Some((r, cur)) if l.is_none() || *cur == l || cur.is_none() => {
                r.end = i + 1;
                if cur.is_none() {
                    *cur = l;
                }
            }
            _ => runs.push((i..i + 1, l)),
        }
    }
    runs
}

/// Talk time per speaker (seconds of its turns, overlaps counted for
/// each), indexed by speaker.
pub fn talk_time(turns: &[Turn]) -> Vec<f64> {
    let n = turns.iter().map(|t| t.speaker + 1).max().unwrap_or(0);
    let mut out = vec![0.0; n];
    for t in turns {
        out[t.speaker] += (t.end - t.start).max(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(start: f64, end: f64, speaker: usize) -> Turn {
        Turn {
            start,
            end,
            speaker,
        }
    }

    #[test]
    fn a_word_takes_the_speaker_covering_most_of_it() {
        let turns = [t(0.0, 2.0, 0), t(1.8, 4.0, 1)];
        assert_eq!(speaker_for_span(&turns, 0.5, 1.0), Some(0));
        assert_eq!(speaker_for_span(&turns, 2.5, 3.0), Some(1));
        // Straddles the change: 0.1 s of speaker 0, 0.4 s of speaker 1.
        assert_eq!(speaker_for_span(&turns, 1.9, 2.4), Some(1));
        assert_eq!(speaker_for_span(&turns, 1.5, 1.9), Some(0));
    }

    #[test]
    fn overlap_goes_to_the_dominant_speaker() {
        // Speaker 1 talks over the whole word, speaker 0 over its first half.
        let turns = [t(0.0, 1.25, 0), t(1.0, 3.0, 1)];
        assert_eq!(speaker_for_span(&turns, 1.0, 1.5), Some(1));
        // Both cover it fully: a tie, resolved to the lower label.
        let turns = [t(0.0, 3.0, 1), t(0.5, 2.0, 0)];
        assert_eq!(speaker_for_span(&turns, 1.0, 1.5), Some(0));
        // An instant: the turn it sits deepest in.
        assert_eq!(speaker_for_span(&turns, 0.6, 0.6), Some(1));
    }

    #[test]
    fn words_in_gaps_take_the_nearest_turn_within_a_second() {
        let turns = [t(0.0, 1.0, 0), t(3.0, 4.0, 1)];
        assert_eq!(speaker_for_span(&turns, 1.2, 1.4), Some(0));
        assert_eq!(speaker_for_span(&turns, 2.5, 2.8), Some(1));
        assert_eq!(speaker_for_span(&turns, 10.0, 10.5), None);
        assert_eq!(speaker_for_span(&[], 0.0, 1.0), None);
        assert_eq!(speaker_for_span(&turns, f64::NAN, 1.0), None);
    }

    #[test]
    fn runs_cut_at_speaker_changes_and_absorb_unlabelled_words() {
        let runs = speaker_runs(&[Some(0), Some(0), None, Some(1), Some(1), Some(0)]);
        assert_eq!(
            runs,
            vec![(0..3, Some(0)), (3..5, Some(1)), (5..6, Some(0))]
        );
        let runs = speaker_runs(&[None, Some(1), Some(1)]);
        assert_eq!(runs, vec![(0..3, Some(1))]);
        assert_eq!(speaker_runs(&[None, None]), vec![(0..2, None)]);
        assert!(speaker_runs(&[]).is_empty());
    }

    #[test]
    fn talk_time_sums_each_speakers_turns() {
        let tt = talk_time(&[t(0.0, 1.0, 0), t(1.0, 3.5, 1), t(4.0, 4.5, 0)]);
        assert_eq!(tt.len(), 2);
        assert!((tt[0] - 1.5).abs() < 1e-9 && (tt[1] - 2.5).abs() < 1e-9);
        assert!(talk_time(&[]).is_empty());
    }
}
