//! The service-specific endpoint variables of the standard AWS
//! configuration reach both backends: `AWS_ENDPOINT_URL_TRANSCRIBE` (moto)
//! and `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` (the Converse stub, not the
//! service), over a global `AWS_ENDPOINT_URL` that points nowhere. One test
//! in its own binary, because it sets process environment variables.

use std::sync::Arc;
use std::time::Duration;

use earshot_managed::testing::{put_transcript, ConverseStub, TRANSCRIBE_FIXTURE};
use earshot_managed::{
    BedrockConfig, BedrockSummarizer, SpeechRequest, TranscribeBackend, TranscribeConfig,
};
use earshot_queue_adapter::testing::{free_port, MotoServer};
use earshot_queue_adapter::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_specific_endpoint_variables_are_honoured() {
    let moto = MotoServer::start();
    moto.bucket("out").await;
    let stub = ConverseStub::start().unwrap();
    // Nothing listens on the global endpoint: a call that used it would fail.
    let dead = format!("http://127.0.0.1:{}", free_port());
    for (k, v) in [
        ("AWS_ENDPOINT_URL", dead.as_str()),
        ("AWS_ENDPOINT_URL_TRANSCRIBE", &moto.endpoint()),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &stub.endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ] {
        std::env::set_var(k, v);
    }

    let bedrock = BedrockSummarizer::from_env(BedrockConfig {
        initial_backoff: Duration::from_millis(5),
        ..BedrockConfig::default()
    })
    .await;
    let summary = bedrock
        .summarize(&["We agreed to ship on Friday.".to_string()], 32)
        .await
        .unwrap();
    assert_eq!(stub.recorded().len(), 1);
    assert_eq!(summary.requests, 1);

    let store = Arc::new(Store::with_s3_client(moto.s3().await));
    put_transcript(
        &store,
        "out",
        "t/",
        "env-job",
        TRANSCRIBE_FIXTURE.as_bytes(),
    )
    .await
    .unwrap();
    let mut config = TranscribeConfig::new("out", "t/");
    config.poll.initial = Duration::from_millis(20);
    config.poll.max = Duration::from_millis(50);
    let transcribe = TranscribeBackend::from_env(store, config).await;
    let out = transcribe
        .transcribe(SpeechRequest {
            job_id: "env-job".into(),
            media_uri: "s3://media/a.wav".into(),
            language: Some("en".into()),
            ..SpeechRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(out.transcribe_job, "earshot-env-job");
    assert_eq!(out.record.segments.len(), 2);
}
