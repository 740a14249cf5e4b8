//! Offline verification of an artifact against its signed manifest: every file's
//! bytes, SHA-256 and record count, no file missing or extra, no ZIP entry escaping
//! its folder, and the Ed25519 signature. [`chain`] checks a schedule's series of
//! artifacts on top of that.

pub mod chain;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use ed25519_dalek::VerifyingKey;

pub use chain::{ChainReport, ChainRun, SeriesReport, verify_chain};

use crate::integrity::{
    MANIFEST_NAME, Manifest, PACKAGE_NAMES, PUBLIC_KEY_NAME, SIGNATURE_NAME, SUMS_NAME,
    SUMS_SIGNATURE_NAME, fingerprint, parse_public_key, sha256_hex, verify_signature,
};

/// Which key an artifact's signatures must be made with.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A key the caller trusts (`--key`, or this installation's own key): signatures
    /// by any other key fail, whatever key the package encloses.
    Key(VerifyingKey),
    /// The fingerprint of the trusted key (`--fingerprint`): the package's enclosed
    /// key must have it.
    Fingerprint(String),
    /// No key given: the signatures are checked against the key the package
    /// encloses, and the report says that its fingerprint must be compared with the
    /// one the organisation published. Proves integrity, not origin.
    Enclosed,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Each check that passed, one line each.
    pub checked: Vec<String>,
    /// Each problem, naming the file.
    pub problems: Vec<String>,
    /// The manifest, when it could be read.
    pub manifest: Option<Manifest>,
    /// What the reader must still do themselves (compare an enclosed key's
    /// fingerprint with the published one).
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.checked.is_empty()
    }
}

/// Verifies `artifact` (a `.zip`, a single data file with its `.manifest.json`,
/// `.manifest.sig` and the other package files beside it, or that manifest): the
/// signatures with the key `trust` selects, `SHA256SUMS` against the manifest, and
/// every file's bytes, hash and record count.
pub fn verify(artifact: &Path, trust: &Trust) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut head = [0u8; 4];
    let is_zip = File::open(artifact)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == *b"PK\x03\x04";
    if !artifact.exists() {
        return Err(EngineError::invalid(format!(
            "{}: no such file",
            artifact.display()
        )));
    }
    if is_zip {
        verify_zip(artifact, trust, &mut report)?;
    } else {
        verify_single(artifact, trust, &mut report)?;
    }
    Ok(report)
}

/// The key to check signatures with, given what the caller trusts and the key file
/// the package encloses (`None` when it has none).
fn resolve_key(
    label: &str,
    trust: &Trust,
    enclosed: Option<Vec<u8>>,
    report: &mut VerifyReport,
) -> Option<VerifyingKey> {
    let enclosed = match enclosed.map(|b| parse_public_key(&String::from_utf8_lossy(&b))) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            report
                .problems
                .push(format!("{label}/{PUBLIC_KEY_NAME}: {e}"));
            None
        }
        None => None,
    };
    match trust {
        Trust::Key(key) => {
            if let Some(k) = enclosed
                && k != *key
            {
                report.problems.push(format!(
                    "{label}: the enclosed {PUBLIC_KEY_NAME} (fingerprint {}) is not the trusted key (fingerprint {})",
                    fingerprint(&k),
                    fingerprint(key)
                ));
            }
            Some(*key)
        }
        Trust::Fingerprint(want) => {
            let want = want
                .trim()
                .trim_start_matches("sha256:")
                .to_ascii_lowercase();
            match enclosed {
                Some(k) if fingerprint(&k) == want => {
                    report.checked.push(format!(
                        "key: the enclosed {PUBLIC_KEY_NAME} has the trusted fingerprint {want}"
                    ));
                    Some(k)
                }
                Some(k) => {
                    report.problems.push(format!(
                        "{label}: the enclosed {PUBLIC_KEY_NAME} has fingerprint {}, not the trusted {want}",
                        fingerprint(&k)
                    ));
                    None
                }
                None => {
                    report.problems.push(format!(
                        "{label}: {PUBLIC_KEY_NAME} is missing, so the fingerprint cannot be checked"
                    ));
                    None
                }
            }
        }
        Trust::Enclosed => match enclosed {
            Some(k) => {
                report.notes.push(format!(
                    "signed with the key enclosed in the package, fingerprint {}: compare it with \
                     the fingerprint your organisation published (or pass --key / --fingerprint \
                     to make that a hard check)",
                    fingerprint(&k)
                ));
                Some(k)
            }
            None => {
                report.problems.push(format!(
                    "{label}: the package encloses no {PUBLIC_KEY_NAME}; pass --key with the signer's public key"
                ));
                None
            }
        },
    }
}

/// Checks `SHA256SUMS` (when the package has one) and its signature: it must list
/// exactly the manifest's files (named `data_name(path)`) and the manifest, with the
/// manifest's hashes.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per artifact kind, all inputs distinct"
)]
fn check_sums(
    label: &str,
    sums: Option<Vec<u8>>,
    sums_sig: Option<Vec<u8>>,
    key: Option<&VerifyingKey>,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    data_name: impl Fn(&str) -> String,
    manifest_name: &str,
    report: &mut VerifyReport,
) {
    let Some(sums) = sums else {
        report.checked.push(format!(
            "{SUMS_NAME}: none in this package (made by an evidex before 0.1.1); the manifest's hashes are checked instead"
        ));
        return;
    };
    match (key, sums_sig) {
        (Some(key), Some(sig)) => match verify_signature(key, &sums, &sig) {
            Ok(()) => report.checked.push(format!(
                "signature: {SUMS_SIGNATURE_NAME} is valid for {SUMS_NAME}"
            )),
            Err(e) => report
                .problems
                .push(format!("{label}/{SUMS_SIGNATURE_NAME}: {e}")),
        },
        (_, None) => report
            .problems
            .push(format!("{label}: {SUMS_SIGNATURE_NAME} is missing")),
        (None, _) => {}
    }
    let mut want: BTreeSet<(String, String)> = manifest
        .files
        .iter()
        .map(|f| (data_name(&f.path), f.sha256.clone()))
        .collect();
    want.insert((manifest_name.to_string(), sha256_hex(manifest_bytes)));
    let text = String::from_utf8_lossy(&sums);
    let got: BTreeSet<(String, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once("  ") {
            Some((h, n)) => (n.trim_start_matches('*').to_string(), h.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    if got == want {
        report.checked.push(format!(
            "{SUMS_NAME}: lists the manifest and its {} file(s) with the manifest's hashes",
            manifest.files.len()
        ));
    } else {
        for (name, sha) in got.difference(&want) {
            report.problems.push(format!(
                "{label}/{SUMS_NAME}: lists {name} with {sha}, which the manifest does not"
            ));
        }
        for (name, _) in want.difference(&got) {
            report.problems.push(format!(
                "{label}/{SUMS_NAME}: does not list {name} as the manifest does"
            ));
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Checks the signature and parses the manifest.
fn check_manifest(
    label: &str,
    manifest: &[u8],
    signature: Option<&[u8]>,
    key: Option<&VerifyingKey>,
    report: &mut VerifyReport,
) -> Option<Manifest> {
    match (signature, key) {
        (None, _) => report
            .problems
            .push(format!("{label}: the signature file is missing")),
        (Some(sig), Some(key)) => match verify_signature(key, manifest, sig) {
            Ok(()) => report.checked.push(format!(
                "signature: valid Ed25519 signature of {label} by the key with fingerprint {}",
                fingerprint(key)
            )),
            Err(e) => report
                .problems
                .push(format!("{label}: {SIGNATURE_NAME}: {e}")),
        },
        (Some(_), None) => {} // why there is no key is reported already
    }
    match serde_json::from_slice::<Manifest>(manifest) {
        Ok(m) => Some(m),
        Err(e) => {
            report
                .problems
                .push(format!("{label}: not a valid evidex manifest: {e}"));
            None
        }
    }
}

/// The number of records in a ZIP's central directory, from its end of central
/// directory record (APPNOTE.TXT 4.3.16, and 4.3.14 for ZIP64).
fn central_directory_entries(path: &Path) -> Option<u64> {
    use std::io::SeekFrom;
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // The record is 22 bytes plus a comment of at most 65,535 bytes.
    let tail_len = len.min(22 + 65_535);
    f.seek(SeekFrom::Start(len - tail_len)).ok()?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).ok()?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == *b"PK\x05\x06")?;
    let total = u16::from_le_bytes([tail[at + 10], tail[at + 11]]);
    if total != 0xFFFF {
        return Some(u64::from(total));
    }
    // ZIP64: the locator (20 bytes) sits just before the record and points at the
    // ZIP64 end of central directory record, whose total is at offset 32.
    let loc = at.checked_sub(20)?;
    if tail[loc..loc + 4] != *b"PK\x06\x07" {
        return None;
    }
    let off = u64::from_le_bytes(tail[loc + 8..loc + 16].try_into().ok()?);
    f.seek(SeekFrom::Start(off)).ok()?;
    let mut rec = [0u8; 40];
    f.read_exact(&mut rec).ok()?;
    if rec[..4] != *b"PK\x06\x06" {
        return None;
    }
    Some(u64::from_le_bytes(rec[32..40].try_into().ok()?))
}

/// A plain file name inside one folder: no separators, no `..`, not absolute.
fn safe_relative(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains('\\')
        && !name.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn verify_zip(path: &Path, trust: &Trust, report: &mut VerifyReport) -> Result<()> {
    let label = display(path);
    let file = File::open(path)?;
    let mut zip = match zip::ZipArchive::new(BufReader::new(file)) {
        Ok(z) => z,
        Err(e) => {
            report
                .problems
                .push(format!("{label}: not a readable ZIP: {e}"));
            return Ok(());
        }
    };
    // The zip crate keeps one entry per name (the last); an archive with two entries
    // of one name would be checked on one copy and extracted, by some tools, from
    // the other. Count the central directory's records ourselves.
    match central_directory_entries(path) {
        Some(n) if n == zip.len() as u64 => {}
        Some(n) => {
            report.problems.push(format!(
                "{label}: the archive has {n} entries but {} distinct names: two entries share a name",
                zip.len()
            ));
            return Ok(());
        }
        None => {
            report.problems.push(format!(
                "{label}: the end of central directory record cannot be read"
            ));
            return Ok(());
        }
    }
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(zip_err)?;
        let name = entry.name().to_string();
        if !safe_relative(&name) || entry.enclosed_name().is_none() {
            report.problems.push(format!(
                "{label}: entry {name:?} has a path that escapes the archive's folder"
            ));
            continue;
        }
        names.push(name);
    }
    let read_entry = |zip: &mut zip::ZipArchive<BufReader<File>>, name: &str| -> Option<Vec<u8>> {
        let mut e = zip.by_name(name).ok()?;
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).ok()?;
        Some(buf)
    };
    let Some(manifest_bytes) = read_entry(&mut zip, MANIFEST_NAME) else {
        report
            .problems
            .push(format!("{label}: {MANIFEST_NAME} is missing"));
        return Ok(());
    };
    let signature = read_entry(&mut zip, SIGNATURE_NAME);
    let key = resolve_key(&label, trust, read_entry(&mut zip, PUBLIC_KEY_NAME), report);
    let Some(manifest) = check_manifest(
        &format!("{label}/{MANIFEST_NAME}"),
        &manifest_bytes,
        signature.as_deref(),
        key.as_ref(),
        report,
    ) else {
        return Ok(());
    };
    check_sums(
        &label,
        read_entry(&mut zip, SUMS_NAME),
        read_entry(&mut zip, SUMS_SIGNATURE_NAME),
        key.as_ref(),
        &manifest,
        &manifest_bytes,
        str::to_string,
        MANIFEST_NAME,
        report,
    );
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for name in &names {
        if !PACKAGE_NAMES.contains(&name.as_str()) && !listed.contains(name.as_str()) {
            report.problems.push(format!(
                "{label}/{name}: in the archive but not in the manifest"
            ));
        }
    }
    for f in &manifest.files {
        let entry_label = format!("{label}/{}", f.path);
        if !safe_relative(&f.path) {
            report.problems.push(format!(
                "{entry_label}: the manifest names a path that escapes the archive's folder"
            ));
            continue;
        }
        if !names.iter().any(|n| n == &f.path) {
            report
                .problems
                .push(format!("{entry_label}: listed in the manifest but missing"));
            continue;
        }
        let entry = zip.by_name(&f.path).map_err(zip_err)?;
        let (bytes, sha, rows) = measure(entry, &f.path)?;
        compare(&entry_label, f, bytes, &sha, rows, report);
    }
    check_totals(&label, &manifest, report);
    check_report(&label, &manifest, |name| read_entry(&mut zip, name), report);
    report.manifest = Some(manifest);
    Ok(())
}

fn verify_single(path: &Path, trust: &Trust, report: &mut VerifyReport) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let (data, manifest_path) = if let Some(stem) = name.strip_suffix(".manifest.json") {
        (Some(dir.join(stem)), path.to_path_buf())
    } else {
        (
            Some(path.to_path_buf()),
            dir.join(format!("{name}.manifest.json")),
        )
    };
    let manifest_name = manifest_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig_path =
        manifest_path.with_file_name(manifest_name.replace(".manifest.json", ".manifest.sig"));
    let manifest_bytes = match std::fs::read(&manifest_path) {
        Ok(b) => b,
        Err(_) => {
            report.problems.push(format!(
                "{}: the manifest {} is missing",
                display(path),
                display(&manifest_path)
            ));
            return Ok(());
        }
    };
    let signature = std::fs::read(&sig_path).ok();
    // The other package files sit beside the manifest: `NAME.csv.signing-key.pem`.
    let stem = manifest_name
        .strip_suffix(MANIFEST_NAME)
        .unwrap_or(&manifest_name)
        .to_string();
    let beside =
        |name: &str| std::fs::read(manifest_path.with_file_name(format!("{stem}{name}"))).ok();
    let key = resolve_key(&display(dir), trust, beside(PUBLIC_KEY_NAME), report);
    let Some(manifest) = check_manifest(
        &display(&manifest_path),
        &manifest_bytes,
        signature.as_deref(),
        key.as_ref(),
        report,
    ) else {
        return Ok(());
    };
    let data = data.expect("set above");
    let data_file_name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_sums(
        &display(dir),
        beside(SUMS_NAME),
        beside(SUMS_SIGNATURE_NAME),
        key.as_ref(),
        &manifest,
        &manifest_bytes,
        |_| data_file_name.clone(),
        &manifest_name,
        report,
    );
    match manifest.files.as_slice() {
        [f] => {
            if !safe_relative(&f.path) {
                report.problems.push(format!(
                    "{}: the manifest names a path that escapes its folder: {:?}",
                    display(&manifest_path),
                    f.path
                ));
            } else {
                match File::open(&data) {
                    Ok(file) => {
                        let (bytes, sha, rows) = measure(file, &f.path)?;
                        compare(&display(&data), f, bytes, &sha, rows, report);
                    }
                    Err(_) => report.problems.push(format!(
                        "{}: listed in the manifest but missing",
                        display(&data)
                    )),
                }
            }
        }
        files => report.problems.push(format!(
            "{}: lists {} files; a single-file artifact has exactly one",
            display(&manifest_path),
            files.len()
        )),
    }
    check_totals(&display(path), &manifest, report);
    check_report(
        &display(dir),
        &manifest,
        |_| std::fs::read(&data).ok(),
        report,
    );
    report.manifest = Some(manifest);
    Ok(())
}

/// A PDF report's binding: the manifest hash it prints (and carries in its document
/// keywords) is the hash of this manifest without the report.
fn check_report(
    label: &str,
    manifest: &Manifest,
    read: impl FnOnce(&str) -> Option<Vec<u8>>,
    report: &mut VerifyReport,
) {
    let Some(r) = &manifest.report else {
        return;
    };
    if !manifest.files.iter().any(|f| f.path == r.path) {
        report.problems.push(format!(
            "{label}: the manifest's report {:?} is not among its files",
            r.path
        ));
        return;
    }
    let expected = manifest.report_binding().unwrap_or_default();
    if expected != r.manifest_sha256 {
        report.problems.push(format!(
            "{label}: the report is bound to manifest {} but this manifest without the report hashes to {expected}",
            r.manifest_sha256
        ));
        return;
    }
    let needle = format!("evidex-manifest-sha256:{}", r.manifest_sha256);
    match read(&r.path) {
        Some(pdf) if pdf.windows(needle.len()).any(|w| w == needle.as_bytes()) => {
            report.checked.push(format!(
                "{label}/{}: names manifest {} (this manifest without the report)",
                r.path, r.manifest_sha256
            ))
        }
        Some(_) => report.problems.push(format!(
            "{label}/{}: the report does not name manifest {}; it was made for another export",
            r.path, r.manifest_sha256
        )),
        None => {} // a missing file is reported above
    }
}

fn check_totals(label: &str, manifest: &Manifest, report: &mut VerifyReport) {
    let main: u64 = manifest
        .files
        .iter()
        .filter(|f| f.dataset == main_dataset(manifest))
        .map(|f| f.rows)
        .sum();
    if main == manifest.total_rows {
        report.checked.push(format!(
            "total: {} records of {} across {} file(s)",
            manifest.total_rows,
            main_dataset(manifest),
            manifest.files.len()
        ));
    } else {
        report.problems.push(format!(
            "{label}: the files hold {main} records of {} but the manifest states {}",
            main_dataset(manifest),
            manifest.total_rows
        ));
    }
}

fn main_dataset(m: &Manifest) -> &str {
    m.files
        .first()
        .map(|f| f.dataset.as_str())
        .unwrap_or("events")
}

fn compare(
    label: &str,
    f: &crate::integrity::ManifestFile,
    bytes: u64,
    sha: &str,
    rows: Option<u64>,
    report: &mut VerifyReport,
) {
    let mut ok = true;
    if bytes != f.bytes {
        ok = false;
        report.problems.push(format!(
            "{label}: {bytes} bytes, the manifest says {}",
            f.bytes
        ));
    }
    if sha != f.sha256 {
        ok = false;
        report.problems.push(format!(
            "{label}: SHA-256 {sha} differs from the manifest's {}",
            f.sha256
        ));
    }
    // A report's record count is what it covers, not something to count in its bytes.
    let rows = if f.path.ends_with(".pdf") {
        Some(f.rows)
    } else {
        rows
    };
    match rows {
        Some(r) if r != f.rows => {
            ok = false;
            report.problems.push(format!(
                "{label}: {r} records, the manifest says {}",
                f.rows
            ));
        }
        None => {
            ok = false;
            report
                .problems
                .push(format!("{label}: its records cannot be read"));
        }
        _ => {}
    }
    if ok {
        report.checked.push(format!(
            "{label}: {bytes} bytes, {} records, sha256 {sha}",
            f.rows
        ));
    }
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Size, SHA-256 and record count of a file's bytes (records by its extension;
/// `None` when they cannot be parsed).
fn measure(reader: impl Read, name: &str) -> Result<(u64, String, Option<u64>)> {
    let mut r = Hashing {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let ext = name.rsplit('.').next().unwrap_or("");
    let rows = match ext {
        "csv" => {
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(false)
                .from_reader(&mut r);
            let mut rec = csv::ByteRecord::new();
            let mut n = 0u64;
            let mut ok = true;
            loop {
                match csv.read_byte_record(&mut rec) {
                    Ok(true) => n += 1,
                    Ok(false) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            ok.then_some(n)
        }
        "ndjson" => {
            let mut n = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            let mut line_has_data = false;
            loop {
                let k = r.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                for &b in &buf[..k] {
                    if b == b'\n' {
                        if line_has_data {
                            n += 1;
                        }
                        line_has_data = false;
                    } else if !b.is_ascii_whitespace() {
                        line_has_data = true;
                    }
                }
            }
            if line_has_data {
                n += 1;
            }
            Some(n)
        }
        "json" => count_json_array(&mut r),
        "parquet" => {
            // Parquet needs to seek: copy to a temporary file while hashing.
            let mut tmp = tempfile::tempfile()?;
            io::copy(&mut r, &mut tmp)?;
            tmp.rewind()?;
            deltalake::parquet::file::reader::SerializedFileReader::new(tmp)
                .ok()
                .map(|reader| {
                    use deltalake::parquet::file::reader::FileReader;
                    reader.metadata().file_metadata().num_rows() as u64
                })
        }
        _ => Some(0),
    };
    io::copy(&mut r, &mut io::sink())?;
    Ok((r.bytes, hex::encode(r.hasher.finalize()), rows))
}

fn count_json_array(r: &mut impl Read) -> Option<u64> {
    use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<u64, A::Error> {
            let mut n = 0;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::new(r));
    let n = (&mut de).deserialize_seq(Count).ok()?;
    de.end().ok()?;
    Some(n)
}

fn zip_err(e: zip::result::ZipError) -> EngineError {
    EngineError::Io(io::Error::other(e))
}
