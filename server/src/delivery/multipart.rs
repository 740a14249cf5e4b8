//! Multipart upload with a conditional completion (S3 API: CreateMultipartUpload,
//! UploadPart, CompleteMultipartUpload with `If-None-Match: *`), done with signed
//! plain requests because object_store completes multipart uploads unconditionally:
//! an object created by someone else while the parts go up is never overwritten.
//! Each part carries its SHA-256 (`x-amz-checksum-sha256`), which the store checks;
//! a failed upload is aborted so no parts stay behind.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::s3::{Bucket, xml_text};

/// How a conditional multipart upload ended badly.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// An object with this key exists (it was there before the completion).
    #[error("{0} exists and is never overwritten")]
    Exists(String),
    /// Anything else (transport, store error, local read).
    #[error("{0}")]
    Failed(String),
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Uploads `file` to `key` in parts of `part_size` bytes (at least 5 MiB but the last)
/// with `headers` on the creation (metadata, content type, encryption, Object Lock),
/// completing only if no object has the key. Keys must be made of S3's safe
/// characters (prefixes are checked when saved; names are sanitised).
pub async fn upload(
    bucket: &Bucket,
    key: &str,
    file: &Path,
    mut headers: HeaderMap,
    part_size: usize,
) -> Result<(), MultipartError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        MultipartError::Failed(format!("{what} {key}: {e}"))
    };
    headers.insert(
        "x-amz-checksum-algorithm",
        HeaderValue::from_static("SHA256"),
    );
    let a = bucket
        .request(Method::POST, Some(key), "uploads", headers, Bytes::new())
        .await
        .map_err(|e| fail("starting the multipart upload of", &e))?;
    let Some(id) = (a.status == 200)
        .then(|| xml_text(&a.body, "UploadId"))
        .flatten()
    else {
        return Err(fail("starting the multipart upload of", &a.describe()));
    };
    let result = parts_and_complete(bucket, key, file, &id, part_size).await;
    if result.is_err() {
        let q = format!("uploadId={}", enc(&id));
        let _ = bucket
            .request(
                Method::DELETE,
                Some(key),
                &q,
                HeaderMap::new(),
                Bytes::new(),
            )
            .await;
    }
    result
}

async fn parts_and_complete(
    bucket: &Bucket,
    key: &str,
    file: &Path,
    id: &str,
    part_size: usize,
) -> Result<(), MultipartError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        MultipartError::Failed(format!("{what} {key}: {e}"))
    };
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| fail("reading the file for", &e))?;
    let mut done = String::new();
    let mut n = 0u32;
    loop {
        let mut buf = Vec::with_capacity(part_size);
        let read = (&mut f)
            .take(part_size as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| fail("reading the file for", &e))?;
        if read == 0 && n > 0 {
            break;
        }
        n += 1;
        let sum = STANDARD.encode(Sha256::digest(&buf));
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&sum) {
            h.insert("x-amz-checksum-sha256", v);
        }
        let q = format!("partNumber={n}&uploadId={}", enc(id));
        let a = bucket
            .request(Method::PUT, Some(key), &q, h, Bytes::from(buf))
            .await
            .map_err(|e| fail(&format!("uploading part {n} of"), &e))?;
        let etag = a.headers.get("etag").and_then(|v| v.to_str().ok());
        let (200, Some(etag)) = (a.status, etag) else {
            return Err(fail(&format!("uploading part {n} of"), &a.describe()));
        };
        done.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag><ChecksumSHA256>{sum}</ChecksumSHA256></Part>",
            etag.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
        ));
        if read < part_size {
            break;
        }
    }
    let body = format!("<CompleteMultipartUpload>{done}</CompleteMultipartUpload>");
    let mut h = HeaderMap::new();
    h.insert("if-none-match", HeaderValue::from_static("*"));
    h.insert("content-type", HeaderValue::from_static("application/xml"));
    let q = format!("uploadId={}", enc(id));
    let a = bucket
        .request(Method::POST, Some(key), &q, h, Bytes::from(body))
        .await
        .map_err(|e| fail("completing the multipart upload of", &e))?;
    // S3 may answer 200 with an error document for a completion.
    if a.status == 412 || a.status == 409 || a.s3_code().as_deref() == Some("PreconditionFailed") {
        Err(MultipartError::Exists(key.to_string()))
    } else if a.status == 200 && a.s3_code().is_none() {
        Ok(())
    } else {
        Err(fail("completing the multipart upload of", &a.describe()))
    }
}
