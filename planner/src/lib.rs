//! earshot's capacity planner: what a workload costs on managed services
//! (Amazon Transcribe + Amazon Bedrock) and on self-hosted GPUs running
//! earshot, from a committed, dated price table and from throughput that
//! `earshot bench` measured on the real machine. Pure functions, no I/O:
//! the binary reads files and prints; this crate only computes (the chart
//! is rendered into memory, the caller writes it).

pub mod chart;
mod error;
pub mod plan;
pub mod prices;
pub mod profile;

pub use error::PlanError;
pub use plan::{cost_curve, plan, CurvePoint, Phase, Plan, PlanInput};
pub use prices::{local_usd, PriceOverrides, PriceTable};
