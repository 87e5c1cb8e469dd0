//! `earshot serve`'s request parsing: multipart forms through axum's
//! `Multipart` extractor and `read_form`, and the JSON bodies of the chat and
//! summarize endpoints. `src/requests.rs` is compiled in by path (the
//! binary crate has no library target); the server calls the same code.
//!
//! Input: first byte picks the endpoint. For multipart, the bytes up to the
//! first newline are the `Content-Type` header (so the boundary is fuzzed
//! too) and the rest is the body.
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, Request, StatusCode};
use libfuzzer_sys::fuzz_target;

use earshot_fuzz as _;

#[allow(dead_code)]
#[path = "../../src/requests.rs"]
mod requests;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fn check(e: &requests::RequestError) {
    assert!(
        matches!(
            e.status,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
        ),
        "a body error answered {}",
        e.status
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            let (ct, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"multipart/form-data; boundary=X"[..], rest),
            };
            let Ok(req) = Request::builder()
                .method("POST")
                .uri("/v1/audio/transcriptions")
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body.to_vec()))
            else {
                return; // Not a valid header value: hyper would refuse it.
            };
            runtime().block_on(async {
                let Ok(mp) = Multipart::from_request(req, &()).await else {
                    return; // axum's rejection (415/400), before our code.
                };
                match requests::read_form(mp).await {
                    Ok(form) => {
                        if let Some((bytes, _)) = &form.file {
                            assert!(bytes.len() <= body.len());
                        }
                    }
                    Err(e) => check(&e),
                }
            });
        }
        1 => {
            if let Err(e) = requests::json_body::<requests::ChatRequest>(rest) {
                check(&e);
            }
        }
        _ => {
            if let Err(e) = requests::json_body::<requests::SummarizeRequest>(rest) {
                check(&e);
            }
        }
    }
});
