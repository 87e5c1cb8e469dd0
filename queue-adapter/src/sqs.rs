//! Amazon SQS through aws-sdk-sqs. Endpoint, region and credentials come
//! from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! profiles, IRSA / pod identity), as aws-config resolves them.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

use crate::error::{QueueError, Result};
use crate::queue::{Delivery, JobQueue, QueueDepth};

/// SQS allows at most 10 messages per receive.
pub const MAX_RECEIVE: usize = 10;
/// SQS long polls for at most 20 s.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS visibility timeouts are at most 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub async fn connect(url: &str) -> Result<Self> {
        if url.trim().is_empty() {
            return Err(QueueError::Config("empty queue URL".into()));
        }
        let conf = aws_sdk_sqs::config::Builder::from(&crate::aws_config().await)
            .timeout_config(crate::service_timeouts())
            .build();
        let client = aws_sdk_sqs::Client::from_conf(conf);
        Ok(SqsQueue {
            client,
            url: url.to_string(),
        })
    }

    /// A queue on an already-built client (tests, custom configuration).
    pub fn with_client(client: aws_sdk_sqs::Client, url: &str) -> Self {
        SqsQueue {
            client,
            url: url.to_string(),
        }
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }
}

fn secs(d: Duration) -> i32 {
    d.min(MAX_VISIBILITY).as_secs() as i32
}

fn svc<E>(op: &'static str) -> impl FnOnce(E) -> QueueError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| QueueError::service("sqs", op, DisplayErrorContext(e))
}

/// Receipt-handle errors mean the lease is gone, not that SQS is down.
fn receipt_error<E>(op: &'static str, e: aws_sdk_sqs::error::SdkError<E>) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e
        .as_service_error()
        .and_then(|s| s.code().map(str::to_owned));
    match code.as_deref() {
        Some("ReceiptHandleIsInvalid")
        | Some("InvalidParameterValue")
        | Some("AWS.SimpleQueueService.MessageNotInflight") => {
            QueueError::StaleReceipt(format!("{op}: {}", DisplayErrorContext(e)))
        }
        _ => QueueError::service("sqs", op, DisplayErrorContext(e)),
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_RECEIVE) as i32)
            .wait_time_seconds(wait.min(MAX_WAIT).as_secs() as i32)
            .visibility_timeout(secs(visibility))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(svc("ReceiveMessage"))?;
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let (Some(receipt), Some(id)) = (m.receipt_handle(), m.message_id()) else {
                continue;
            };
            let mut attributes = BTreeMap::new();
            if let Some(attrs) = m.message_attributes() {
                for (k, v) in attrs {
                    if let Some(s) = v.string_value() {
                        attributes.insert(k.clone(), s.to_string());
                    }
                }
            }
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            let sent_at_ms = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|s| s.parse().ok());
            deliveries.push(Delivery {
                sent_at_ms,
                message_id: id.to_string(),
                receipt: receipt.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                attributes,
                receive_count,
            });
        }
        Ok(deliveries)
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(visibility))
            .send()
            .await
            .map_err(|e| receipt_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| receipt_error("DeleteMessage", e))?;
        Ok(())
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.extend(receipt, delay).await
    }

    async fn send(&self, body: &str, attributes: &[(String, String)]) -> Result<String> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (k, v) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| QueueError::Config(e.to_string()))?;
            req = req.message_attributes(k, value);
        }
        let out = req.send().await.map_err(svc("SendMessage"))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(svc("GetQueueAttributes"))?;
        let get = |n: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&n))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
