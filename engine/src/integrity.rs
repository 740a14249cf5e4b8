//! Evidence integrity: the manifest every artifact carries, its Ed25519 signature,
//! and the order-independent digest of the exported event ids.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
/// See [`MANIFEST_NAME`].
pub const SIGNATURE_NAME: &str = "manifest.sig";

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

    /// The signature of `bytes`, as the text of a `manifest.sig` file.
    pub fn sign(&self, bytes: &[u8]) -> String {
        format!("{}\n", hex::encode(self.key.sign(bytes).to_bytes()))
    }
}

/// Checks `signature` (the text of a `manifest.sig`) over `bytes` with the hex public
/// key `public`.
pub fn verify_signature(public: &str, bytes: &[u8], signature: &str) -> Result<()> {
    let key = hex::decode(public.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| EngineError::invalid("public key: not a 32-byte hex Ed25519 public key"))?;
    let sig = hex::decode(signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| EngineError::invalid("manifest.sig: not a 64-byte hex signature"))?;
    key.verify(bytes, &sig).map_err(|_| {
        EngineError::invalid("manifest.sig: the signature does not match this manifest and key")
    })
}

/// One file of an artifact, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct ManifestEscaping {
    /// CSV cells that a spreadsheet would execute were prefixed with `'`.
    pub csv_formula_guard: bool,
}

/// The tool that wrote the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTool {
    /// `evidex`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What an artifact contains and how it was made; `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// SHA-256 of the previous run's manifest (scheduled runs).
    pub previous_manifest_sha256: Option<String>,
    /// The tool.
    pub tool: ManifestTool,
    /// Public key of the signer, hex (informational; verify with a key you trust).
    pub signing_key: String,
    /// The PDF report among `files`, and the manifest hash printed on its cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ManifestReport>,
}

/// How a PDF report is bound to its manifest. The report cannot print the hash of a
/// manifest that records the report's own hash, so it prints the hash of this
/// manifest as it was before the report was added: without `report` and without the
/// report's entry in `files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        verify_signature(&s.public_hex(), b"manifest", &sig).unwrap();
        let e = verify_signature(&s.public_hex(), b"manifest!", &sig).unwrap_err();
        assert!(e.to_string().contains("does not match"));
        let other = Signer::load_or_create(&dir.path().join("other")).unwrap();
        assert!(verify_signature(&other.public_hex(), b"manifest", &sig).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Signer::load_or_create(&state).unwrap_err().to_string();
            assert!(e.contains("readable by others"), "{e}");
        }
    }
}
