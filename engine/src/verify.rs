//! Offline verification of an artifact against its signed manifest: every file's
//! bytes, SHA-256 and record count, no file missing or extra, no ZIP entry escaping
//! its folder, and the Ed25519 signature.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::integrity::{MANIFEST_NAME, Manifest, SIGNATURE_NAME, verify_signature};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Each check that passed, one line each.
    pub checked: Vec<String>,
    /// Each problem, naming the file.
    pub problems: Vec<String>,
    /// The manifest, when it could be read.
    pub manifest: Option<Manifest>,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.checked.is_empty()
    }
}

/// Verifies `artifact` (a `.zip`, a single data file with its `.manifest.json` /
/// `.manifest.sig` beside it, or that manifest) with the hex public key `key`.
pub fn verify(artifact: &Path, key: &str) -> Result<VerifyReport> {
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
        verify_zip(artifact, key, &mut report)?;
    } else {
        verify_single(artifact, key, &mut report)?;
    }
    Ok(report)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Checks the signature and parses the manifest.
fn check_manifest(
    label: &str,
    manifest: &[u8],
    signature: Option<&str>,
    key: &str,
    report: &mut VerifyReport,
) -> Option<Manifest> {
    match signature {
        None => report
            .problems
            .push(format!("{label}: the signature file is missing")),
        Some(sig) => match verify_signature(key, manifest, sig) {
            Ok(()) => report.checked.push(format!(
                "signature: valid Ed25519 signature of {label} by key {key}"
            )),
            Err(e) => report.problems.push(format!("{label}: {e}")),
        },
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

/// A plain file name inside one folder: no separators, no `..`, not absolute.
fn safe_relative(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains('\\')
        && !name.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn verify_zip(path: &Path, key: &str, report: &mut VerifyReport) -> Result<()> {
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
    let signature =
        read_entry(&mut zip, SIGNATURE_NAME).map(|b| String::from_utf8_lossy(&b).into_owned());
    let Some(manifest) = check_manifest(
        &format!("{label}/{MANIFEST_NAME}"),
        &manifest_bytes,
        signature.as_deref(),
        key,
        report,
    ) else {
        return Ok(());
    };
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for name in &names {
        if name != MANIFEST_NAME && name != SIGNATURE_NAME && !listed.contains(name.as_str()) {
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

fn verify_single(path: &Path, key: &str, report: &mut VerifyReport) -> Result<()> {
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
    let signature = std::fs::read_to_string(&sig_path).ok();
    let Some(manifest) = check_manifest(
        &display(&manifest_path),
        &manifest_bytes,
        signature.as_deref(),
        key,
        report,
    ) else {
        return Ok(());
    };
    let data = data.expect("set above");
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
