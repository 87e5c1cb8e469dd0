//! The planner's one error type: every way an input, a price table or an
//! override can be wrong, worded for the operator who typed it.

/// What went wrong, with enough context to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A Bedrock model id the price table does not list.
    #[error("unknown Bedrock model {given:?}: the price table lists {}", known.join(", "))]
    UnknownModel { given: String, known: Vec<String> },
    /// An EC2 instance type the price table does not list.
    #[error("unknown instance type {given:?}: the price table lists {}", known.join(", "))]
    UnknownInstance { given: String, known: Vec<String> },
    /// An input outside its allowed range (negative, zero, NaN, absurd).
    #[error("{field} = {value}: {expected}")]
    BadInput {
        field: &'static str,
        value: String,
        expected: String,
    },
    /// The price table (bundled or given) does not parse or is inconsistent.
    #[error("price table: {0}")]
    PriceTable(String),
    /// A `KEY=VALUE` price override that names no figure or has a bad value.
    #[error("price override {given:?}: {reason}")]
    BadOverride { given: String, reason: String },
    /// A model that does not fit the memory of one GPU of the instance.
    #[error("the {engine} needs {need_gib:.1} GiB of GPU memory, but one {gpu} of {instance} has {have_gib:.0} GiB (less 10% headroom): pick an instance with a larger GPU")]
    DoesNotFit {
        engine: &'static str,
        need_gib: f64,
        have_gib: f64,
        gpu: String,
        instance: String,
    },
    /// The chart could not be drawn.
    #[error("drawing the chart: {0}")]
    Chart(String),
}

impl PlanError {
    pub(crate) fn bad(
        field: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        PlanError::BadInput {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
