//! The evidence beside an export's data: its manifest (what was exported, from which
//! table versions, under which rules) and the signed package files built from it.

use super::encode::{self, EncodeOptions, Format};
use super::{ArtifactFile, Evidence, ExportRequest, PinnedTables};
use crate::integrity::{
    DIGEST_METHOD, IdDigest, Manifest, ManifestEscaping, ManifestFile, ManifestRedaction,
    ManifestTool, ManifestWindow, sha256_hex,
};

/// The package files beside the data (manifest, signatures, `SHA256SUMS`, public
/// key, `VERIFY.txt`; see [`Signer::package`]), named as inside a ZIP.
pub(super) fn package_files(
    evidence: &Evidence,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    files: &[ArtifactFile],
    zipped: bool,
) -> Vec<(&'static str, Vec<u8>)> {
    let data: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    let prefix = match (zipped, files) {
        (false, [single]) => format!("{}.", single.path),
        _ => String::new(),
    };
    evidence
        .signer
        .package(manifest, manifest_bytes, &data, &prefix)
}

/// The manifest of an export that wrote `files` (the `datasets` list gives, per
/// dataset, the index one past its last file and its name), from `pinned` tables,
/// with `total_rows` rows and the event-id `digest`.
pub(super) fn build_manifest(
    request: &ExportRequest,
    evidence: &Evidence,
    pinned: &PinnedTables,
    files: &[ArtifactFile],
    datasets: &[(usize, String)],
    total_rows: u64,
    digest: &IdDigest,
) -> Manifest {
    let mut manifest_files = Vec::new();
    let mut start = 0;
    for (end, name) in datasets {
        for f in &files[start..*end] {
            manifest_files.push(ManifestFile {
                path: f.path.clone(),
                dataset: name.clone(),
                bytes: f.bytes,
                rows: f.rows,
                sha256: f.sha256.clone(),
            });
        }
        start = *end;
    }
    let has_ids = request.definition.is_none() || digest.count > 0;
    let at = |v: Option<i64>| v.map(crate::scope::format_micros);
    Manifest {
        manifest_version: 1,
        export_id: evidence.export_id.clone(),
        name: request.name.clone(),
        requested_by: evidence.requested_by.clone(),
        created_at: evidence
            .created_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        parameters: request.parameters(),
        sql: request.definition.as_ref().map(|d| d.sql.clone()),
        sql_sha256: request
            .definition
            .as_ref()
            .map(|d| sha256_hex(d.sql.as_bytes())),
        table_versions: pinned
            .versions()
            .into_iter()
            .map(|(d, v)| (d.table_name().to_string(), v))
            .collect(),
        as_of: evidence
            .created_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        window: ManifestWindow {
            from: request.scope.window.start_rfc3339(),
            to: request.scope.window.end_rfc3339(),
            timezone: request.scope.timezone.name().to_string(),
        },
        files: manifest_files,
        total_rows,
        statement: format!(
            "{total_rows} record{}",
            if total_rows == 1 { "" } else { "s" }
        ),
        first_event_at: at(digest.min_ts),
        last_event_at: at(digest.max_ts),
        event_ids_digest: has_ids.then(|| digest.hex()),
        event_ids_digest_method: DIGEST_METHOD.to_string(),
        redaction: ManifestRedaction {
            rules: request.redaction.clone(),
            include_payloads: request.include_payloads,
            marker: "[REDACTED:KIND]".to_string(),
        },
        escaping: escaping(request.format, request.encode),
        previous_manifest_sha256: evidence.previous_manifest_sha256.clone(),
        schedule: evidence.schedule.clone(),
        tool: ManifestTool {
            name: "evidex".to_string(),
            version: crate::VERSION.to_string(),
        },
        signing_key: evidence.signer.public_hex(),
        report: None,
    }
}

/// The escaping entry of the manifest of an export in `format` encoded with `options`.
fn escaping(format: Format, options: EncodeOptions) -> ManifestEscaping {
    let csv = format == Format::Csv;
    let guard = csv && options.csv_formula_guard;
    let json = matches!(format, Format::Json | Format::Ndjson);
    ManifestEscaping {
        csv_formula_guard: guard,
        csv_formula_guard_rule: guard.then(|| encode::CSV_FORMULA_GUARD_RULE.to_string()),
        csv_bom: csv.then_some(options.csv_bom),
        csv_null: csv.then(|| encode::CSV_NULL_RULE.to_string()),
        json_line_terminators: json.then(|| encode::JSON_LINE_TERMINATOR_RULE.to_string()),
    }
}
