//! Amazon Transcribe's output JSON into earshot's transcript record, and
//! back: a record the reader produced must render (`write`) into a document
//! the reader accepts again.
//!
//! The module is compiled in by path rather than through `earshot-managed`:
//! it depends only on serde and the job contract, and leaving out that
//! crate's AWS SDKs (Transcribe, Bedrock) keeps the fuzz build shorter.
#![no_main]

use libfuzzer_sys::fuzz_target;

use earshot_fuzz as _;

#[allow(dead_code)]
#[path = "../../managed/src/transcribe_json.rs"]
mod transcribe_json;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = transcribe_json::parse(data) else {
        return;
    };
    let doc = transcribe_json::write("fuzz", &record);
    let bytes = serde_json::to_vec(&doc).expect("a TranscribeOutput serializes");
    if let Err(e) = transcribe_json::parse(&bytes) {
        panic!("the writer's document does not read back: {e}");
    }
});
