//! The queue abstraction the worker drives. Its semantics are SQS's:
//! at-least-once delivery, a visibility timeout (lease) per receive that
//! the consumer can extend, acknowledge (delete) on success, and release
//! with a delay to retry. Both implementations keep these semantics, so
//! the worker has one code path.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// One received message and the handle that proves we hold it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    /// Opaque; valid until acknowledged, released, or the lease runs out.
    pub receipt: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// How many times this message has been received, this one included.
    pub receive_count: u32,
    /// When the queue first accepted the message (Unix milli-seconds; SQS's
    /// `SentTimestamp`): a job's age when its producer set no
    /// `submitted_at`.
    pub sent_at_ms: Option<u64>,
}

/// Approximate message counts (for metrics and autoscaling).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet acknowledged or returned.
    pub in_flight: u64,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Waits up to `wait` for messages and takes up to `max` of them, each
    /// leased for `visibility`.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>>;
    /// Extends a lease to `visibility` from now (a heartbeat).
    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<()>;
    /// Deletes a finished message.
    async fn ack(&self, receipt: &str) -> Result<()>;
    /// Gives a message back, visible again after `delay` (zero: at once).
    async fn release(&self, receipt: &str, delay: Duration) -> Result<()>;
    /// Enqueues a message; returns its id.
    async fn send(&self, body: &str, attributes: &[(String, String)]) -> Result<String>;
    /// Approximate depth.
    async fn depth(&self) -> Result<QueueDepth>;
    /// For logs: the queue URL or folder.
    fn describe(&self) -> String;
}
