//! Evidence integrity: the manifest every artifact carries, its Ed25519 signature,
//! and the order-independent digest of the exported event ids.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, TimestampMicrosecondType};
use deltalake::arrow::record_batch::RecordBatch;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::redact::RedactionRules;

/// File name of the signing key inside the state directory.
pub const SIGNING_KEY_FILE: &str = "signing-key.ed25519";

/// Names of the manifest and signature inside a ZIP, and their suffixes beside a
/// single file (`NAME.csv.manifest.json`).
pub const MANIFEST_NAME: &str = "manifest.json";
/// See [`MANIFEST_NAME`]. The raw 64-byte Ed25519 signature of the manifest's bytes
/// (RFC 8032); artifacts made before evidex 0.1.1 hold it as hex text, which
/// [`verify_signature`] still accepts.
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// The signer's public key as a PEM `PUBLIC KEY` (RFC 8410 SubjectPublicKeyInfo),
/// with its fingerprint in a comment line above it.
pub const PUBLIC_KEY_NAME: &str = "signing-key.pem";
/// `sha256sum` lines (GNU coreutils format: hash, two spaces, name) for every data
/// file and the manifest, so `sha256sum -c` checks the package.
pub const SUMS_NAME: &str = "SHA256SUMS";
/// The raw Ed25519 signature of [`SUMS_NAME`], checkable with OpenSSL 3's
/// `pkeyutl -verify -rawin`.
pub const SUMS_SIGNATURE_NAME: &str = "SHA256SUMS.sig";
/// How to check the package with standard tools only.
pub const VERIFY_NAME: &str = "VERIFY.txt";

/// The package files evidex adds beside the data, in the order they are written.
pub const PACKAGE_NAMES: [&str; 6] = [
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    SUMS_SIGNATURE_NAME,
    PUBLIC_KEY_NAME,
    VERIFY_NAME,
];

/// The server's Ed25519 key that signs manifests.
pub struct Signer {
    key: SigningKey,
    path: PathBuf,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.public_hex())
            .field("path", &self.path)
            .finish()
    }
}

impl Signer {
    /// Loads the key from `dir`, creating it (and `dir`) on first use. The key file is
    /// readable by its owner only; a key file others can read is refused.
    pub fn load_or_create(dir: &Path) -> Result<Signer> {
        let path = dir.join(SIGNING_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(dir, &path),
            Err(e) => Err(EngineError::Config(format!(
                "signing key {}: {e}",
                path.display()
            ))),
        }
    }

    /// A key from its 32-byte seed written as 64 hex characters (an environment
    /// value); `origin` names where it came from in errors.
    pub fn from_hex(text: &str, origin: &str) -> Result<Signer> {
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            return Err(EngineError::Config(format!(
                "{origin}: not a 32-byte hex Ed25519 seed (evidex keys init prints one)"
            )));
        };
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        Ok(Signer {
            key: SigningKey::from_bytes(&seed),
            path: PathBuf::from(origin),
        })
    }

    /// Loads the key file at `path` (a seed in hex, mode 600).
    pub fn from_file(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("signing key {}: {e}", path.display())))?;
        Self::parse(path, &text)
    }

    /// Loads an existing key; `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Signer>> {
        let path = dir.join(SIGNING_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EngineError::Config(format!(
                "signing key {}: {e}",
                path.display()
            ))),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Signer> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(EngineError::Config(format!(
                    "signing key {}: readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                )));
            }
        }
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            return Err(EngineError::Config(format!(
                "signing key {}: not a 32-byte hex Ed25519 seed",
                path.display()
            )));
        };
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        Ok(Signer {
            key: SigningKey::from_bytes(&seed),
            path: path.to_path_buf(),
        })
    }

    fn create(dir: &Path, path: &Path) -> Result<Signer> {
        std::fs::create_dir_all(dir)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| EngineError::Io(std::io::Error::other(e.to_string())))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(hex::encode(seed).as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
                Ok(Signer {
                    key: SigningKey::from_bytes(&seed),
                    path: path.to_path_buf(),
                })
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::parse(path, &std::fs::read_to_string(path)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The public key, hex (what `evidex verify --key` takes).
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Where the key is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw 64-byte Ed25519 signature of `bytes` (RFC 8032), as written to
    /// `manifest.sig` and `SHA256SUMS.sig`.
    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.key.sign(bytes).to_bytes().to_vec()
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`, RFC 8410 / RFC 7468).
    pub fn public_pem(&self) -> String {
        public_pem(&self.key.verifying_key())
    }

    /// The key's fingerprint: SHA-256 (hex) of its DER SubjectPublicKeyInfo, what
    /// `openssl pkey -pubin -in signing-key.pem -outform DER | sha256sum` prints.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key.verifying_key())
    }

    /// The files evidex adds to a package beside its data files, named as inside a
    /// ZIP ([`PACKAGE_NAMES`]). `data` lists the data files as `(name, sha256)`,
    /// named as they sit beside the package files (`NAME.csv` for a single file);
    /// `prefix` is put before every package file's name in `SHA256SUMS` and
    /// `VERIFY.txt` (`NAME.csv.` for a single file, empty in a ZIP).
    pub fn package(
        &self,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        data: &[(String, String)],
        prefix: &str,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let mut sums = String::new();
        for (name, sha) in data {
            sums.push_str(&format!("{sha}  {name}\n"));
        }
        sums.push_str(&format!(
            "{}  {prefix}{MANIFEST_NAME}\n",
            sha256_hex(manifest_bytes)
        ));
        let pem = format!(
            "SHA-256 fingerprint: {}\n{}",
            self.fingerprint(),
            self.public_pem()
        );
        let verify = verify_text(manifest, &self.fingerprint(), prefix);
        let sums_signature = self.sign(sums.as_bytes());
        vec![
            (MANIFEST_NAME, manifest_bytes.to_vec()),
            (SIGNATURE_NAME, self.sign(manifest_bytes)),
            (SUMS_NAME, sums.into_bytes()),
            (SUMS_SIGNATURE_NAME, sums_signature),
            (PUBLIC_KEY_NAME, pem.into_bytes()),
            (VERIFY_NAME, verify.into_bytes()),
        ]
    }
}

/// PEM of an Ed25519 public key.
pub fn public_pem(key: &VerifyingKey) -> String {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    key.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an Ed25519 key always encodes")
}

/// SHA-256 (hex) of an Ed25519 public key's DER SubjectPublicKeyInfo.
pub fn fingerprint(key: &VerifyingKey) -> String {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let der = key
        .to_public_key_der()
        .expect("an Ed25519 key always encodes");
    sha256_hex(der.as_bytes())
}

/// Reads an Ed25519 public key given as 64 hex characters or as PEM (any text
/// around the `BEGIN PUBLIC KEY` block is ignored, as OpenSSL does).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    if let Some(start) = text.find("-----BEGIN PUBLIC KEY-----") {
        return VerifyingKey::from_public_key_pem(text[start..].trim_end()).map_err(|e| {
            EngineError::invalid(format!("public key: not an Ed25519 PEM public key: {e}"))
        });
    }
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            EngineError::invalid(
                "public key: neither 64 hex characters nor a PEM `PUBLIC KEY` of an Ed25519 key",
            )
        })
}

/// The text of `VERIFY.txt`. Every line starting with `$ ` is a command that a test
/// runs exactly as written in the package's folder.
fn verify_text(manifest: &Manifest, fingerprint: &str, prefix: &str) -> String {
    format!(
        "How to check this evidence package with standard tools only
=============================================================

Export {id} \"{name}\", {records}, made {created} by evidex {version}.
Signed with the Ed25519 key in {prefix}{PUBLIC_KEY_NAME}, whose SHA-256 fingerprint is

    {fingerprint}

A signature only proves who signed: compare this fingerprint with the one your
organisation published (its evidex server answers GET /v1/signing-key, and
`evidex signing-key` prints it). A package signed by any other key proves nothing.

Run these commands in the folder that holds the package's files (unzip it first if
it is a ZIP). They need OpenSSL 3 and GNU coreutils (or any sha256sum). Each one
must succeed; the first prints the fingerprint above followed by \"  -\".

1. The fingerprint of the enclosed key:
$ openssl pkey -pubin -in {prefix}{PUBLIC_KEY_NAME} -outform DER | sha256sum

2. The checksum list was signed by that key (prints \"Signature Verified Successfully\"):
$ openssl pkeyutl -verify -pubin -inkey {prefix}{PUBLIC_KEY_NAME} -rawin -in {prefix}{SUMS_NAME} -sigfile {prefix}{SUMS_SIGNATURE_NAME}

3. Every data file and the manifest match the signed list:
$ sha256sum -c {prefix}{SUMS_NAME}

4. The manifest itself carries its own signature too:
$ openssl pkeyutl -verify -pubin -inkey {prefix}{PUBLIC_KEY_NAME} -rawin -in {prefix}{MANIFEST_NAME} -sigfile {prefix}{SIGNATURE_NAME}

The manifest ({prefix}{MANIFEST_NAME}) then tells what the package holds: the window,
filters, table versions, redaction, every file's records and hashes. `evidex verify`
does all of the above and also counts the records of every file.
",
        id = manifest.export_id,
        // One line, no quotes: a name must not be able to add lines (or a `$ `
        // command) to the instructions.
        name = manifest
            .name
            .chars()
            .map(|c| if c.is_control() || c == '"' { ' ' } else { c })
            .collect::<String>(),
        records = manifest.statement,
        created = manifest.created_at,
        version = manifest.tool.version,
    )
}

/// Checks `signature` (a signature file's bytes: raw 64 bytes, or 128 hex characters
/// as older artifacts wrote) over `bytes` with `key`.
pub fn verify_signature(key: &VerifyingKey, bytes: &[u8], signature: &[u8]) -> Result<()> {
    let raw = if signature.len() == 64 {
        <[u8; 64]>::try_from(signature).ok()
    } else {
        std::str::from_utf8(signature)
            .ok()
            .and_then(|t| hex::decode(t.trim()).ok())
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
    };
    let sig = raw
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| EngineError::invalid("not a 64-byte Ed25519 signature"))?;
    key.verify(bytes, &sig)
        .map_err(|_| EngineError::invalid("the signature does not match these bytes and this key"))
}

/// One file of an artifact, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestFile {
    /// ZIP entry name, or the single file's name.
    pub path: String,
    /// Dataset the file holds (`events`, `escalations`, a definition's name).
    pub dataset: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Records in the file.
    pub rows: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The exact window of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestWindow {
    /// Start, inclusive, RFC 3339 UTC.
    pub from: String,
    /// End, exclusive, RFC 3339 UTC.
    pub to: String,
    /// The IANA timezone the day boundaries came from.
    pub timezone: String,
}

/// Redaction applied to the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestRedaction {
    /// The rules.
    pub rules: RedactionRules,
    /// Whether `input` / `output` were exported at all.
    pub include_payloads: bool,
    /// How matches are written.
    pub marker: String,
}

/// Byte-changing escapes applied by the encoders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestEscaping {
    /// CSV cells that a spreadsheet would execute were prefixed with `'`.
    pub csv_formula_guard: bool,
    /// The guard's rule in words (OWASP CSV injection: the characters, the trimmed
    /// leading characters, the plain-number exception); present when the guard was
    /// applied. Absent fields keep older manifests serialising byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_formula_guard_rule: Option<String>,
    /// Whether each CSV file starts with a UTF-8 byte-order mark; present for CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_bom: Option<bool>,
    /// How CSV tells a missing value from an empty string; present for CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_null: Option<String>,
    /// The escapes JSON and NDJSON apply beyond RFC 8259's (line terminators);
    /// present for those formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_line_terminators: Option<String>,
}

/// The tool that wrote the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestTool {
    /// `evidex`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What an artifact contains and how it was made; `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Manifest {
    /// Format version of this document.
    pub manifest_version: u32,
    /// Export id (`exp_` + ULID).
    pub export_id: String,
    /// Export name.
    pub name: String,
    /// Who asked for it.
    pub requested_by: String,
    /// When the artifact was made, RFC 3339 UTC.
    pub created_at: String,
    /// The export's parameters (format, filters, include, preset, ...).
    pub parameters: serde_json::Value,
    /// The SQL definition that ran, if any.
    pub sql: Option<String>,
    /// SHA-256 of `sql`.
    pub sql_sha256: Option<String>,
    /// Delta table versions read (`null`: the table did not exist or was not read).
    pub table_versions: BTreeMap<String, Option<u64>>,
    /// When the versions were pinned: nothing committed later is in the artifact.
    pub as_of: String,
    /// The exact window.
    pub window: ManifestWindow,
    /// Every data file of the artifact.
    pub files: Vec<ManifestFile>,
    /// Records of the main dataset (events, or the definition's rows).
    pub total_rows: u64,
    /// "0 records" for an empty scope: the positive statement that nothing happened.
    pub statement: String,
    /// Earliest event time exported.
    pub first_event_at: Option<String>,
    /// Latest event time exported.
    pub last_event_at: Option<String>,
    /// Order-independent digest over the exported event ids.
    pub event_ids_digest: Option<String>,
    /// How `event_ids_digest` is computed.
    pub event_ids_digest_method: String,
    /// Redaction applied.
    pub redaction: ManifestRedaction,
    /// Escaping applied.
    pub escaping: ManifestEscaping,
    /// For a scheduled run after the first: SHA-256 (64 lowercase hex digits) of the
    /// previous run's `manifest.json`, over its bytes exactly as stored in that
    /// artifact, so a deleted or replaced period is detectable. `null` for a first run
    /// and for exports that no schedule made.
    pub previous_manifest_sha256: Option<String>,
    /// The schedule and period this run belongs to; absent for exports that no
    /// schedule made (absent, not `null`, so older manifests serialise byte for byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ManifestSchedule>,
    /// The tool.
    pub tool: ManifestTool,
    /// Public key of the signer, hex (informational; verify with a key you trust).
    pub signing_key: String,
    /// The PDF report among `files`, and the manifest hash printed on its cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ManifestReport>,
}

/// The schedule run an artifact is, and the run before it: what chains a schedule's
/// artifacts (see [`crate::verify::chain`]). The hash of the previous run's manifest
/// is [`Manifest::previous_manifest_sha256`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestSchedule {
    /// The schedule's id (`sch_` + ULID); every run of one schedule carries the same.
    pub schedule_id: String,
    /// The schedule's name when this run was made (it may be renamed later).
    pub schedule_name: String,
    /// The period's label, unique within the schedule: `2026-Q1` (quarterly),
    /// `2026-03` (monthly), `2026-W13` (weekly, ISO 8601 week), or for a cron
    /// schedule the fire time in the schedule's timezone, `2026-03-08T02:30`.
    pub period: String,
    /// Start of the period, inclusive: RFC 3339 in UTC with microseconds
    /// (`2026-01-01T00:00:00.000000Z`). Calendar periods begin at midnight in the
    /// schedule's timezone (the manifest's `window.timezone`), converted to UTC.
    pub period_start: String,
    /// End of the period, exclusive, in the same form as `period_start`.
    pub period_end: String,
    /// The label of the schedule's previous run, whose manifest hash
    /// `previous_manifest_sha256` records; `null` for the schedule's first run.
    pub previous_period: Option<String>,
}

impl ManifestSchedule {
    /// A schedule entry with `period_start` and `period_end` written as manifests write
    /// times (RFC 3339 UTC with microseconds).
    pub fn new(
        schedule_id: impl Into<String>,
        schedule_name: impl Into<String>,
        period: impl Into<String>,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
        previous_period: Option<String>,
    ) -> Self {
        ManifestSchedule {
            schedule_id: schedule_id.into(),
            schedule_name: schedule_name.into(),
            period: period.into(),
            period_start: crate::scope::format_micros(period_start.timestamp_micros()),
            period_end: crate::scope::format_micros(period_end.timestamp_micros()),
            previous_period,
        }
    }
}

/// How a PDF report is bound to its manifest. The report cannot print the hash of a
/// manifest that records the report's own hash, so it prints the hash of this
/// manifest as it was before the report was added: without `report` and without the
/// report's entry in `files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestReport {
    /// The report's path among `files`.
    pub path: String,
    /// SHA-256 of the manifest without the report (see [`Manifest::report_binding`]),
    /// as printed on the report's cover and in its document keywords.
    pub manifest_sha256: String,
    /// How `manifest_sha256` is computed.
    pub method: String,
}

/// How [`ManifestReport::manifest_sha256`] is computed; recorded in the manifest.
pub const REPORT_BINDING_METHOD: &str = "SHA-256 of this manifest serialised as pretty-printed JSON without the report field and without the report's entry in files";

impl Manifest {
    /// SHA-256 of this manifest without the report (its entry in `files` and the
    /// `report` field), serialised as the engine writes manifests.
    pub fn report_binding(&self) -> Option<String> {
        let report = self.report.as_ref()?;
        let mut core = self.clone();
        core.report = None;
        core.files.retain(|f| f.path != report.path);
        Some(core.sha256())
    }

    /// The manifest's bytes as written (pretty JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serialises")
    }

    /// SHA-256 of [`Manifest::to_bytes`].
    pub fn sha256(&self) -> String {
        sha256_hex(&self.to_bytes())
    }
}

/// How [`IdDigest`] combines ids; recorded in every manifest.
pub const DIGEST_METHOD: &str =
    "sum modulo 2^256 of SHA-256(id) over all exported event ids, big-endian hex";

/// Order-independent digest of exported ids, plus the first and last event time.
/// Sums from several partitions combine with [`IdDigest::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdDigest {
    /// Ids added.
    pub count: u64,
    sum: [u64; 4],
    /// Earliest time seen (UTC microseconds).
    pub min_ts: Option<i64>,
    /// Latest time seen.
    pub max_ts: Option<i64>,
}

impl IdDigest {
    fn add_words(&mut self, words: [u64; 4]) {
        // Little-endian limbs: sum[0] is the least significant.
        let mut carry = 0u64;
        for (limb, w) in self.sum.iter_mut().zip(words) {
            let (a, c1) = limb.overflowing_add(w);
            let (b, c2) = a.overflowing_add(carry);
            *limb = b;
            carry = (c1 as u64) + (c2 as u64);
        }
    }

    /// Adds one id.
    pub fn add_id(&mut self, id: &str) {
        let h = Sha256::digest(id.as_bytes());
        let mut words = [0u64; 4];
        for (i, w) in words.iter_mut().enumerate() {
            // Hash bytes are big-endian; the last 8 bytes are the lowest limb.
            let at = 32 - 8 * (i + 1);
            *w = u64::from_be_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        }
        self.add_words(words);
        self.count += 1;
    }

    /// Adds the `id` and `timestamp` columns of `batch` (when present).
    pub fn add_batch(&mut self, batch: &RecordBatch) {
        let schema = batch.schema();
        if let Ok(i) = schema.index_of("id") {
            let a = batch.column(i);
            match a.data_type() {
                DataType::Utf8 => a
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .for_each(|s| self.add_id(s)),
                DataType::Utf8View => a
                    .as_string_view()
                    .iter()
                    .flatten()
                    .for_each(|s| self.add_id(s)),
                DataType::LargeUtf8 => a
                    .as_string::<i64>()
                    .iter()
                    .flatten()
                    .for_each(|s| self.add_id(s)),
                _ => {}
            }
        }
        if let Ok(i) = schema.index_of("timestamp") {
            let a = batch.column(i);
            if let DataType::Timestamp(deltalake::arrow::datatypes::TimeUnit::Microsecond, _) =
                a.data_type()
            {
                let p = a.as_primitive::<TimestampMicrosecondType>();
                for v in p.iter().flatten() {
                    self.min_ts = Some(self.min_ts.map_or(v, |m| m.min(v)));
                    self.max_ts = Some(self.max_ts.map_or(v, |m| m.max(v)));
                }
            }
        }
    }

    /// Combines another partition's digest into this one.
    pub fn merge(&mut self, other: &IdDigest) {
        self.add_words(other.sum);
        self.count += other.count;
        for v in [other.min_ts, other.max_ts].into_iter().flatten() {
            self.min_ts = Some(self.min_ts.map_or(v, |m| m.min(v)));
            self.max_ts = Some(self.max_ts.map_or(v, |m| m.max(v)));
        }
    }

    /// The digest as 64 hex digits.
    pub fn hex(&self) -> String {
        self.sum.iter().rev().map(|w| format!("{w:016x}")).collect()
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_sees_every_id() {
        let mut a = IdDigest::default();
        for id in ["e1", "e2", "e3"] {
            a.add_id(id);
        }
        let mut b = IdDigest::default();
        for id in ["e3", "e1"] {
            b.add_id(id);
        }
        let mut c = IdDigest::default();
        c.add_id("e2");
        b.merge(&c);
        assert_eq!(a.hex(), b.hex());
        assert_eq!(a.count, 3);
        let mut d = IdDigest::default();
        for id in ["e1", "e2", "e4"] {
            d.add_id(id);
        }
        assert_ne!(a.hex(), d.hex());
        assert_eq!(IdDigest::default().hex(), "0".repeat(64));
    }

    #[test]
    fn keys_are_private_and_signatures_check() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = Signer::load_or_create(&state).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Signer::load_or_create(&state).unwrap();
        assert_eq!(s.public_hex(), again.public_hex());
        let sig = s.sign(b"manifest");
        let public = parse_public_key(&s.public_hex()).unwrap();
        verify_signature(&public, b"manifest", &sig).unwrap();
        let pem = parse_public_key(&format!("note\n{}", s.public_pem())).unwrap();
        assert_eq!(pem, public);
        let old = format!("{}\n", hex::encode(&sig));
        verify_signature(&public, b"manifest", old.as_bytes()).unwrap();
        let e = verify_signature(&public, b"manifest!", &sig).unwrap_err();
        assert!(e.to_string().contains("does not match"));
        let other = Signer::load_or_create(&dir.path().join("other")).unwrap();
        let other_key = parse_public_key(&other.public_hex()).unwrap();
        assert!(verify_signature(&other_key, b"manifest", &sig).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Signer::load_or_create(&state).unwrap_err().to_string();
            assert!(e.contains("readable by others"), "{e}");
        }
    }
}
