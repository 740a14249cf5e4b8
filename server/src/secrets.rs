//! Secrets at rest: the master key and AES-256-GCM encryption of the secrets evidex
//! stores (webhook signing secrets, delivery credentials), so the metadata database
//! alone reveals none of them.
//!
//! The master key is 32 random bytes, hex in a file readable by its owner only:
//! `secrets.master_key_file`, or `STATE/master.key` created on first start. Each
//! value is sealed with a fresh 96-bit nonce (NIST SP 800-38D §8.2.2, random nonces;
//! far below the 2^32 messages per key that bound allows) and the value's purpose as
//! associated data, so a ciphertext copied into another field does not decrypt.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// File name of the generated master key in the state directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Prefix of sealed values: the scheme's version.
const SEALED_PREFIX: &str = "v1:";

/// The key that seals stored secrets.
pub struct MasterKey {
    cipher: Aes256Gcm,
    raw: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Loads the key from `configured`, or from `STATE/master.key` (created on first
    /// use). A key file that others can read, or that does not hold 64 hex
    /// characters, is refused naming the file.
    pub fn load_or_create(configured: Option<&Path>, state_dir: &Path) -> Result<MasterKey> {
        let path: PathBuf = match configured {
            Some(p) => p.to_path_buf(),
            None => state_dir.join(MASTER_KEY_FILE),
        };
        if configured.is_none() && !path.exists() {
            std::fs::create_dir_all(state_dir)?;
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(&path) {
                Ok(mut f) => {
                    f.write_all(hex::encode(key).as_bytes())?;
                    f.write_all(b"\n")?;
                    f.sync_all()?;
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("master key {}", path.display()));
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .with_context(|| {
                    format!("secrets.master_key_file: cannot read {}", path.display())
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "master key {}: readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("master key {}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .with_context(|| {
                format!(
                    "master key {}: not 64 hex characters (32 bytes)",
                    path.display()
                )
            })?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&bytes);
        Ok(MasterKey::from_bytes(raw))
    }

    /// A key for tests and throwaway setups.
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        MasterKey {
            cipher: Aes256Gcm::new_from_slice(&key).expect("32-byte key"),
            raw: key,
        }
    }

    /// A key from 64 hex characters (an environment value); `origin` names it in
    /// errors.
    pub fn from_hex(text: &str, origin: &str) -> Result<MasterKey> {
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .with_context(|| {
                format!("{origin}: not 64 hex characters (32 bytes); evidex keys init prints one")
            })?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&bytes);
        Ok(MasterKey::from_bytes(raw))
    }

    /// A 32-byte key for `purpose` derived from this one (HMAC-SHA256, RFC 2104, of
    /// the purpose under the master key), so every node with the same master key
    /// derives the same key and none is stored.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac;
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.raw).expect("any key length");
        mac.update(b"evidex derived key\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A public name of this key (16 hex characters of a derived value), to tell
    /// whether two nodes hold the same key without showing it.
    pub fn id(&self) -> String {
        hex::encode(&self.derive("key id")[..8])
    }

    /// Seals `plaintext` for `purpose` (e.g. `webhook:wh_...`): `v1:` + base64 of
    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens a value sealed for `purpose`. Fails (without saying more) for another
    /// key, another purpose, or altered bytes.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > 12)
            .context("a stored secret is not in the sealed format")?;
        let (nonce, body) = bytes.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "a stored secret cannot be opened with this master key (was the key replaced?)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(None, dir.path()).unwrap();
        let sealed = key.seal("webhook:a", b"whsec_secret").unwrap();
        assert!(!sealed.contains("whsec"));
        assert_eq!(key.open("webhook:a", &sealed).unwrap(), b"whsec_secret");
        assert!(key.open("webhook:b", &sealed).is_err());
        let again = MasterKey::load_or_create(None, dir.path()).unwrap();
        assert_eq!(again.open("webhook:a", &sealed).unwrap(), b"whsec_secret");
        let other = MasterKey::from_bytes([7; 32]);
        assert!(other.open("webhook:a", &sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let n = tampered.len() - 3;
        tampered[n] = if tampered[n] == b'A' { b'B' } else { b'A' };
        assert!(
            key.open("webhook:a", std::str::from_utf8(&tampered).unwrap())
                .is_err()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(MASTER_KEY_FILE);
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = MasterKey::load_or_create(None, dir.path()).unwrap_err();
            assert!(format!("{e:#}").contains("readable by others"), "{e:#}");
        }
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not hex").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = MasterKey::load_or_create(Some(&bad), dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("not 64 hex characters"), "{e:#}");
    }
}
