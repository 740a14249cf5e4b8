//! The upload of one export's package to the bucket (see the module above for the
//! rules: conditional create, our own objects recognised, a taken name moving the
//! package under the job id, multipart above the threshold).

use std::path::Path;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, PutMode, PutOptions, PutPayload,
};
use sha2::{Digest, Sha256};

use super::s3::Bucket;
use super::{EXPORT_METADATA, SHA_METADATA, load};
use crate::service::Service;

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) reason: String,
    pub(super) permanent: bool,
}

impl Failure {
    fn retry(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            permanent: false,
        }
    }
    fn permanent(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// What `sha256` the object at `path` carries: `None` when there is no object.
async fn existing_sha(
    store: &dyn ObjectStore,
    path: &ObjectPath,
) -> std::result::Result<Option<String>, Failure> {
    let opts = object_store::GetOptions {
        head: true,
        ..Default::default()
    };
    let meta = |r: &object_store::GetResult, k: &'static str| {
        r.attributes
            .get(&Attribute::Metadata(k.into()))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    match store.get_opts(path, opts).await {
        // "sha256 export_id": ours only if both match.
        Ok(r) => Ok(Some(format!(
            "{} {}",
            meta(&r, SHA_METADATA),
            meta(&r, EXPORT_METADATA)
        ))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Failure::retry(format!("checking {path}: {}", chain(&e)))),
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Uploads the job's artifact and its package files; returns the main object's key.
pub(super) async fn upload(
    service: &Service,
    job_id: &str,
) -> std::result::Result<String, Failure> {
    let job = service
        .store
        .job(job_id)
        .map_err(|e| Failure::retry(format!("{e:#}")))?
        .ok_or_else(|| Failure::permanent("the export no longer exists"))?;
    let main = job
        .artifact
        .as_ref()
        .and_then(|a| a["file_name"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Failure::permanent("the export has no artifact"))?;
    let artifact = job.artifact.clone().unwrap_or(serde_json::Value::Null);
    let gone = || {
        Failure::permanent(
            "the artifact was deleted (retention ended) before it could be delivered",
        )
    };
    // With object storage, the attempt's files are copied to a local folder first
    // (removed when this delivery attempt ends): the upload below reads files.
    let mut _fetched = None;
    let dir = match &service.remote_artifacts {
        Some(remote) => {
            if remote
                .size(job_id, &artifact, &main)
                .await
                .map_err(|e| Failure::retry(format!("{e:#}")))?
                .is_none()
            {
                return Err(gone());
            }
            std::fs::create_dir_all(&service.artifacts)
                .map_err(|e| Failure::retry(format!("{e}")))?;
            let tmp = tempfile::Builder::new()
                .prefix(".delivery-")
                .tempdir_in(&service.artifacts)
                .map_err(|e| Failure::retry(format!("{e}")))?;
            remote
                .fetch(job_id, &artifact, tmp.path())
                .await
                .map_err(|e| Failure::retry(format!("{e:#}")))?;
            let dir = tmp.path().to_path_buf();
            _fetched = Some(tmp);
            dir
        }
        None => {
            let dir = service
                .artifact_dir(job_id, &artifact)
                .map_err(|e| Failure::permanent(format!("{e:#}")))?;
            if !dir.join(&main).is_file() {
                return Err(gone());
            }
            dir
        }
    };
    let (settings, secret) = load(&service.store, &service.master_key)
        .map_err(|e| Failure::retry(format!("{e:#}")))?
        .ok_or_else(|| Failure::permanent("delivery is not set up (PUT /v1/settings/delivery)"))?;
    let timeout = Duration::from_secs(service.config.delivery.step_timeout_secs);
    let bucket = Bucket::connect(
        &settings,
        &secret,
        service.config.network.allow_private_targets,
        timeout,
    )
    .await
    .map_err(|e| Failure::retry(e.to_string()))?;
    let plain = bucket
        .store(Default::default())
        .map_err(|e| Failure::permanent(format!("S3 client: {e}")))?;
    let lock = settings.object_lock.as_ref().map(|l| {
        Bucket::lock_headers(
            &l.mode,
            service.clock.now() + chrono::Duration::days(i64::from(l.days)),
        )
    });
    let writer = match lock.clone() {
        Some(h) => bucket
            .store(h)
            .map_err(|e| Failure::permanent(format!("S3 client: {e}")))?,
        None => plain.clone(),
    };
    // The files: the package files first, the artifact itself last, so an object
    // under the artifact's name means its package is complete.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Failure::retry(format!("reading the artifact: {e}")))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && n != &main)
        .collect();
    names.sort();
    names.push(main.clone());
    let mut files = Vec::new();
    for n in &names {
        let sha =
            sha256_file(&dir.join(n)).map_err(|e| Failure::retry(format!("reading {n}: {e}")))?;
        files.push((n.clone(), sha));
    }
    // Where: `{prefix}`, unless another object has one of the package's names; then
    // the whole package goes to `{prefix}{job_id}/`. An object that is this export's
    // own (same SHA-256 and export id, from an earlier attempt) is not written again.
    let mine = |sha: &str| format!("{sha} {job_id}");
    let mut folder = settings.prefix.clone();
    'folders: for round in 0..2 {
        for (name, sha) in &files {
            let path = ObjectPath::from(format!("{folder}{name}"));
            match existing_sha(&plain, &path).await? {
                Some(s) if s == mine(sha) => continue,
                Some(_) if round == 0 => {
                    folder = format!("{}{job_id}/", settings.prefix);
                    continue 'folders;
                }
                Some(_) => {
                    // Only this export writes under its job id; another writer there
                    // is a race to retry, not a reason to give up.
                    return Err(Failure::retry(format!(
                        "{path} exists with other content and is never overwritten"
                    )));
                }
                None => {}
            }
            put_file(
                &bucket,
                &lock,
                &writer,
                &path,
                &dir.join(name),
                sha,
                job_id,
                service,
            )
            .await?;
            // Crash tests: some of the package's objects are in the bucket.
            fail::fail_point!("delivery.mid_upload");
        }
        return Ok(format!("{folder}{main}"));
    }
    Err(Failure::retry("the package's names are taken"))
}

/// Uploads one file with conditional create (multipart above the threshold).
#[allow(clippy::too_many_arguments, reason = "one upload's inputs")]
async fn put_file(
    bucket: &Bucket,
    lock: &Option<http::HeaderMap>,
    store: &object_store::aws::AmazonS3,
    path: &ObjectPath,
    file: &Path,
    sha: &str,
    job_id: &str,
    service: &Service,
) -> std::result::Result<(), Failure> {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(SHA_METADATA.into()),
        AttributeValue::from(sha.to_string()),
    );
    attributes.insert(
        Attribute::Metadata(EXPORT_METADATA.into()),
        AttributeValue::from(job_id.to_string()),
    );
    attributes.insert(
        Attribute::ContentType,
        AttributeValue::from(content_type(path.as_ref())),
    );
    let size = std::fs::metadata(file)
        .map_err(|e| Failure::retry(format!("reading {}: {e}", file.display())))?
        .len();
    let threshold = service.config.delivery.multipart_threshold_bytes;
    if size < threshold {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| Failure::retry(format!("reading {}: {e}", file.display())))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..Default::default()
        };
        return match store.put_opts(path, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match existing_sha(store, path).await? {
                    Some(s) if s == format!("{sha} {job_id}") => Ok(()),
                    _ => Err(Failure::retry(format!(
                        "{path} was created by someone else meanwhile; it is never overwritten"
                    ))),
                }
            }
            Err(e) => Err(Failure::retry(format!("uploading {path}: {}", chain(&e)))),
        };
    }
    // Multipart, with a conditional completion (see `multipart`).
    let mut headers = bucket.sse_headers();
    headers.extend(lock.clone().unwrap_or_default());
    for (k, v) in [
        ("x-amz-meta-evidex-sha256", sha),
        ("x-amz-meta-evidex-export-id", job_id),
        ("content-type", content_type(path.as_ref())),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    }
    let part = threshold.clamp(5 << 20, 64 << 20) as usize;
    match super::multipart::upload(bucket, path.as_ref(), file, headers, part).await {
        Ok(()) => Ok(()),
        Err(super::multipart::MultipartError::Exists(_)) => {
            match existing_sha(store, path).await? {
                Some(s) if s == format!("{sha} {job_id}") => Ok(()),
                _ => Err(Failure::retry(format!(
                    "{path} was created by someone else meanwhile; it is never overwritten"
                ))),
            }
        }
        Err(e) => Err(Failure::retry(e.to_string())),
    }
}

/// An error and its sources, which say what actually happened ("connection
/// refused") where the error itself says "error sending request".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// The media type of an export or package file, by its name (also used for the
/// objects of `artifacts = "s3://..."`).
pub(crate) fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "ndjson" => "application/x-ndjson",
        "parquet" => "application/vnd.apache.parquet",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "txt" | "pem" => "text/plain; charset=utf-8",
        _ if name.ends_with("SHA256SUMS") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
