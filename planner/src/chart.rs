//! The cost-crossover chart: monthly cost against monthly volume (both on
//! log scales, so 1K and 1M tasks are equally readable) for managed,
//! self-hosted and hybrid, with the crossover marked. Drawn with plotters
//! into memory (SVG text or PNG bytes); the caller writes the file.
//!
//! The labels use a bundled subset of DejaVu Sans (`assets/`), so a PNG
//! renders the same on a machine or container without fonts, and the SVG's
//! layout matches it.

use std::sync::OnceLock;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::plan::CurvePoint;
use crate::PlanError;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";
/// Pixels (PNG) or user units (SVG).
pub const SIZE: (u32, u32) = (960, 600);

const MANAGED: RGBColor = RGBColor(214, 96, 39);
const SELF_HOSTED: RGBColor = RGBColor(35, 110, 190);
const HYBRID: RGBColor = RGBColor(60, 150, 80);

fn font_ready() -> Result<(), PlanError> {
    static READY: OnceLock<bool> = OnceLock::new();
    if *READY.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(PlanError::Chart("the bundled font does not load".into()))
    }
}

/// `$1.2K`-style money labels.
fn money(v: f64) -> String {
    if v >= 1e6 {
        format!("${:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("${:.0}K", v / 1e3)
    } else {
        format!("${v:.0}")
    }
}

fn volume(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}K", v / 1e3)
    } else {
        format!("{v}")
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    curve: &[CurvePoint],
    crossover: Option<u64>,
    title: &str,
) -> Result<(), PlanError>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| PlanError::Chart(e.to_string());
    if curve.len() < 2 {
        return Err(PlanError::Chart(
            "the curve needs at least two volumes".into(),
        ));
    }
    let x0 = curve.first().map(|p| p.tasks_per_month).unwrap_or(1.0);
    let x1 = curve.last().map(|p| p.tasks_per_month).unwrap_or(2.0);
    let ys = curve
        .iter()
        .flat_map(|p| [p.managed_usd, p.self_hosted_usd, p.hybrid_usd]);
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0_f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !(x0 > 0.0 && x1 > x0 && lo.is_finite() && hi > 0.0) {
        return Err(PlanError::Chart("volumes must rise from above 0".into()));
    }
    let (lo, hi) = ((lo.max(1.0)) * 0.7, hi * 1.4);

    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x0..x1).log_scale(), (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("tasks per month")
        .y_desc("USD per month")
        .x_label_formatter(&|v| volume(*v))
        .y_label_formatter(&|v| money(*v))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(236, 236, 236))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(|e| err(&e))?;

    // Self-hosted changes only in whole GPUs: draw it as steps.
    let mut steps = Vec::with_capacity(curve.len() * 2);
    for w in curve.windows(2) {
        steps.push((w[0].tasks_per_month, w[0].self_hosted_usd));
        steps.push((w[1].tasks_per_month, w[0].self_hosted_usd));
    }
    if let Some(last) = curve.last() {
        steps.push((last.tasks_per_month, last.self_hosted_usd));
    }
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>, u32);
    let series: [Series; 3] = [
        (
            "Managed (Transcribe + Bedrock)",
            MANAGED,
            curve
                .iter()
                .map(|p| (p.tasks_per_month, p.managed_usd))
                .collect(),
            3,
        ),
        ("Self-hosted (earshot on GPUs)", SELF_HOSTED, steps, 3),
        (
            "Hybrid (GPUs for base load, managed for peaks)",
            HYBRID,
            curve
                .iter()
                .map(|p| (p.tasks_per_month, p.hybrid_usd))
                .collect(),
            2,
        ),
    ];
    for (label, color, points, width) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(width)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
    }
    if let Some(c) = crossover
        .map(|c| c as f64)
        .filter(|c| (x0..=x1).contains(c))
    {
        let y = curve
            .iter()
            .find(|p| p.tasks_per_month >= c)
            .map(|p| p.managed_usd)
            .unwrap_or(lo);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(c, lo), (c, hi)],
                BLACK.mix(0.45).stroke_width(1),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Circle::new(
                (c, y),
                6,
                BLACK.stroke_width(2),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("crossover ≈ {} tasks/month", group(c as u64)),
                (c * 1.08, y * 0.62),
                (FAMILY, 15).into_font().color(&BLACK),
            )))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FAMILY, 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `12,345`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The chart as an SVG document.
pub fn svg(curve: &[CurvePoint], crossover: Option<u64>, title: &str) -> Result<String, PlanError> {
    font_ready()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(root, curve, crossover, title)?;
    }
    Ok(out)
}

/// The chart as PNG bytes.
pub fn png(
    curve: &[CurvePoint],
    crossover: Option<u64>,
    title: &str,
) -> Result<Vec<u8>, PlanError> {
    font_ready()?;
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(root, curve, crossover, title)?;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| PlanError::Chart(e.to_string()))?;
        writer
            .write_image_data(&rgb)
            .map_err(|e| PlanError::Chart(e.to_string()))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{cost_curve, default_volumes, plan, PlanInput};

    fn seed_curve() -> (Vec<CurvePoint>, Option<u64>) {
        let input = PlanInput::new(50_000.0, 3.0);
        let p = plan(&input).unwrap();
        (
            cost_curve(&input, &default_volumes()).unwrap(),
            p.crossover_tasks_per_month,
        )
    }

    #[test]
    fn the_svg_has_three_series_labels_and_the_crossover() {
        let (c, x) = seed_curve();
        let s = svg(&c, x, "test").unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..80]);
        assert!(s.contains("Managed (Transcribe + Bedrock)"));
        assert!(s.contains("Self-hosted"));
        assert!(s.contains("Hybrid"));
        assert!(s.contains("crossover"));
        assert!(s.contains("$1K") || s.contains("$10K"));
    }

    #[test]
    fn the_png_is_a_png() {
        let (c, x) = seed_curve();
        let b = png(&c, x, "test").unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        assert!(b.len() > 10_000);
    }

    #[test]
    fn a_one_point_curve_is_an_error_not_a_panic() {
        let (c, _) = seed_curve();
        assert!(matches!(svg(&c[..1], None, "t"), Err(PlanError::Chart(_))));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(9163), "9,163");
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(group(12), "12");
    }
}
