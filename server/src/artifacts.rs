//! Finished exports in object storage (`artifacts = "s3://bucket/prefix"`), which
//! every node reads: a job run by any worker downloads from any `serve` node.
//!
//! A worker always writes an attempt into its local folder first (the engine writes
//! files, and the evidence package is built from them); it then uploads each file to
//! `PREFIX/JOB/attempt-N/NAME`, and for a ZIP package the package files inside it
//! as `NAME.zip.<file>` beside it, so the manifest and signature are served without
//! reading the ZIP. An S3 object, single or multipart, is visible only once
//! complete, and the job record names the attempt only after every upload finished:
//! a reader never sees a partial artifact. Without this setting artifacts stay in
//! the local directory (`Service::artifacts`) and none of this runs.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// The artifacts bucket and prefix.
pub struct RemoteArtifacts {
    store: Arc<dyn ObjectStore>,
    /// The same bucket as a SigV4 signer, for presigned download URLs (S3 only).
    signer: Option<Arc<dyn Signer>>,
    prefix: ObjectPath,
    url: String,
}

impl RemoteArtifacts {
    /// Opens `url` (`s3://bucket/prefix`) with the `AWS_*` settings in `options`
    /// (lower-cased keys, as `object_store::parse_url_opts` takes them). Nothing is
    /// contacted yet.
    ///
    /// Errors: the URL does not parse or names a store object_store cannot open.
    pub fn open(url: &str, options: &HashMap<String, String>) -> Result<RemoteArtifacts> {
        let parsed = url::Url::parse(url).with_context(|| format!("artifacts: {url}"))?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options)
            .map_err(|e| anyhow!("artifacts: cannot open {url}: {e}"))?;
        let mut store: Arc<dyn ObjectStore> = Arc::from(store);
        let mut signer = None;
        if parsed.scheme() == "s3" {
            // Built like parse_url_opts builds it (unknown keys ignored), but kept as
            // `AmazonS3` so it can also presign.
            let s3 = options
                .iter()
                .fold(
                    AmazonS3Builder::new().with_url(parsed.to_string()),
                    |b, (k, v)| match k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        Ok(k) => b.with_config(k, v),
                        Err(_) => b,
                    },
                )
                .build()
                .map_err(|e| anyhow!("artifacts: cannot open {url}: {e}"))?;
            let s3 = Arc::new(s3);
            store = s3.clone();
            signer = Some(s3 as Arc<dyn Signer>);
        }
        Ok(RemoteArtifacts {
            store,
            signer,
            prefix,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn job_prefix(&self, job_id: &str) -> Result<ObjectPath> {
        // Job ids are generated here (`exp_` + ULID); nothing else names an object.
        if !job_id.starts_with("exp_") || !job_id[4..].chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("not a job id: {job_id:?}");
        }
        Ok(self.prefix.clone().join(job_id))
    }

    fn attempt_prefix(&self, job_id: &str, attempt: i64) -> Result<ObjectPath> {
        Ok(self.job_prefix(job_id)?.join(format!("attempt-{attempt}")))
    }

    /// The object of package file `name` (`export.csv`, `export.csv.manifest.json`)
    /// of a completed job whose artifact record is `artifact`.
    fn object(&self, job_id: &str, artifact: &Value, name: &str) -> Result<ObjectPath> {
        if name.is_empty() || name.contains('/') || name.contains("..") {
            bail!("not an artifact file name: {name:?}");
        }
        let attempt = artifact["attempt"]
            .as_i64()
            .ok_or_else(|| anyhow!("the artifact record names no attempt"))?;
        Ok(self.attempt_prefix(job_id, attempt)?.join(name))
    }

    /// A presigned `GET` URL (AWS SigV4 query authentication, "Authenticating
    /// Requests: Using Query Parameters") of package file `name` of a completed
    /// job, valid for `expires_in` (whole seconds, at most 7 days as SigV4 allows).
    /// `Ok(None)` when the bucket cannot presign (not S3).
    ///
    /// Errors: the artifact record names no attempt, or the credentials cannot be
    /// loaded.
    pub async fn presigned_get(
        &self,
        job_id: &str,
        artifact: &Value,
        name: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<url::Url>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let key = self.object(job_id, artifact, name)?;
        let url = signer
            .signed_url(http::Method::GET, &key, expires_in)
            .await
            .with_context(|| format!("presigning {key} in {}", self.url))?;
        Ok(Some(url))
    }

    /// Uploads every file of the attempt folder `dir`, and for a ZIP (`zipped`)
    /// the package files inside `file_name` as `file_name.<package file>`.
    ///
    /// Errors: a file cannot be read or an upload fails (the caller fails the
    /// attempt; what was uploaded is removed with the job's other attempts).
    pub async fn publish(
        &self,
        job_id: &str,
        attempt: i64,
        dir: &Path,
        file_name: &str,
        zipped: bool,
    ) -> Result<()> {
        let base = self.attempt_prefix(job_id, attempt)?;
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        // The data file last: nothing names the attempt before the job record does,
        // but a reader listing the folder sees the package before the data.
        names.sort_by_key(|n| n == file_name);
        for name in &names {
            let path = dir.join(name);
            let mut file = tokio::fs::File::open(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            // object_store's BufWriter: one PUT for small files, a multipart upload
            // (completed only at shutdown) for large ones.
            // Served as they are by presigned downloads: the type, and the name the
            // browser saves it under.
            let mut attributes = Attributes::new();
            attributes.insert(
                Attribute::ContentType,
                crate::delivery::upload::content_type(name).into(),
            );
            attributes.insert(
                Attribute::ContentDisposition,
                format!("attachment; filename=\"{name}\"").into(),
            );
            let mut out = object_store::buffered::BufWriter::new(
                self.store.clone(),
                base.clone().join(name.as_str()),
            )
            .with_attributes(attributes);
            tokio::io::copy(&mut file, &mut out)
                .await
                .with_context(|| format!("uploading {name} to {}", self.url))?;
            out.shutdown()
                .await
                .with_context(|| format!("uploading {name} to {}", self.url))?;
        }
        if zipped {
            let zip_path = dir.join(file_name);
            let entries = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u8>)>> {
                use std::io::Read;
                let mut z = zip::ZipArchive::new(std::fs::File::open(&zip_path)?)?;
                let mut out = Vec::new();
                for name in evidex_engine::integrity::PACKAGE_NAMES {
                    if let Ok(mut e) = z.by_name(name) {
                        let mut b = Vec::new();
                        e.read_to_end(&mut b)?;
                        out.push((name.to_string(), b));
                    }
                }
                Ok(out)
            })
            .await??;
            for (name, bytes) in entries {
                let key = base.clone().join(format!("{file_name}.{name}"));
                self.store
                    .put(&key, bytes.into())
                    .await
                    .with_context(|| format!("uploading {name} to {}", self.url))?;
            }
        }
        Ok(())
    }

    /// Deletes the objects of job `job_id`, all attempts, or all but `keep`.
    ///
    /// Errors: listing or deleting fails.
    pub async fn delete_job(&self, job_id: &str, keep: Option<i64>) -> Result<()> {
        let kept = keep.map(|k| self.attempt_prefix(job_id, k)).transpose()?;
        self.delete_under(&self.job_prefix(job_id)?, kept.as_ref())
            .await
    }

    /// Deletes one attempt's objects (an attempt whose result was refused).
    pub async fn delete_attempt(&self, job_id: &str, attempt: i64) -> Result<()> {
        self.delete_under(&self.attempt_prefix(job_id, attempt)?, None)
            .await
    }

    /// Deletes every object under `prefix` except those under `kept`; an object
    /// already gone is fine (two nodes may expire the same job).
    async fn delete_under(&self, prefix: &ObjectPath, kept: Option<&ObjectPath>) -> Result<()> {
        let mut listed = self.store.list(Some(prefix));
        let mut doomed = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.with_context(|| format!("listing {}", self.url))?;
            if kept.is_some_and(|k| meta.location.prefix_match(k).is_some()) {
                continue;
            }
            doomed.push(meta.location);
        }
        for location in doomed {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(anyhow!("deleting {location} from {}: {e}", self.url)),
            }
        }
        Ok(())
    }

    /// The size in bytes of file `name` of a completed job, or `None` when it is
    /// not there.
    pub async fn size(&self, job_id: &str, artifact: &Value, name: &str) -> Result<Option<u64>> {
        let key = self.object(job_id, artifact, name)?;
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow!("reading {key} from {}: {e}", self.url)),
        }
    }

    /// Bytes `range` of file `name`, streamed.
    pub async fn read(
        &self,
        job_id: &str,
        artifact: &Value,
        name: &str,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let key = self.object(job_id, artifact, name)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&key, opts)
            .await
            .map_err(|e| anyhow!("reading {key} from {}: {e}", self.url))?;
        Ok(got.into_stream())
    }

    /// The whole of a small file (a package file), or `None` when it is not there.
    pub async fn read_small(
        &self,
        job_id: &str,
        artifact: &Value,
        name: &str,
    ) -> Result<Option<Bytes>> {
        let key = self.object(job_id, artifact, name)?;
        match self.store.get(&key).await {
            Ok(got) => {
                Ok(Some(got.bytes().await.map_err(|e| {
                    anyhow!("reading {key} from {}: {e}", self.url)
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow!("reading {key} from {}: {e}", self.url)),
        }
    }

    /// Copies every object of a completed job's attempt into `dir` (for a delivery
    /// to another bucket, which uploads from files), leaving out the package files
    /// extracted from a ZIP.
    pub async fn fetch(&self, job_id: &str, artifact: &Value, dir: &Path) -> Result<()> {
        let attempt = artifact["attempt"]
            .as_i64()
            .ok_or_else(|| anyhow!("the artifact record names no attempt"))?;
        let prefix = self.attempt_prefix(job_id, attempt)?;
        let file_name = artifact["file_name"].as_str().unwrap_or_default();
        let zipped = artifact["content_type"] == "application/zip";
        let mut listed = self.store.list(Some(&prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta?;
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            if zipped && name != file_name {
                continue;
            }
            if name.contains('/') || name.contains("..") {
                continue;
            }
            let mut stream = self.store.get(&meta.location).await?.into_stream();
            let mut out = tokio::fs::File::create(dir.join(&name)).await?;
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
        }
        Ok(())
    }
}
