//! The upload form as the command API reads it: axum's multipart extractor over any body, and
//! the audio it carries measured as the command API measures it. The first byte chooses: even,
//! the rest is the raw multipart body; odd, the rest is the audio file inside a well-formed
//! form (so the fuzzer reaches the decoders). Never a panic; a measured file is within the
//! contract's stream parameters.
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use libfuzzer_sys::fuzz_target;

const BOUNDARY: &str = "fuzzboundary";
/// Larger audio is not read (the fuzzer's inputs are small anyway).
const MAX_AUDIO: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut form = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nFuzz\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(rest);
        form.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        form
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let audio = runtime.block_on(async move {
        let request = Request::builder()
            .method("POST")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(body))
            .expect("request");
        let mut multipart = Multipart::from_request(request, &()).await.ok()?;
        let mut audio = None;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let is_audio = field.name() == Some("audio");
            let mut bytes = Vec::new();
            while let Ok(Some(chunk)) = field.chunk().await {
                if bytes.len() + chunk.len() <= MAX_AUDIO {
                    bytes.extend_from_slice(&chunk);
                }
            }
            if is_audio {
                audio = Some(bytes);
            }
        }
        audio
    });
    let Some(audio) = audio else {
        return;
    };
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &audio).expect("write");
    if let Ok(measured) = command_api::audio::measure(file.path()) {
        assert!(measured.duration_ms > 0);
    }
});
