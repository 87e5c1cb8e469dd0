//! The job contract's message parser: an SQS (or local queue) body and its
//! `task` attribute into a validated [`Job`]. Whatever parses must also
//! survive its own round trip (`to_message` then `parse` gives the same
//! job), since the worker re-sends jobs it releases.
#![no_main]

use std::collections::BTreeMap;

use earshot_queue_adapter::job::Job;
use libfuzzer_sys::fuzz_target;

use earshot_fuzz as _;

fuzz_target!(|data: &[u8]| {
    // First byte: which `task` attribute the message carries, if any.
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(body) else {
        // SQS bodies are strings; the receive path never sees non-UTF-8.
        return;
    };
    let mut attrs = BTreeMap::new();
    match sel % 5 {
        0 => {}
        1 => drop(attrs.insert("task".to_owned(), "transcribe".to_owned())),
        2 => drop(attrs.insert("task".to_owned(), "summarize".to_owned())),
        3 => drop(attrs.insert("task".to_owned(), "transcribe_summarize".to_owned())),
        _ => drop(attrs.insert("task".to_owned(), body.chars().take(8).collect())),
    }
    let Ok(job) = Job::parse(body, &attrs) else {
        return;
    };
    let (body2, attrs2) = job.to_message();
    let attrs2: BTreeMap<String, String> = attrs2.into_iter().collect();
    let again = Job::parse(&body2, &attrs2).expect("a parsed job re-parses from its own message");
    assert_eq!(again, job, "job changed in its round trip");
});
