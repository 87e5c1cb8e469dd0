//! TranscribeBackend against a real Transcribe/S3 protocol server (moto)
//! on loopback. moto runs the job's states (QUEUED → IN_PROGRESS →
//! COMPLETED, one step per GetTranscriptionJob) but writes no transcript,
//! so each test puts the committed fixture, in Transcribe's real output
//! shape, where the job's TranscriptFileUri points. moto never reaches
//! FAILED: that path is covered by the unit test of the status mapping
//! (`transcribe::tests::job_status_maps_to_states_and_failed_is_permanent`).

use std::sync::Arc;
use std::time::Duration;

use earshot_managed::testing::{put_transcript, speaker_labelled, TRANSCRIBE_FIXTURE};
use earshot_managed::transcribe::{job_name, TranscribeBackend};
use earshot_managed::{ensure_s3_media, PollConfig, SpeechRequest, TranscribeConfig};
use earshot_queue_adapter::testing::MotoServer;
use earshot_queue_adapter::{Location, Store};

const OUT: &str = "transcripts-out";
const PREFIX: &str = "earshot/transcribe/";
const MEDIA: &str = "s3://media/calls/call-0001.wav";

fn fast_poll() -> PollConfig {
    PollConfig {
        initial: Duration::from_millis(20),
        factor: 1.5,
        max: Duration::from_millis(60),
        timeout: Duration::from_secs(20),
        get_per_second: 200.0,
        start_per_second: 200.0,
    }
}

struct Env {
    moto: MotoServer,
    store: Arc<Store>,
    backend: TranscribeBackend,
    transcribe: aws_sdk_transcribe::Client,
}

async fn env() -> Env {
    let moto = MotoServer::start();
    moto.bucket(OUT).await;
    moto.bucket("media").await;
    let store = Arc::new(Store::with_s3_client(moto.s3().await));
    store
        .put(
            &Location::parse(MEDIA).unwrap(),
            b"RIFF....WAVE".to_vec(),
            "audio/wav",
        )
        .await
        .unwrap();
    let sdk = moto.sdk_config().await;
    let mut config = TranscribeConfig::new(OUT, PREFIX);
    config.poll = fast_poll();
    let backend = TranscribeBackend::new(&sdk, store.clone(), config);
    let transcribe = aws_sdk_transcribe::Client::new(&sdk);
    Env {
        moto,
        store,
        backend,
        transcribe,
    }
}

fn request(job_id: &str) -> SpeechRequest {
    SpeechRequest {
        job_id: job_id.into(),
        media_uri: MEDIA.into(),
        language: Some("en".into()),
        duration_seconds: None,
        bytes: Some(12),
        max_speakers: None,
    }
}

async fn job_names(c: &aws_sdk_transcribe::Client) -> Vec<String> {
    let out = c.list_transcription_jobs().send().await.unwrap();
    let mut names: Vec<String> = out
        .transcription_job_summaries()
        .iter()
        .filter_map(|s| s.transcription_job_name().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcribes_from_the_output_file_and_reuses_the_job() {
    let e = env().await;
    put_transcript(
        &e.store,
        OUT,
        PREFIX,
        "call-0001",
        TRANSCRIBE_FIXTURE.as_bytes(),
    )
    .await
    .unwrap();

    let first = e.backend.transcribe(request("call-0001")).await.unwrap();
    assert_eq!(first.transcribe_job, "earshot-call-0001");
    assert!(!first.reused);
    let r = &first.record;
    assert!(r
        .text
        .starts_with("Good morning everyone, shall we move the launch to Friday?"));
    assert_eq!((r.language.as_str(), r.duration), ("en", 6.4));
    assert_eq!(r.segments.len(), 2);
    assert_eq!(r.segments[0].words[2].word, "everyone,");
    assert_eq!(r.segments[1].words.last().unwrap().word, "Thursday.");
    assert_eq!(r.segments[0].words[0].start, 0.04);
    // 6.4 s of audio bills the 15 s minimum.
    assert_eq!(first.billed_seconds, 15);

    // What was started: our bucket and key, the mapped language, the media.
    let job = e
        .transcribe
        .get_transcription_job()
        .transcription_job_name("earshot-call-0001")
        .send()
        .await
        .unwrap()
        .transcription_job
        .unwrap();
    assert_eq!(job.language_code().map(|c| c.as_str()), Some("en-US"));
    assert_eq!(job.media().and_then(|m| m.media_file_uri()), Some(MEDIA));
    assert_eq!(job.media_format().map(|f| f.as_str()), Some("wav"));
    assert_eq!(
        job.transcript().and_then(|t| t.transcript_file_uri()),
        Some("https://s3.us-east-1.amazonaws.com/transcripts-out/earshot/transcribe/earshot-call-0001.json")
    );

    // A redelivery: the same Transcribe job, no second one.
    let mut again = request("call-0001");
    again.duration_seconds = Some(61.2);
    let second = e.backend.transcribe(again).await.unwrap();
    assert!(second.reused);
    assert_eq!(second.record, first.record);
    assert_eq!(second.billed_seconds, 62);
    assert_eq!(job_names(&e.transcribe).await, ["earshot-call-0001"]);
    drop(e.moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_share_one_job() {
    let e = env().await;
    put_transcript(&e.store, OUT, PREFIX, "dup", TRANSCRIBE_FIXTURE.as_bytes())
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        e.backend.transcribe(request("dup")),
        e.backend.transcribe(request("dup"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.record, b.record);
    assert!(
        a.reused || b.reused,
        "one of them must have followed the other's job"
    );
    assert_eq!(job_names(&e.transcribe).await, ["earshot-dup"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_is_mapped_or_identified() {
    let e = env().await;
    for id in ["de-job", "xx-job", "none-job"] {
        put_transcript(&e.store, OUT, PREFIX, id, TRANSCRIBE_FIXTURE.as_bytes())
            .await
            .unwrap();
    }
    let with = |id: &str, lang: Option<&str>| {
        let mut r = request(id);
        r.language = lang.map(str::to_owned);
        r
    };
    e.backend
        .transcribe(with("de-job", Some("de")))
        .await
        .unwrap();
    e.backend
        .transcribe(with("xx-job", Some("xx")))
        .await
        .unwrap();
    e.backend.transcribe(with("none-job", None)).await.unwrap();
    let get = |name: &'static str| {
        let c = e.transcribe.clone();
        async move {
            c.get_transcription_job()
                .transcription_job_name(name)
                .send()
                .await
                .unwrap()
                .transcription_job
                .unwrap()
        }
    };
    let de = get("earshot-de-job").await;
    assert_eq!(de.language_code().map(|c| c.as_str()), Some("de-DE"));
    assert_ne!(de.identify_language(), Some(true));
    for name in ["earshot-xx-job", "earshot-none-job"] {
        let j = get(name).await;
        assert_eq!(j.identify_language(), Some(true), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_inputs_fail_before_any_job_starts() {
    let e = env().await;
    let mut long = request("long");
    long.duration_seconds = Some(4.0 * 3600.0 + 1.0);
    let err = e.backend.transcribe(long).await.unwrap_err();
    assert_eq!(err.kind(), "too_large");
    assert!(!err.is_transient());
    let mut big = request("big");
    big.bytes = Some(3_000_000_000);
    assert_eq!(
        e.backend.transcribe(big).await.unwrap_err().kind(),
        "too_large"
    );
    let mut local = request("local");
    local.media_uri = "/tmp/call.wav".into();
    assert_eq!(
        e.backend.transcribe(local).await.unwrap_err().kind(),
        "bad_audio"
    );
    assert!(job_names(&e.transcribe).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_broken_transcripts() {
    let e = env().await;
    // COMPLETED but no file (yet): transient, and the retry reuses the job.
    let err = e.backend.transcribe(request("late")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    put_transcript(&e.store, OUT, PREFIX, "late", TRANSCRIBE_FIXTURE.as_bytes())
        .await
        .unwrap();
    let ok = e.backend.transcribe(request("late")).await.unwrap();
    assert!(ok.reused);
    assert_eq!(job_names(&e.transcribe).await, ["earshot-late"]);

    // A file that is not Transcribe's output: permanent, kind `managed`.
    put_transcript(
        &e.store,
        OUT,
        PREFIX,
        "broken",
        br#"{"results": {"items": []}}"#,
    )
    .await
    .unwrap();
    let err = e.backend.transcribe(request("broken")).await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.kind(), "managed");

    // The same job id for other media: refused, never silently mixed up.
    let mut other = request("late");
    other.media_uri = "s3://media/calls/other.wav".into();
    let err = e.backend.transcribe(other).await.unwrap_err();
    assert_eq!(err.kind(), "managed");
    assert!(err.to_string().contains("other media"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_media_is_uploaded_first() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meeting.wav");
    std::fs::write(&path, b"RIFF-local").unwrap();
    let uri = ensure_s3_media(
        &e.store,
        &Location::Local(path),
        "media",
        "earshot",
        "local-1",
    )
    .await
    .unwrap();
    assert_eq!(uri, "s3://media/earshot/inputs/local-1/meeting.wav");
    assert_eq!(
        e.moto.keys("media", "earshot/").await,
        ["earshot/inputs/local-1/meeting.wav"]
    );
    let same = ensure_s3_media(
        &e.store,
        &Location::parse(MEDIA).unwrap(),
        "media",
        "x",
        "y",
    )
    .await
    .unwrap();
    assert_eq!(same, MEDIA);
    let missing = Location::Local(dir.path().join("nope.wav"));
    let err = ensure_s3_media(&e.store, &missing, "media", "", "z")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
    assert_eq!(job_name("local-1"), "earshot-local-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_labels_are_asked_for_and_read_back() {
    let e = env().await;
    let labelled = speaker_labelled(TRANSCRIBE_FIXTURE);
    for id in ["spk-4", "spk-1", "spk-99", "spk-none"] {
        put_transcript(&e.store, OUT, PREFIX, id, labelled.as_bytes())
            .await
            .unwrap();
    }
    let with = |id: &str, n: Option<usize>| {
        let mut r = request(id);
        r.max_speakers = n;
        r
    };
    let four = e.backend.transcribe(with("spk-4", Some(4))).await.unwrap();
    e.backend.transcribe(with("spk-1", Some(1))).await.unwrap();
    e.backend
        .transcribe(with("spk-99", Some(99)))
        .await
        .unwrap();
    e.backend.transcribe(with("spk-none", None)).await.unwrap();

    // What Transcribe was asked for: speaker labels with the job's count,
    // clamped to the 2-30 Transcribe accepts; nothing without one.
    let settings = |name: &'static str| {
        let c = e.transcribe.clone();
        async move {
            let job = c
                .get_transcription_job()
                .transcription_job_name(name)
                .send()
                .await
                .unwrap()
                .transcription_job
                .unwrap();
            job.settings().map(|s| {
                (
                    s.show_speaker_labels().unwrap_or(false),
                    s.max_speaker_labels(),
                )
            })
        }
    };
    assert_eq!(settings("earshot-spk-4").await, Some((true, Some(4))));
    assert_eq!(settings("earshot-spk-1").await, Some((true, Some(2))));
    assert_eq!(settings("earshot-spk-99").await, Some((true, Some(30))));
    let none = settings("earshot-spk-none").await;
    assert!(
        none.is_none_or(|(show, _)| !show),
        "no speaker labels asked for without a count: {none:?}"
    );

    // Read back: Transcribe's spk_N become earshot's SPEAKER_NN, on words
    // and on the segments they make up.
    let r = &four.record;
    assert_eq!(r.segments.len(), 2);
    for (seg, want) in r.segments.iter().zip(["SPEAKER_00", "SPEAKER_01"]) {
        assert_eq!(seg.speaker.as_deref(), Some(want), "{seg:?}");
        assert!(
            seg.words.iter().all(|w| w.speaker.as_deref() == Some(want)),
            "{:?}",
            seg.words
        );
    }
}
