//! The delivery bucket as evidex talks to it: one checked, pinned HTTP client per
//! bucket (the outbound network guard resolves the bucket's host once and every
//! request connects to that address, redirects not followed), `object_store`'s S3
//! client on top of it for uploads (conditional create, multipart, SHA-256
//! checksums), and SigV4-signed plain requests (object_store's own signer) for the
//! few calls object_store has no API for: the bucket's Object Lock configuration,
//! and the probe steps of a test connection, whose exact status codes and S3 error
//! codes it must see.
//!
//! Credentials are always the explicit keys of the delivery settings: the builder
//! is never given the environment, so a host's own cloud credentials (environment,
//! instance metadata) are never used for a delivery target.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use object_store::ClientOptions;
use object_store::RetryConfig;
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredential, Checksum,
    S3ConditionalPut,
};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, HttpService};
use url::Url;

use super::DeliverySettings;
use crate::network::{self, TargetError};

/// Largest body read from a plain request's answer (S3 error documents are small).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A connection to the delivery bucket (see the module documentation).
#[derive(Debug, Clone)]
pub struct Bucket {
    settings: DeliverySettings,
    credential: Arc<AwsCredential>,
    /// `https://bucket.host/` (virtual-hosted) or `https://host/bucket/` (path-style).
    bucket_url: Url,
    /// What object_store is given as endpoint.
    store_endpoint: String,
    client: reqwest::Client,
    /// Seconds each step may take.
    timeout_secs: u64,
    /// The address every request connects to.
    pub addr: std::net::SocketAddr,
}

/// The answer to a plain request.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most 64 KiB are read).
    pub body: Bytes,
}

impl Answer {
    /// The `<Code>` of an S3 error document, if the body is one.
    pub fn s3_code(&self) -> Option<String> {
        xml_text(&self.body, "Code")
    }

    /// `status` and the S3 error code and message, for an error line.
    pub fn describe(&self) -> String {
        match (self.s3_code(), xml_text(&self.body, "Message")) {
            (Some(c), Some(m)) => format!("answered {} {c}: {m}", self.status),
            (Some(c), None) => format!("answered {} {c}", self.status),
            _ => format!("answered {}", self.status),
        }
    }
}

/// The text of the first `<tag>` element of an XML document (S3 error and
/// configuration documents are flat enough for this).
pub fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].trim().to_string())
}

/// Why no request could be made or completed.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// The endpoint URL is not usable, or the guard refused it, or its name did not
    /// resolve.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No TCP connection.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The host name checked.
        host: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("no answer within {0} s")]
    Timeout(u64),
    /// Anything else on the wire.
    #[error("{0}")]
    Other(String),
}

/// Pins object_store's HTTP client to the checked address.
#[derive(Debug)]
struct Pinned(reqwest::Client);

impl HttpConnector for Pinned {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.0.clone()))
    }
}

impl Bucket {
    /// The URL of the bucket for `settings` (AWS's regional endpoint when no endpoint
    /// is set).
    pub fn bucket_url(settings: &DeliverySettings) -> Result<(Url, String), TargetError> {
        let endpoint = match settings.endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", settings.region),
        };
        let base = network::parse_target_url(&endpoint)?;
        if base.path() != "/" || base.query().is_some() || base.fragment().is_some() {
            return Err(TargetError::BadUrl(
                "endpoint: give the server only (https://host[:port]), without a path or query"
                    .to_string(),
            ));
        }
        let url = if settings.path_style {
            format!("{endpoint}/{}/", settings.bucket)
        } else if matches!(base.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
            || base.host_str() == Some("localhost")
        {
            return Err(TargetError::BadUrl(format!(
                "endpoint: {} is an address, not a domain, so the bucket cannot go in the host name; set path_style: true",
                base.host_str().unwrap_or_default()
            )));
        } else {
            let host = base.host_str().unwrap_or_default();
            let port = base.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}.{host}{port}/", base.scheme(), settings.bucket)
        };
        let url = Url::parse(&url).map_err(|e| TargetError::BadUrl(format!("endpoint: {e}")))?;
        let store_endpoint = if settings.path_style {
            endpoint
        } else {
            url.as_str().trim_end_matches('/').to_string()
        };
        Ok((url, store_endpoint))
    }

    /// Resolves and checks the bucket's host (refusing internal addresses unless
    /// `allow_private`) and builds the pinned client; every request of this bucket
    /// gives up after `timeout`.
    pub async fn connect(
        settings: &DeliverySettings,
        secret_access_key: &str,
        allow_private: bool,
        timeout: Duration,
    ) -> Result<Bucket, Unreachable> {
        let (bucket_url, store_endpoint) = Self::bucket_url(settings)?;
        let target = network::resolve_target(bucket_url.as_str(), allow_private, timeout).await?;
        let client = network::pinned_transfer_client(&target, timeout)
            .map_err(|e| Unreachable::Other(e.to_string()))?;
        Ok(Bucket {
            settings: settings.clone(),
            credential: Arc::new(AwsCredential {
                key_id: settings.access_key_id.clone(),
                secret_key: secret_access_key.to_string(),
                token: None,
            }),
            bucket_url,
            store_endpoint,
            client,
            timeout_secs: timeout.as_secs(),
            addr: target.addr,
        })
    }

    /// Whether the bucket is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.bucket_url.scheme() == "https"
    }

    /// The bucket's host name.
    pub fn host(&self) -> String {
        self.bucket_url.host_str().unwrap_or_default().to_string()
    }

    /// Opens a TCP connection to the checked address (the connect step).
    pub async fn tcp_check(&self, timeout: Duration) -> Result<(), Unreachable> {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(self.addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Unreachable::Connect {
                addr: self.addr,
                reason: e.to_string(),
            }),
            Err(_) => Err(Unreachable::Timeout(timeout.as_secs())),
        }
    }

    /// A SigV4-signed request to the bucket (`key: None`) or an object, with
    /// `query` (`"object-lock"`, or empty) and extra `headers`.
    pub async fn request(
        &self,
        method: Method,
        key: Option<&str>,
        query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Unreachable> {
        let mut url = self.bucket_url.clone();
        if let Some(key) = key {
            // Keys here are the probe's, made of S3's safe characters only (the
            // prefix is checked when the settings are saved), so no escaping.
            url.set_path(&format!("{}{key}", url.path()));
        }
        if !query.is_empty() {
            url.set_query(Some(query));
        }
        let mut req = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(HttpRequestBody::from(body))
            .map_err(|e| Unreachable::Other(e.to_string()))?;
        req.headers_mut().extend(headers);
        AwsAuthorizer::new(&self.credential, "s3", &self.settings.region).authorize(&mut req, None);
        let res = HttpService::call(&self.client, req)
            .await
            .map_err(|e| self.classify(&e))?;
        let (parts, body) = res.into_parts();
        let mut stream = body.bytes_stream();
        let mut buf = Vec::new();
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.classify(&e))?;
            buf.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - buf.len())]);
            if buf.len() >= MAX_ANSWER_BYTES {
                break;
            }
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: Bytes::from(buf),
        })
    }

    /// Sorts a transport error into connection, TLS, timeout or other, by the
    /// error's source chain (reqwest exposes no kinds for TLS).
    fn classify(&self, e: &(dyn std::error::Error + 'static)) -> Unreachable {
        let mut chain = Vec::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            chain.push(err.to_string());
            cur = err.source();
        }
        let text = chain.join(": ");
        let lower = text.to_ascii_lowercase();
        if lower.contains("timed out") || lower.contains("timeout") {
            Unreachable::Timeout(self.timeout_secs)
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
            || lower.contains("invalid peer")
            // rustls reading a non-TLS answer ("received corrupt message of type
            // InvalidContentType"), or any failure while connecting after the TCP
            // connection itself was made: on https that is the handshake.
            || lower.contains("corrupt message")
            || (self.is_https() && lower.contains("client error (connect)"))
        {
            Unreachable::Tls {
                host: self.host(),
                reason: text,
            }
        } else if lower.contains("connect") || lower.contains("refused") {
            Unreachable::Connect {
                addr: self.addr,
                reason: text,
            }
        } else {
            Unreachable::Other(text)
        }
    }

    /// object_store's S3 client for this bucket: SHA-256 checksums on every upload
    /// (the store checks them), `If-None-Match: *` for conditional create, a couple
    /// of quick retries (the delivery loop does the long ones), server-side
    /// encryption as configured, and `extra_headers` (signed) on every request, which
    /// the upload client uses for Object Lock retention.
    pub fn store(&self, extra_headers: HeaderMap) -> object_store::Result<AmazonS3> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&self.settings.bucket)
            .with_region(&self.settings.region)
            .with_access_key_id(&self.credential.key_id)
            .with_secret_access_key(&self.credential.secret_key)
            .with_endpoint(&self.store_endpoint)
            .with_virtual_hosted_style_request(!self.settings.path_style)
            .with_allow_http(!self.is_https())
            .with_checksum_algorithm(Checksum::SHA256)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(!self.is_https())
                    .with_default_headers(extra_headers),
            )
            .with_http_connector(Pinned(self.client.clone()));
        if let Some(sse) = &self.settings.server_side_encryption {
            b = b.with_config(
                "aws_server_side_encryption"
                    .parse::<AmazonS3ConfigKey>()
                    .expect("a known key"),
                sse.algorithm.as_str(),
            );
            if let Some(k) = &sse.kms_key_id {
                b = b.with_config(
                    "aws_sse_kms_key_id"
                        .parse::<AmazonS3ConfigKey>()
                        .expect("a known key"),
                    k,
                );
            }
        }
        b.build()
    }

    /// Headers that put an Object Lock retention on an uploaded object: `mode` until
    /// `until` (S3 API, PutObject: `x-amz-object-lock-mode`,
    /// `x-amz-object-lock-retain-until-date`, and `x-amz-sdk-checksum-algorithm`).
    pub fn lock_headers(mode: &str, until: chrono::DateTime<chrono::Utc>) -> HeaderMap {
        let mut h = HeaderMap::new();
        // S3 requires an integrity header on uploads with a retention; object_store
        // sends `x-amz-checksum-sha256`, and this names its algorithm as the SDKs do.
        h.insert(
            "x-amz-sdk-checksum-algorithm",
            HeaderValue::from_static("SHA256"),
        );
        if let Ok(v) = HeaderValue::from_str(mode) {
            h.insert("x-amz-object-lock-mode", v);
        }
        if let Ok(v) =
            HeaderValue::from_str(&until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        {
            h.insert("x-amz-object-lock-retain-until-date", v);
        }
        h
    }

    /// Server-side encryption headers for a plain PUT (the probe), as the uploads
    /// send them.
    pub fn sse_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(sse) = &self.settings.server_side_encryption {
            if let Ok(v) = HeaderValue::from_str(&sse.algorithm) {
                h.insert("x-amz-server-side-encryption", v);
            }
            if let Some(Ok(v)) = sse.kms_key_id.as_deref().map(HeaderValue::from_str) {
                h.insert("x-amz-server-side-encryption-aws-kms-key-id", v);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>, path_style: bool) -> DeliverySettings {
        DeliverySettings {
            bucket: "evidence".into(),
            region: "eu-central-1".into(),
            endpoint: endpoint.map(str::to_string),
            path_style,
            ..DeliverySettings::default()
        }
    }

    #[test]
    fn bucket_urls_for_each_addressing_style() {
        let (u, e) = Bucket::bucket_url(&settings(None, false)).unwrap();
        assert_eq!(
            u.as_str(),
            "https://evidence.s3.eu-central-1.amazonaws.com/"
        );
        assert_eq!(e, "https://evidence.s3.eu-central-1.amazonaws.com");
        let (u, e) = Bucket::bucket_url(&settings(Some("http://127.0.0.1:9000/"), true)).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9000/evidence/");
        assert_eq!(e, "http://127.0.0.1:9000");
        let (u, _) = Bucket::bucket_url(&settings(
            Some("https://acc.r2.cloudflarestorage.com"),
            false,
        ))
        .unwrap();
        assert_eq!(u.as_str(), "https://evidence.acc.r2.cloudflarestorage.com/");
        let err = Bucket::bucket_url(&settings(Some("https://minio.local/x"), true)).unwrap_err();
        assert!(err.to_string().contains("without a path"), "{err}");
        let err = Bucket::bucket_url(&settings(Some("ftp://minio.local"), true)).unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
    }

    #[test]
    fn s3_error_documents_are_read() {
        let a = Answer {
            status: 403,
            headers: HeaderMap::new(),
            body: Bytes::from_static(
                b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>",
            ),
        };
        assert_eq!(a.s3_code().as_deref(), Some("SignatureDoesNotMatch"));
        assert!(
            a.describe()
                .starts_with("answered 403 SignatureDoesNotMatch: The request")
        );
    }
}
