//! The dated price table (`planner/prices.toml`, bundled into the binary)
//! and the per-job and per-month cost functions the planner and the worker
//! share, so a plan and a job's cost record never disagree on a price.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// The committed table, compiled in so a plan needs no file at run time.
const BUNDLED: &str = include_str!("../prices.toml");

/// Hours in an average month (365 × 24 / 12): what AWS's monthly
/// estimates use too.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// All prices the planner knows, with where and when each was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// When the table was last reviewed as a whole (YYYY-MM-DD).
    pub date: String,
    pub region: String,
    pub currency: String,
    pub transcribe: Transcribe,
    pub bedrock: Bedrock,
    pub ec2: Ec2,
    pub eks: Eks,
    pub left_out: LeftOut,
}

/// Amazon Transcribe standard batch pricing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcribe {
    /// Each request's duration is rounded up to a multiple of this.
    pub billing_increment_seconds: f64,
    /// Each request is billed at least this long.
    pub minimum_seconds: f64,
    pub tiers: Vec<TranscribeTier>,
    pub source: String,
    pub date: String,
}

/// One volume tier: minutes up to `up_to_minutes` in the month (cumulative,
/// counted from zero) at `usd_per_minute`; the last has no bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscribeTier {
    #[serde(default)]
    pub up_to_minutes: Option<f64>,
    pub usd_per_minute: f64,
    /// `false`: from one third-party page, not checked against AWS.
    pub confirmed: bool,
    pub source: String,
    pub date: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bedrock {
    /// By Bedrock model id.
    pub models: BTreeMap<String, BedrockModel>,
}

/// On-demand token prices of one Bedrock model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BedrockModel {
    pub input_usd_per_million: f64,
    pub output_usd_per_million: f64,
    pub confirmed: bool,
    /// Set when the model is retired on Bedrock (YYYY-MM-DD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_life: Option<String>,
    pub source: String,
    pub date: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2 {
    /// By instance type (`g6.xlarge`).
    pub instances: BTreeMap<String, Instance>,
}

/// One GPU instance type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub on_demand_usd_per_hour: f64,
    /// Typical share of the on-demand price saved on spot (0.49 = 49%).
    pub spot_discount: f64,
    /// GPUs per instance.
    pub gpus: u32,
    pub gpu_name: String,
    /// Memory of each GPU.
    pub gpu_memory_gib: f64,
    pub source: String,
    pub date: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eks {
    pub control_plane_usd_per_hour: f64,
    pub source: String,
    pub date: String,
}

/// What neither side of the comparison counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeftOut {
    pub note: String,
}

/// A price that must be a finite number ≥ 0 (a free tier can be 0).
fn check_price(what: &str, v: f64) -> Result<(), PlanError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(PlanError::PriceTable(format!(
            "{what} = {v}: prices must be finite and not negative"
        )))
    }
}

impl PriceTable {
    /// The committed table, parsed once. The bundled file is checked by a
    /// test, so a broken table fails CI, never a user.
    pub fn bundled() -> &'static PriceTable {
        static TABLE: OnceLock<PriceTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            PriceTable::from_toml_str(BUNDLED)
                .unwrap_or_else(|e| panic!("the bundled planner/prices.toml is invalid: {e}"))
        })
    }

    /// Parses and checks a table in `prices.toml`'s format (an operator's
    /// own copy with negotiated prices, say).
    pub fn from_toml_str(text: &str) -> Result<PriceTable, PlanError> {
        let table: PriceTable =
            toml::from_str(text).map_err(|e| PlanError::PriceTable(e.to_string()))?;
        table.validate()?;
        Ok(table)
    }

    /// Range and consistency checks, so the cost functions below never
    /// see a negative price or an unordered tier list.
    pub fn validate(&self) -> Result<(), PlanError> {
        let t = &self.transcribe;
        check_price("transcribe.minimum_seconds", t.minimum_seconds)?;
        if !(t.billing_increment_seconds.is_finite() && t.billing_increment_seconds > 0.0) {
            return Err(PlanError::PriceTable(
                "transcribe.billing_increment_seconds must be above 0".into(),
            ));
        }
        if t.tiers.is_empty() {
            return Err(PlanError::PriceTable("transcribe.tiers is empty".into()));
        }
        let mut prev = 0.0;
        for (i, tier) in t.tiers.iter().enumerate() {
            check_price(&format!("transcribe tier {}", i + 1), tier.usd_per_minute)?;
            let last = i + 1 == t.tiers.len();
            match tier.up_to_minutes {
                Some(b) if !last && b.is_finite() && b > prev => prev = b,
                None if last => {}
                _ => {
                    return Err(PlanError::PriceTable(format!(
                        "transcribe tier {}: every tier but the last needs an increasing up_to_minutes, and the last none",
                        i + 1
                    )))
                }
            }
        }
        for (id, m) in &self.bedrock.models {
            check_price(&format!("bedrock {id} input"), m.input_usd_per_million)?;
            check_price(&format!("bedrock {id} output"), m.output_usd_per_million)?;
        }
        if self.ec2.instances.is_empty() {
            return Err(PlanError::PriceTable("ec2.instances is empty".into()));
        }
        for (name, i) in &self.ec2.instances {
            check_price(&format!("ec2 {name} on_demand"), i.on_demand_usd_per_hour)?;
            if !(0.0..=1.0).contains(&i.spot_discount) {
                return Err(PlanError::PriceTable(format!(
                    "ec2 {name}: spot_discount {} is not a share from 0 to 1",
                    i.spot_discount
                )));
            }
            if i.gpus == 0 || !(i.gpu_memory_gib.is_finite() && i.gpu_memory_gib > 0.0) {
                return Err(PlanError::PriceTable(format!(
                    "ec2 {name}: needs at least one GPU with memory"
                )));
            }
        }
        check_price(
            "eks.control_plane_usd_per_hour",
            self.eks.control_plane_usd_per_hour,
        )?;
        Ok(())
    }

    /// When the table was last reviewed (YYYY-MM-DD).
    pub fn date(&self) -> &str {
        &self.date
    }

    /// Transcribe's price of one job of `audio_seconds`: rounded up to the
    /// billing increment, at least the minimum, at the first tier's rate
    /// (the marginal price of one job for an account under 250,000 minutes
    /// a month; the monthly figure below applies the tiers). A negative or
    /// NaN duration counts as zero, so it still pays the minimum.
    pub fn transcribe_job_usd(&self, audio_seconds: f64) -> f64 {
        let t = &self.transcribe;
        let s = if audio_seconds.is_nan() {
            0.0
        } else {
            audio_seconds.max(0.0)
        };
        // Guard float noise: 180.0000000001 s must not bill 181 s.
        let steps = ((s / t.billing_increment_seconds) - 1e-9).ceil().max(0.0);
        let billed = (steps * t.billing_increment_seconds).max(t.minimum_seconds);
        billed / 60.0 * t.tiers[0].usd_per_minute
    }

    /// Seconds Transcribe bills for one request of `audio_seconds`.
    pub fn transcribe_billed_seconds(&self, audio_seconds: f64) -> f64 {
        let t = &self.transcribe;
        let s = if audio_seconds.is_finite() {
            audio_seconds.max(0.0)
        } else {
            0.0
        };
        let steps = ((s / t.billing_increment_seconds) - 1e-9).ceil().max(0.0);
        (steps * t.billing_increment_seconds).max(t.minimum_seconds)
    }

    /// A month's Transcribe bill for `audio_minutes_per_month` billed
    /// minutes, through the volume tiers. Negative or NaN counts as zero.
    pub fn transcribe_monthly_usd(&self, audio_minutes_per_month: f64) -> f64 {
        let total = if audio_minutes_per_month.is_finite() {
            audio_minutes_per_month.max(0.0)
        } else if audio_minutes_per_month == f64::INFINITY {
            f64::MAX
        } else {
            0.0
        };
        let mut usd = 0.0;
        let mut floor = 0.0;
        for tier in &self.transcribe.tiers {
            let ceiling = tier.up_to_minutes.unwrap_or(f64::INFINITY);
            let in_tier = (total.min(ceiling) - floor).max(0.0);
            usd += in_tier * tier.usd_per_minute;
            if total <= ceiling {
                break;
            }
            floor = ceiling;
        }
        usd
    }

    /// The prices of one Bedrock model.
    pub fn bedrock_model(&self, model_id: &str) -> Result<&BedrockModel, PlanError> {
        self.bedrock
            .models
            .get(model_id)
            .ok_or_else(|| PlanError::UnknownModel {
                given: model_id.to_string(),
                known: self.bedrock.models.keys().cloned().collect(),
            })
    }

    /// Bedrock's price of one request (or a month's total tokens).
    pub fn bedrock_usd(
        &self,
        model_id: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<f64, PlanError> {
        let m = self.bedrock_model(model_id)?;
        Ok((input_tokens as f64 * m.input_usd_per_million
            + output_tokens as f64 * m.output_usd_per_million)
            / 1e6)
    }

    /// One instance type's facts and prices.
    pub fn instance(&self, instance: &str) -> Result<&Instance, PlanError> {
        self.ec2
            .instances
            .get(instance)
            .ok_or_else(|| PlanError::UnknownInstance {
                given: instance.to_string(),
                known: self.ec2.instances.keys().cloned().collect(),
            })
    }

    /// An instance's hourly price when `spot_share` of its hours run on
    /// spot at the typical discount and the rest on demand:
    /// `on_demand × (1 − spot_share × spot_discount)`. The share must be
    /// from 0 to 1.
    pub fn gpu_hourly_usd(&self, instance: &str, spot_share: f64) -> Result<f64, PlanError> {
        if !(0.0..=1.0).contains(&spot_share) {
            return Err(PlanError::bad(
                "spot_share",
                spot_share,
                "must be a share from 0 (all on-demand) to 1 (all spot)",
            ));
        }
        let i = self.instance(instance)?;
        Ok(i.on_demand_usd_per_hour * (1.0 - spot_share * i.spot_discount))
    }

    /// EKS control plane, one cluster, a whole month (it runs off-hours
    /// too).
    pub fn eks_monthly_usd(&self) -> f64 {
        self.eks.control_plane_usd_per_hour * HOURS_PER_MONTH
    }

    /// A copy with `overrides` applied.
    pub fn with_overrides(&self, overrides: &PriceOverrides) -> Result<PriceTable, PlanError> {
        let mut t = self.clone();
        for (key, value) in &overrides.0 {
            t.set(key, *value)?;
        }
        t.validate()?;
        Ok(t)
    }

    /// Sets one figure by its override key (see [`PriceOverrides`]).
    fn set(&mut self, key: &str, value: f64) -> Result<(), PlanError> {
        let bad = |reason: String| PlanError::BadOverride {
            given: format!("{key}={value}"),
            reason,
        };
        if !(value.is_finite() && value >= 0.0) {
            return Err(bad("the value must be a finite number, not negative".into()));
        }
        if let Some(rest) = key.strip_prefix("transcribe.") {
            let tiers = self.transcribe.tiers.len();
            match rest {
                "minimum_seconds" => self.transcribe.minimum_seconds = value,
                "billing_increment_seconds" => self.transcribe.billing_increment_seconds = value,
                _ => {
                    let n: usize = rest
                        .strip_prefix("tier")
                        .and_then(|n| n.parse().ok())
                        .filter(|n| (1..=tiers).contains(n))
                        .ok_or_else(|| {
                            bad(format!(
                                "use transcribe.tier1 .. transcribe.tier{tiers}, transcribe.minimum_seconds or transcribe.billing_increment_seconds"
                            ))
                        })?;
                    self.transcribe.tiers[n - 1].usd_per_minute = value;
                }
            }
            return Ok(());
        }
        if let Some(rest) = key.strip_prefix("bedrock.") {
            let (model, field) = rest
                .rsplit_once('.')
                .ok_or_else(|| bad("use bedrock.<model id>.input or .output".into()))?;
            // A model missing from the table may be added by giving both
            // of its prices; the source says so.
            let m = self
                .bedrock
                .models
                .entry(model.to_string())
                .or_insert_with(|| BedrockModel {
                    input_usd_per_million: f64::NAN,
                    output_usd_per_million: f64::NAN,
                    confirmed: false,
                    end_of_life: None,
                    source: "--price override".into(),
                    date: String::new(),
                });
            match field {
                "input" => m.input_usd_per_million = value,
                "output" => m.output_usd_per_million = value,
                _ => return Err(bad("use bedrock.<model id>.input or .output".into())),
            }
            m.source = "--price override".into();
            return Ok(());
        }
        if let Some(rest) = key.strip_prefix("ec2.") {
            let (name, field) = rest
                .rsplit_once('.')
                .ok_or_else(|| bad("use ec2.<instance>.on_demand or .spot_discount".into()))?;
            let known: Vec<String> = self.ec2.instances.keys().cloned().collect();
            let i = self.ec2.instances.get_mut(name).ok_or_else(|| {
                bad(format!(
                    "unknown instance {name:?}: the price table lists {}",
                    known.join(", ")
                ))
            })?;
            match field {
                "on_demand" => i.on_demand_usd_per_hour = value,
                "spot_discount" if value <= 1.0 => i.spot_discount = value,
                "spot_discount" => {
                    return Err(bad("a spot discount is a share from 0 to 1".into()))
                }
                _ => return Err(bad("use ec2.<instance>.on_demand or .spot_discount".into())),
            }
            i.source = "--price override".into();
            return Ok(());
        }
        if key == "eks.control_plane" {
            self.eks.control_plane_usd_per_hour = value;
            self.eks.source = "--price override".into();
            return Ok(());
        }
        Err(bad(OVERRIDE_KEYS.into()))
    }
}

/// The override keys, for help texts and error messages.
pub const OVERRIDE_KEYS: &str = "keys: transcribe.tier1..tier4 (USD/min), transcribe.minimum_seconds, transcribe.billing_increment_seconds, bedrock.<model id>.input / .output (USD per 1M tokens), ec2.<instance>.on_demand (USD/h), ec2.<instance>.spot_discount (0-1), eks.control_plane (USD/h)";

/// Per-figure price changes (`--price KEY=VALUE`, or the `prices` object
/// of a `POST /v1/plan` body), applied in order onto a table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceOverrides(pub BTreeMap<String, f64>);

impl PriceOverrides {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one `KEY=VALUE` pair.
    pub fn push_str(&mut self, pair: &str) -> Result<(), PlanError> {
        let bad = |reason: &str| PlanError::BadOverride {
            given: pair.to_string(),
            reason: reason.to_string(),
        };
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE"))?;
        let v: f64 = v
            .trim()
            .trim_start_matches('$')
            .parse()
            .map_err(|_| bad("the value is not a number"))?;
        self.0.insert(k.trim().to_string(), v);
        Ok(())
    }
}

impl std::str::FromStr for PriceOverrides {
    type Err = PlanError;
    /// One pair, or several separated by commas.
    fn from_str(s: &str) -> Result<Self, PlanError> {
        let mut o = PriceOverrides::default();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            o.push_str(pair)?;
        }
        Ok(o)
    }
}

/// A self-hosted job's compute cost: the GPU's hourly price spread over
/// the seconds of engine time the job used (`hourly × busy / 3600`). It
/// charges only busy time, so it is the marginal cost on a fleet that is
/// already running, not what an idle GPU costs; negative or NaN inputs
/// count as zero.
pub fn local_usd(hourly_usd: f64, busy_seconds: f64) -> f64 {
    let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    clean(hourly_usd) * clean(busy_seconds) / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn the_bundled_table_parses_and_has_every_figure_sourced() {
        let t = PriceTable::bundled();
        assert_eq!(t.date(), "2026-11-30");
        assert_eq!(t.transcribe.tiers.len(), 4);
        assert!(t.transcribe.tiers[0].confirmed);
        assert!(t.transcribe.tiers[1..].iter().all(|t| !t.confirmed));
        for name in [
            "g4dn.xlarge",
            "g5.xlarge",
            "g6.xlarge",
            "g6e.xlarge",
            "p4d.24xlarge",
            "p5.48xlarge",
        ] {
            let i = t.instance(name).unwrap();
            assert!(!i.source.is_empty() && !i.date.is_empty(), "{name}");
        }
        for id in [
            "amazon.nova-micro-v1:0",
            "amazon.nova-lite-v1:0",
            "meta.llama3-8b-instruct-v1:0",
        ] {
            assert!(t.bedrock_model(id).unwrap().end_of_life.is_none(), "{id}");
        }
        assert!(t.left_out.note.contains("NAT"));
    }

    #[test]
    fn one_job_is_billed_per_second_rounded_up_with_a_15_s_minimum() {
        let t = PriceTable::bundled();
        // 180 s = 3 min × $0.024 = $0.072.
        close(t.transcribe_job_usd(180.0), 0.072);
        // 180.2 s bills 181 s: 181 / 60 × 0.024 = $0.0724.
        close(t.transcribe_job_usd(180.2), 0.0724);
        // 5 s bills the 15 s minimum: 0.25 min × 0.024 = $0.006.
        close(t.transcribe_job_usd(5.0), 0.006);
        close(t.transcribe_job_usd(-3.0), 0.006);
        close(t.transcribe_job_usd(f64::NAN), 0.006);
    }

    #[test]
    fn monthly_transcribe_walks_the_tiers() {
        let t = PriceTable::bundled();
        // The seed's 50,000 × 3 min = 150,000 min, all in tier 1:
        // 150,000 × 0.024 = $3,600.
        close(t.transcribe_monthly_usd(150_000.0), 3_600.0);
        // 300,000 min: 250,000 × 0.024 + 50,000 × 0.015 = 6,000 + 750 = $6,750.
        close(t.transcribe_monthly_usd(300_000.0), 6_750.0);
        // 6M min: 6,000 + 750,000 × 0.015 (11,250) + 4M × 0.0102 (40,800)
        // + 1M × 0.0078 (7,800) = $65,850.
        close(t.transcribe_monthly_usd(6_000_000.0), 65_850.0);
        close(t.transcribe_monthly_usd(0.0), 0.0);
        close(t.transcribe_monthly_usd(-1.0), 0.0);
    }

    #[test]
    fn bedrock_prices_tokens_and_names_known_models_when_wrong() {
        let t = PriceTable::bundled();
        // Nova Lite: 1M in × $0.06 + 1M out × $0.24 = $0.30.
        close(
            t.bedrock_usd("amazon.nova-lite-v1:0", 1_000_000, 1_000_000)
                .unwrap(),
            0.30,
        );
        // Nova Micro, 585 in / 200 out: (585 × 0.035 + 200 × 0.14) / 1e6
        // = (20.475 + 28) / 1e6 = $0.000048475.
        close(
            t.bedrock_usd("amazon.nova-micro-v1:0", 585, 200).unwrap(),
            0.000048475,
        );
        let e = t.bedrock_usd("gpt-4o", 1, 1).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("gpt-4o") && msg.contains("amazon.nova-lite-v1:0"),
            "{msg}"
        );
    }

    #[test]
    fn spot_share_blends_on_demand_and_spot() {
        let t = PriceTable::bundled();
        // g6.xlarge: $0.8048 on demand, 49% off on spot.
        close(t.gpu_hourly_usd("g6.xlarge", 0.0).unwrap(), 0.8048);
        // All spot: 0.8048 × 0.51 = 0.410448.
        close(t.gpu_hourly_usd("g6.xlarge", 1.0).unwrap(), 0.410448);
        // Half: 0.8048 × (1 − 0.5 × 0.49) = 0.8048 × 0.755 = 0.607624.
        close(t.gpu_hourly_usd("g6.xlarge", 0.5).unwrap(), 0.607624);
        assert!(matches!(
            t.gpu_hourly_usd("g6.xlarge", 1.5),
            Err(PlanError::BadInput { .. })
        ));
        let e = t.gpu_hourly_usd("g7.huge", 0.0).unwrap_err().to_string();
        assert!(e.contains("g6.xlarge") && e.contains("p5.48xlarge"), "{e}");
    }

    #[test]
    fn local_cost_spreads_the_hourly_price_over_busy_seconds() {
        // $0.8048/h for 90 s: 0.8048 × 90 / 3600 = $0.02012.
        close(local_usd(0.8048, 90.0), 0.02012);
        close(local_usd(0.8048, -1.0), 0.0);
        close(local_usd(f64::NAN, 10.0), 0.0);
    }

    #[test]
    fn overrides_change_one_figure_and_reject_unknown_keys() {
        let t = PriceTable::bundled();
        let o: PriceOverrides = "ec2.g6.xlarge.on_demand=0.70,transcribe.tier1=0.02"
            .parse()
            .unwrap();
        let t2 = t.with_overrides(&o).unwrap();
        close(t2.gpu_hourly_usd("g6.xlarge", 0.0).unwrap(), 0.70);
        close(t2.transcribe_monthly_usd(100.0), 2.0);
        // A model missing from the table, added by giving both prices.
        let o: PriceOverrides =
            "bedrock.amazon.nova-pro-v1:0.input=0.8,bedrock.amazon.nova-pro-v1:0.output=3.2"
                .parse()
                .unwrap();
        let t3 = t.with_overrides(&o).unwrap();
        close(
            t3.bedrock_usd("amazon.nova-pro-v1:0", 1_000_000, 0)
                .unwrap(),
            0.8,
        );
        // Only one of the two: the other stays NaN and the table is refused.
        let o: PriceOverrides = "bedrock.x.input=1".parse().unwrap();
        assert!(t.with_overrides(&o).is_err());
        for bad in [
            "nope=1",
            "transcribe.tier9=1",
            "ec2.g6.xlarge.on_demand=-1",
            "ec2.g6.xlarge.spot_discount=2",
        ] {
            let o: PriceOverrides = bad.parse().unwrap();
            assert!(
                matches!(t.with_overrides(&o), Err(PlanError::BadOverride { .. })),
                "{bad}"
            );
        }
        assert!("transcribe.tier1".parse::<PriceOverrides>().is_err());
        assert!("transcribe.tier1=abc".parse::<PriceOverrides>().is_err());
    }

    #[test]
    fn a_broken_table_is_a_typed_error() {
        assert!(matches!(
            PriceTable::from_toml_str("date = 1"),
            Err(PlanError::PriceTable(_))
        ));
        let swapped = BUNDLED.replace("up_to_minutes = 1_000_000", "up_to_minutes = 100");
        assert!(PriceTable::from_toml_str(&swapped).is_err());
    }
}
