//! Scoring and interchange: the diarization error rate (DER) and RTTM,
//! the file format every diarization evaluation tool reads.
//!
//! Why here: a pipeline tuned without a number drifts. DER is computed the
//! way NIST md-eval and pyannote.metrics do: time within ± `collar` seconds
//! of every reference boundary is not scored (a 0.25 s collar removes
//! 0.25 s on each side, md-eval's convention), the rest is split at every
//! boundary, and each piece with `nref` reference and `nhyp` hypothesis
//! speakers contributes missed speech `max(0, nref − nhyp)`, false alarm
//! `max(0, nhyp − nref)` and confusion `min(nref, nhyp) − correct`, where
//! `correct` counts the speakers matched under the one-to-one label mapping
//! that maximises total overlap over the whole file (Hungarian algorithm).
//! DER = (missed + false alarm + confusion) / total reference speech.

use serde::{Deserialize, Serialize};

use crate::cluster::max_assignment;
use crate::error::{DiarizeError, Result};
use crate::types::{speaker_label, Turn};

/// One scored segment: `(start_s, end_s, speaker label)`.
pub type Segment = (f64, f64, String);

/// Reads the `SPEAKER` lines of an RTTM file as
/// `(file id, start_s, duration_s, speaker)`. Blank lines, `#` comments and
/// other record types (`SPKR-INFO`, …) are skipped; a `SPEAKER` line with
/// fewer than 8 fields, or a start/duration that is not a finite number
/// (or is negative), is an error naming its 1-based line.
pub fn read_rttm(text: &str) -> Result<Vec<(String, f64, f64, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields[0] != "SPEAKER" {
            continue;
        }
        if fields.len() < 8 {
            return Err(DiarizeError::Rttm {
                line: lineno,
                reason: format!("expected at least 8 fields, found {}", fields.len()),
            });
        }
        let number = |idx: usize, what: &str| -> Result<f64> {
            match fields[idx].parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(DiarizeError::Rttm {
                    line: lineno,
                    reason: format!("{what} {:?} is not a non-negative number", fields[idx]),
                }),
            }
        };
        let start = number(3, "start")?;
        let dur = number(4, "duration")?;
        out.push((fields[1].to_string(), start, dur, fields[7].to_string()));
    }
    Ok(out)
}

/// RTTM `SPEAKER` lines for `turns` (labels `SPEAKER_00`, …), one per turn,
/// each ending in a newline.
pub fn write_rttm(file_id: &str, turns: &[Turn]) -> String {
    let mut out = String::new();
    for t in turns {
        out.push_str(&format!(
            "SPEAKER {file_id} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
            t.start,
            (t.end - t.start).max(0.0),
            speaker_label(t.speaker)
        ));
    }
    out
}

/// Turns as scoring segments (`SPEAKER_00`, … labels).
pub fn turns_to_segments(turns: &[Turn]) -> Vec<Segment> {
    turns
        .iter()
        .map(|t| (t.start, t.end, speaker_label(t.speaker)))
        .collect()
}

/// The segments of one file from [`read_rttm`]'s rows (`file_id: None`
/// takes every row), as `(start, end, speaker)`.
pub fn rttm_segments(rows: &[(String, f64, f64, String)], file_id: Option<&str>) -> Vec<Segment> {
    rows.iter()
        .filter(|(f, ..)| file_id.is_none_or(|id| id == f))
        .map(|(_, s, d, spk)| (*s, s + d, spk.clone()))
        .collect()
}

/// DER and its parts, in seconds of speaker time.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DerReport {
    /// Scored reference speaker time (overlap counts once per speaker).
    pub total_s: f64,
    pub missed_s: f64,
    pub false_alarm_s: f64,
    pub confusion_s: f64,
    /// `(missed + false alarm + confusion) / total`; when there is no scored
    /// reference speech: 0 without errors, 1 with any false alarm.
    pub der: f64,
}

/// Diarization error rate of `hypothesis` against `reference`, both as
/// `(start_s, end_s, label)` (labels need not match: the best one-to-one
/// mapping is found). `collar_s` is removed on each side of every
/// reference boundary; `skip_overlap` leaves out regions where the
/// reference has two or more speakers. Segments with `end ≤ start` or
/// non-finite times are ignored.
pub fn der(
    reference: &[Segment],
    hypothesis: &[Segment],
    collar_s: f64,
    skip_overlap: bool,
) -> DerReport {
    let valid = |s: &&Segment| s.0.is_finite() && s.1.is_finite() && s.1 > s.0;
    let reference: Vec<&Segment> = reference.iter().filter(valid).collect();
    let hypothesis: Vec<&Segment> = hypothesis.iter().filter(valid).collect();

    let (ref_labels, ref_ids) = intern(&reference);
    let (hyp_labels, hyp_ids) = intern(&hypothesis);

    // Regions not scored: ± collar around every reference boundary, merged.
    let collar = if collar_s.is_finite() {
        collar_s.max(0.0)
    } else {
        0.0
    };
    let mut excluded: Vec<(f64, f64)> = Vec::new();
    if collar > 0.0 {
        let mut around: Vec<(f64, f64)> = reference
            .iter()
            .flat_map(|s| [(s.0 - collar, s.0 + collar), (s.1 - collar, s.1 + collar)])
            .collect();
        around.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (a, b) in around {
            match excluded.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => excluded.push((a, b)),
            }
        }
    }

    // Every boundary, sorted and unique.
    let mut bounds: Vec<f64> = reference
        .iter()
        .chain(hypothesis.iter())
        .flat_map(|s| [s.0, s.1])
        .chain(excluded.iter().flat_map(|&(a, b)| [a, b]))
        .collect();
    bounds.sort_by(|a, b| a.total_cmp(b));
    bounds.dedup();
    if bounds.len() < 2 {
        return DerReport::default();
    }
    let pieces = bounds.len() - 1;
    let index = |t: f64| bounds.partition_point(|&b| b < t);

    // Per-piece speaker coverage counts via start/end deltas.
    let deltas = |segs: &[&Segment], ids: &[usize]| -> Vec<Vec<(usize, i32)>> {
        let mut d: Vec<Vec<(usize, i32)>> = vec![Vec::new(); bounds.len()];
        for (s, &id) in segs.iter().zip(ids) {
            d[index(s.0)].push((id, 1));
            d[index(s.1)].push((id, -1));
        }
        d
    };
    let ref_d = deltas(&reference, &ref_ids);
    let hyp_d = deltas(&hypothesis, &hyp_ids);
    let mut ref_cover = vec![0i32; ref_labels.len()];
    let mut hyp_cover = vec![0i32; hyp_labels.len()];
    let mut overlap = vec![vec![0f64; hyp_labels.len()]; ref_labels.len()];

    let mut report = DerReport::default();
    let mut matched_possible = 0f64;
    let mut ex = 0usize;
    for p in 0..pieces {
        for &(id, d) in &ref_d[p] {
            ref_cover[id] += d;
        }
        for &(id, d) in &hyp_d[p] {
            hyp_cover[id] += d;
        }
        let (a, b) = (bounds[p], bounds[p + 1]);
        let dur = b - a;
        let mid = 0.5 * (a + b);
        while ex < excluded.len() && excluded[ex].1 <= mid {
            ex += 1;
        }
        if ex < excluded.len() && excluded[ex].0 <= mid {
            continue;
        }
        let active_ref: Vec<usize> = (0..ref_cover.len()).filter(|&i| ref_cover[i] > 0).collect();
        let active_hyp: Vec<usize> = (0..hyp_cover.len()).filter(|&i| hyp_cover[i] > 0).collect();
        let (nr, nh) = (active_ref.len() as f64, active_hyp.len() as f64);
        if skip_overlap && active_ref.len() > 1 {
            continue;
        }
        report.total_s += nr * dur;
        report.missed_s += (nr - nh).max(0.0) * dur;
        report.false_alarm_s += (nh - nr).max(0.0) * dur;
        matched_possible += nr.min(nh) * dur;
        for &r in &active_ref {
            for &h in &active_hyp {
                overlap[r][h] += dur;
            }
        }
    }
    let correct: f64 = max_assignment(&overlap)
        .iter()
        .enumerate()
        .filter_map(|(r, h)| h.map(|h| overlap[r][h]))
        .sum();
    report.confusion_s = (matched_possible - correct).max(0.0);
    let errors = report.missed_s + report.false_alarm_s + report.confusion_s;
    report.der = if report.total_s > 0.0 {
        errors / report.total_s
    } else if errors > 0.0 {
        1.0
    } else {
        0.0
    };
    report
}

/// Distinct labels (first-appearance order) and each segment's label index.
fn intern(segs: &[&Segment]) -> (Vec<String>, Vec<usize>) {
    let mut labels: Vec<String> = Vec::new();
    let ids = segs
        .iter()
        .map(|s| match labels.iter().position(|l| *l == s.2) {
            Some(i) => i,
            None => {
                labels.push(s.2.clone());
                labels.len() - 1
            }
        })
        .collect();
    (labels, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: f64, e: f64, l: &str) -> Segment {
        (s, e, l.to_string())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn two_speakers() -> Vec<Segment> {
        vec![
            seg(0.0, 10.0, "A"),
            seg(10.0, 15.0, "B"),
            seg(15.0, 20.0, "A"),
        ]
    }

    #[test]
    fn perfect_and_swapped_labels_score_zero() {
        let r = two_speakers();
        let d = der(&r, &r, 0.0, false);
        assert!(close(d.der, 0.0) && close(d.total_s, 20.0));
        let h = vec![
            seg(0.0, 10.0, "x"),
            seg(10.0, 15.0, "y"),
            seg(15.0, 20.0, "x"),
        ];
        assert!(close(der(&r, &h, 0.0, false).der, 0.0));
        let h = vec![
            seg(0.0, 10.0, "B"),
            seg(10.0, 15.0, "A"),
            seg(15.0, 20.0, "B"),
        ];
        assert!(close(der(&r, &h, 0.0, false).der, 0.0));
    }

    #[test]
    fn all_missed_and_false_alarm() {
        let r = two_speakers();
        let d = der(&r, &[], 0.0, false);
        assert!(close(d.der, 1.0) && close(d.missed_s, 20.0));
        let h = vec![seg(0.0, 20.0, "A"), seg(30.0, 35.0, "A")];
        let d = der(&r, &h, 0.0, false);
        // 5 s false alarm after the reference, 5 s confusion where B spoke.
        assert!(close(d.false_alarm_s, 5.0) && close(d.confusion_s, 5.0));
        assert!(close(d.der, 0.5));
        // No reference at all.
        assert!(close(der(&[], &h, 0.0, false).der, 1.0));
        assert!(close(der(&[], &[], 0.0, false).der, 0.0));
    }

    #[test]
    fn split_speaker_is_confusion_of_second_label() {
        let r = vec![seg(0.0, 10.0, "A")];
        let h = vec![seg(0.0, 7.0, "s1"), seg(7.0, 10.0, "s2")];
        let d = der(&r, &h, 0.0, false);
        assert!(close(d.confusion_s, 3.0) && close(d.der, 0.3));
    }

    #[test]
    fn collar_removes_boundary_slop() {
        let r = two_speakers();
        let h = vec![
            seg(0.1, 10.2, "A"),
            seg(10.2, 14.9, "B"),
            seg(14.9, 20.0, "A"),
        ];
        assert!(der(&r, &h, 0.0, false).der > 0.0);
        let d = der(&r, &h, 0.25, false);
        assert!(close(d.der, 0.0), "{d:?}");
        // Scored time: 20 s minus collars at 0, 10, 15, 20 (0.25+0.5+0.5+0.25).
        assert!(close(d.total_s, 18.5), "{d:?}");
    }

    #[test]
    fn overlap_counts_each_speaker() {
        let r = vec![seg(0.0, 10.0, "A"), seg(8.0, 12.0, "B")];
        // Hypothesis misses the overlap's second speaker.
        let h = vec![seg(0.0, 10.0, "1"), seg(10.0, 12.0, "2")];
        let d = der(&r, &h, 0.0, false);
        assert!(close(d.total_s, 14.0) && close(d.missed_s, 2.0), "{d:?}");
        assert!(close(d.confusion_s, 0.0));
        // Skipping the overlap scores it perfect.
        let d = der(&r, &h, 0.0, true);
        assert!(close(d.total_s, 10.0) && close(d.der, 0.0), "{d:?}");
        // Both speakers found in the overlap.
        let h = vec![seg(0.0, 10.0, "1"), seg(8.0, 12.0, "2")];
        assert!(close(der(&r, &h, 0.0, false).der, 0.0));
    }

    #[test]
    fn rttm_round_trip_and_errors() {
        let turns = vec![
            Turn {
                start: 0.5,
                end: 2.25,
                speaker: 0,
            },
            Turn {
                start: 2.0,
                end: 3.0,
                speaker: 1,
            },
        ];
        let text = write_rttm("meeting", &turns);
        assert_eq!(
            text.lines().next().unwrap(),
            "SPEAKER meeting 1 0.500 1.750 <NA> <NA> SPEAKER_00 <NA> <NA>"
        );
        let rows = read_rttm(&format!("# comment\n\nSPKR-INFO x\n{text}")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], ("meeting".into(), 2.0, 1.0, "SPEAKER_01".into()));
        let segs = rttm_segments(&rows, Some("meeting"));
        assert!(close(
            der(&segs, &turns_to_segments(&turns), 0.0, false).der,
            0.0
        ));
        assert!(rttm_segments(&rows, Some("other")).is_empty());

        match read_rttm("SPEAKER f 1 0.0 1.0 <NA> <NA> A\nSPEAKER f 1 x 1.0 <NA> <NA> A\n") {
            Err(DiarizeError::Rttm { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        match read_rttm("\nSPEAKER f 1 0.0\n") {
            Err(DiarizeError::Rttm { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(read_rttm("SPEAKER f 1 0.0 -1 <NA> <NA> A").is_err());
    }
}
