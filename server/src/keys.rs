//! The installation's keys, and the check that every node sharing a lake uses the
//! same ones.
//!
//! On one machine evidex creates its keys in the state directory on first start.
//! Nodes that share a lake (and no disk) must all be given the same keys — the
//! Ed25519 signing key, the master key for stored secrets, the download-link key —
//! as files or values (`secrets.*`, `EVIDEX_SECRETS__*`; `evidex keys init` makes a
//! set). The first node to start records the public names of its keys in the lake
//! (`_evidex/keys.json`: the signing key's fingerprint and the master key's id,
//! neither of which reveals a key); every later node compares, and a node that
//! would create a key of its own, or holds a different one, refuses to start and
//! says which.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use evidex_engine::integrity::{SIGNING_KEY_FILE, Signer};
use evidex_engine::lake::Lake;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::secrets::{MASTER_KEY_FILE, MasterKey};
use crate::store::Store;

/// The record in the lake.
const RECORD: &str = "keys.json";

/// The keys a node runs with.
pub struct Keys {
    /// Signs manifests.
    pub signer: Arc<Signer>,
    /// Seals stored secrets; derives the stream cursor key.
    pub master: Arc<MasterKey>,
    /// Signs download links.
    pub link_key: Vec<u8>,
}

/// The public names of a node's keys, as recorded in the lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// SHA-256 fingerprint of the signing key's public half.
    signing_key_fingerprint: String,
    /// [`MasterKey::id`].
    master_key_id: String,
    /// [`link_key_id`] (absent in records written before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_key_id: Option<String>,
}

/// A public name of the download-link key (16 hex characters of SHA-256 over a
/// label and the key), to tell whether two nodes hold the same one.
fn link_key_id(key: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"evidex link key id\0");
    h.update(key);
    hex::encode(&h.finalize()[..8])
}

/// Loads (creating on first use where allowed) the keys of `config`.
///
/// # Errors
/// A key value or file that is not a key, a key file others can read.
pub fn load(config: &Config, store: &Store) -> Result<Keys> {
    let state = config.state_dir()?;
    let sec = &config.secrets;
    let signer = signer(config)?;
    let master = match &sec.master_key {
        Some(v) => MasterKey::from_hex(v, "secrets.master_key")?,
        None => MasterKey::load_or_create(sec.master_key_file.as_deref(), &state)?,
    };
    let link_key = match &sec.link_key {
        Some(v) => hex::decode(v.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .context(
                "secrets.link_key: not 64 hex characters (32 bytes); evidex keys init prints one",
            )?,
        // A master key given to every node gives every node the same link key.
        None if sec.master_key.is_some() || sec.master_key_file.is_some() => {
            master.derive("download links").to_vec()
        }
        None => store.secret("download-links")?,
    };
    Ok(Keys {
        signer: Arc::new(signer),
        master: Arc::new(master),
        link_key,
    })
}

/// The signing key of `config`: the configured value or file, else the state
/// directory's (created on first use).
///
/// # Errors
/// A value or file that is not a key, a key file others can read.
pub fn signer(config: &Config) -> Result<Signer> {
    let sec = &config.secrets;
    Ok(match (&sec.signing_key, &sec.signing_key_file) {
        (Some(v), _) => Signer::from_hex(v, "secrets.signing_key")?,
        (None, Some(f)) => Signer::from_file(f)?,
        (None, None) => Signer::load_or_create(&config.state_dir()?)?,
    })
}

/// Before a node creates keys: refuses when the lake records keys and this node
/// has none of its own configured or stored (it would create different ones).
///
/// # Errors
/// Names the key the node lacks and how to give it the shared one.
pub async fn check_before_start(lake: &Lake, config: &Config) -> Result<()> {
    let Some(record) = read_record(lake).await? else {
        return Ok(());
    };
    let state = config.state_dir()?;
    let sec = &config.secrets;
    let has_signing = sec.signing_key.is_some()
        || sec.signing_key_file.is_some()
        || state.join(SIGNING_KEY_FILE).exists();
    let has_master = sec.master_key.is_some()
        || sec.master_key_file.is_some()
        || state.join(MASTER_KEY_FILE).exists();
    let missing: Vec<&str> = [
        (!has_signing).then_some("signing key"),
        (!has_master).then_some("master key"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        bail!(
            "this node has no {} of its own, and other nodes already use this lake ({}: signing key {}, master key {}); creating one here would sign and seal with a second, different key. Give this node the keys the other nodes use: EVIDEX_SECRETS__SIGNING_KEY, EVIDEX_SECRETS__MASTER_KEY and EVIDEX_SECRETS__LINK_KEY (or secrets.*_file), the values `evidex keys init` printed for them (see docs/scale-out.md)",
            missing.join(" or "),
            record_location(lake),
            record.signing_key_fingerprint,
            record.master_key_id
        );
    }
    Ok(())
}

/// After loading keys: records them in the lake if none are recorded, else
/// refuses when they differ from the recorded ones.
///
/// # Errors
/// Names the key that differs and the fingerprints.
pub async fn record_or_compare(lake: &Lake, keys: &Keys) -> Result<()> {
    let ours = Record {
        signing_key_fingerprint: keys.signer.fingerprint(),
        master_key_id: keys.master.id(),
        link_key_id: Some(link_key_id(&keys.link_key)),
    };
    let path = lake.control_path(RECORD);
    let shown = record_location(lake);
    let theirs = match read_record(lake).await? {
        Some(r) => r,
        None => {
            let body = serde_json::to_vec_pretty(&ours)?;
            let put = lake
                .store()
                .put_opts(
                    &path,
                    body.into(),
                    PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    },
                )
                .await;
            match put {
                Ok(_) => return Ok(()),
                // Another node recorded its keys first: compare with those.
                Err(object_store::Error::AlreadyExists { .. }) => read_record(lake)
                    .await?
                    .context("the key record vanished while it was being written")?,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot record the keys in {path}"));
                }
            }
        }
    };
    if theirs.signing_key_fingerprint != ours.signing_key_fingerprint {
        bail!(
            "this node's signing key (fingerprint {}) is not the one the other nodes of this lake sign with ({}, recorded in {shown}); artifacts from different nodes would not verify with one public key. Give every node the same EVIDEX_SECRETS__SIGNING_KEY (see `evidex keys init`)",
            ours.signing_key_fingerprint,
            theirs.signing_key_fingerprint
        );
    }
    if let (Some(t), Some(o)) = (&theirs.link_key_id, &ours.link_key_id)
        && t != o
    {
        bail!(
            "this node's download-link key (id {o}) is not the one the other nodes of this lake use ({t}, recorded in {shown}); a link made on one node would not open on another. Give every node the same EVIDEX_SECRETS__LINK_KEY (see `evidex keys init`)"
        );
    }
    if theirs.master_key_id != ours.master_key_id {
        bail!(
            "this node's master key (id {}) is not the one the other nodes of this lake use ({}, recorded in {shown}); secrets sealed on one node would not open on another. Give every node the same EVIDEX_SECRETS__MASTER_KEY (see `evidex keys init`)",
            ours.master_key_id,
            theirs.master_key_id
        );
    }
    Ok(())
}

/// The record's location as a user would write it (`file:///…` or `s3://…`).
fn record_location(lake: &Lake) -> String {
    format!("{}_evidex/{RECORD}", lake.root())
}

async fn read_record(lake: &Lake) -> Result<Option<Record>> {
    let path = lake.control_path(RECORD);
    match lake.store().get(&path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{path} is not an evidex key record")
            })?))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

/// A new set of keys as `EVIDEX_SECRETS__*` lines, and the signing key's
/// fingerprint (`evidex keys init`). With `out`, the keys are written to files
/// there instead (mode 600) and the lines name the files.
///
/// # Errors
/// A file that exists already (never overwritten), or cannot be written.
pub fn init(out: Option<&Path>) -> Result<(Vec<String>, String)> {
    let random = || -> Result<String> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        Ok(hex::encode(k))
    };
    let (signing, master, link) = (random()?, random()?, random()?);
    let fingerprint = Signer::from_hex(&signing, "new key")?.fingerprint();
    let Some(dir) = out else {
        return Ok((
            vec![
                format!("EVIDEX_SECRETS__SIGNING_KEY={signing}"),
                format!("EVIDEX_SECRETS__MASTER_KEY={master}"),
                format!("EVIDEX_SECRETS__LINK_KEY={link}"),
            ],
            fingerprint,
        ));
    };
    std::fs::create_dir_all(dir)?;
    let mut lines = Vec::new();
    for (name, value, key) in [
        ("signing.key", &signing, "SIGNING_KEY_FILE"),
        ("master.key", &master, "MASTER_KEY_FILE"),
    ] {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&path).with_context(|| {
            format!(
                "--out: cannot create {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
        std::io::Write::write_all(&mut f, format!("{value}\n").as_bytes())?;
        f.sync_all()?;
        lines.push(format!("EVIDEX_SECRETS__{key}={}", path.display()));
    }
    lines.push(format!("EVIDEX_SECRETS__LINK_KEY={link}"));
    Ok((lines, fingerprint))
}
