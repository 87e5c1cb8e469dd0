//! BedrockSummarizer against a Converse HTTP stub on loopback. The stub
//! (`earshot_managed::testing::ConverseStub`) is NOT Bedrock: no test server
//! implements Converse (moto has only invoke_model), so it checks the
//! request earshot sends, answers in Converse's documented shape with
//! `usage`, and fails on request. The prompts and map-reduce are the local
//! summarizer's, so these tests check the wiring, the request and the error
//! classification, not summary quality.

use std::time::Duration;

use earshot_inference::llm::summarize::Stage;
use earshot_managed::testing::ConverseStub;
use earshot_managed::{BedrockConfig, BedrockSummarizer};

async fn summarizer(stub: &ConverseStub, config: BedrockConfig) -> BedrockSummarizer {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(stub.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_bedrockruntime::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    BedrockSummarizer::new(&sdk, config)
}

fn fast() -> BedrockConfig {
    BedrockConfig {
        initial_backoff: Duration::from_millis(5),
        ..BedrockConfig::default()
    }
}

fn meeting() -> Vec<String> {
    vec![
        "Good morning everyone, shall we move the launch to Friday?".into(),
        "Yes, Priya will send the plan by Thursday.".into(),
    ]
}

#[tokio::test]
async fn a_short_transcript_is_one_converse_call() {
    let stub = ConverseStub::start().unwrap();
    stub.expect_model("amazon.nova-lite-v1:0");
    let s = summarizer(&stub, fast()).await;
    let out = s.summarize(&meeting(), 120).await.unwrap();
    assert_eq!(stub.requests(), 1);
    let req = &stub.recorded()[0];
    assert_eq!(req.model_id, "amazon.nova-lite-v1:0");
    assert_eq!(req.max_tokens, Some(120));
    assert_eq!(req.body["inferenceConfig"]["temperature"], 0.0);
    assert_eq!(
        req.system,
        [earshot_managed::bedrock::DEFAULT_SYSTEM_PROMPT]
    );
    assert_eq!(req.body["messages"][0]["role"], "user");
    // The local summarizer's instruction, then the transcript.
    assert!(
        req.user_text.starts_with(&Stage::Whole.instruction()),
        "{}",
        req.user_text
    );
    assert!(req.user_text.ends_with(
        "Good morning everyone, shall we move the launch to Friday?\nYes, Priya will send the plan by Thursday."
    ));

    assert!(
        out.text
            .starts_with("Stub summary of 18 words: Good morning"),
        "{}",
        out.text
    );
    assert_eq!((out.chunks, out.levels, out.requests), (1, 1, 1));
    assert!(out.input_tokens > 0 && out.output_tokens > 0);
    let rec = out.record();
    assert_eq!(rec.model, "amazon.nova-lite-v1:0");
    assert_eq!(
        (rec.prompt_tokens, rec.generated_tokens),
        (out.input_tokens, out.output_tokens)
    );
}

#[tokio::test]
async fn a_long_transcript_is_map_reduced() {
    let stub = ConverseStub::start().unwrap();
    let s = summarizer(
        &stub,
        BedrockConfig {
            model_id: "amazon.nova-micro-v1:0".into(),
            context_tokens: 600,
            concurrency: 3,
            ..fast()
        },
    )
    .await;
    // ~60 sentences of ~60 characters: about 900 estimated tokens, far
    // more than one 600-token context holds.
    let long: Vec<String> = (0..60)
        .map(|i| format!("Item {i}: the team reviewed the budget and agreed on next steps."))
        .collect();
    let out = s.summarize(&long, 50).await.unwrap();
    let reqs = stub.recorded();
    assert!(out.chunks >= 2, "{out:?}");
    assert!(out.levels >= 2, "{out:?}");
    assert_eq!(out.requests, reqs.len());
    assert!(
        reqs.len() > out.chunks,
        "map calls plus at least one combine"
    );
    assert!(reqs.iter().all(|r| r.model_id == "amazon.nova-micro-v1:0"));
    let parts = reqs
        .iter()
        .filter(|r| r.user_text.starts_with("This is part "))
        .count();
    assert_eq!(parts, out.chunks);
    // The last call combines the partial summaries into the final one.
    let last = reqs.last().unwrap();
    assert!(last.user_text.starts_with(&Stage::Combine.instruction()));
    assert!(last.user_text.contains("Stub summary of"));
    // Every chunk stays within the planned context (estimate: chars / 4).
    for r in &reqs {
        assert!(
            r.user_text.chars().count() / 4 + 50 <= 600,
            "{}",
            r.user_text.len()
        );
    }
    // Billed tokens are the sum of what Converse reported.
    assert!(out.input_tokens >= reqs.iter().map(|r| r.user_text.len() / 4).sum::<usize>());
    // Every sentence went into exactly one first-level chunk, in order.
    let firsts: String = reqs[..out.chunks]
        .iter()
        .map(|r| r.user_text.split_once("\n\n").unwrap().1.to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(firsts, long.join("\n"));
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let stub = ConverseStub::start().unwrap();
    stub.throttle_next(1);
    let s = summarizer(&stub, fast()).await;
    let out = s.summarize(&meeting(), 64).await.unwrap();
    assert_eq!(stub.requests(), 2, "one throttled, one answered");
    assert_eq!(stub.recorded().len(), 1);
    assert_eq!(out.requests, 1);
}

#[tokio::test]
async fn errors_that_outlast_the_retries_are_transient() {
    let stub = ConverseStub::start().unwrap();
    stub.throttle_next(2);
    let s = summarizer(
        &stub,
        BedrockConfig {
            max_attempts: 2,
            ..fast()
        },
    )
    .await;
    let err = s.summarize(&meeting(), 64).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("ThrottlingException"), "{err}");
    assert_eq!(stub.requests(), 2);

    stub.reject_next(503, "ServiceUnavailableException", "try later");
    stub.reject_next(500, "InternalServerException", "oops");
    let err = s.summarize(&meeting(), 64).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(stub.requests(), 4);
    assert!(stub.recorded().is_empty());
}

#[tokio::test]
async fn validation_errors_are_permanent_and_not_retried() {
    let stub = ConverseStub::start().unwrap();
    stub.reject_next(
        400,
        "ValidationException",
        "Input is too long for requested model.",
    );
    let s = summarizer(&stub, fast()).await;
    let err = s.summarize(&meeting(), 64).await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.kind(), "managed");
    assert!(err.to_string().contains("Input is too long"), "{err}");
    assert_eq!(stub.requests(), 1);

    // A model id the service does not know.
    stub.expect_model("amazon.nova-lite-v1:0");
    let other = summarizer(
        &stub,
        BedrockConfig {
            model_id: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            ..fast()
        },
    )
    .await;
    let err = other.summarize(&meeting(), 64).await.unwrap_err();
    assert_eq!(err.kind(), "managed");
    assert!(err.to_string().contains("model identifier"), "{err}");

    stub.reject_next(404, "ResourceNotFoundException", "Model not found");
    let err = s.summarize(&meeting(), 64).await.unwrap_err();
    assert_eq!(err.kind(), "model");
    stub.reject_next(403, "AccessDeniedException", "no access to the model");
    let err = s.summarize(&meeting(), 64).await.unwrap_err();
    assert!(!err.is_transient());
}

#[tokio::test]
async fn documents_fail_alone_and_tiny_contexts_are_bad_options() {
    let stub = ConverseStub::start().unwrap();
    let s = summarizer(&stub, fast()).await;
    let out = s.summarize_many(&[vec!["   ".into()], meeting()], 64).await;
    assert_eq!(out[0].as_ref().unwrap_err().kind(), "bad_option");
    assert_eq!(out[1].as_ref().unwrap().levels, 1);
    assert_eq!(stub.requests(), 1);

    let tiny = summarizer(
        &stub,
        BedrockConfig {
            context_tokens: 100,
            ..fast()
        },
    )
    .await;
    let err = tiny.summarize(&meeting(), 64).await.unwrap_err();
    assert_eq!(err.kind(), "bad_option");
    assert_eq!(stub.requests(), 1, "nothing sent");
}
