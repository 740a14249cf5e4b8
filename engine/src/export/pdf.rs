//! The PDF evidence report as an export: the report alone (format `pdf`) or inside
//! a ZIP (`include report`), bound to the manifest it prints the hash of.

use super::*;

/// The PDF evidence report of `request`'s scope: one file, with its manifest beside.
pub(super) async fn run_report(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
    evidence: &Evidence,
    target: impl FnOnce(&str) -> ArtifactTarget,
    control: &ExportControl,
) -> Result<ExportOutcome> {
    let q = request.queries(lake, pinned, DEFAULT_BATCH_ROWS)?;
    let mut digest = IdDigest::default();
    // A report writes no rows as it goes, so its progress follows its stages, in
    // the event-row units callers already divide by the preview count: the id scan
    // moves 0-20 %, the numbers reach 60 %, the laid-out PDF 95 %.
    let total_hint = control.expected_rows.unwrap_or(0);
    let stage = |fraction: f64| {
        if let Some(p) = &control.progress {
            p((total_hint as f64 * fraction) as u64);
        }
    };
    // Unordered: the digest is a sum, and sorting ten million ids is what a tight
    // memory limit cannot afford.
    let mut ids = q.event_ids()?.execute_stream().await?;
    while let Some(batch) = ids.next().await {
        digest.add_batch(&batch?);
        if control.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        if total_hint > 0 {
            stage(0.2 * (digest.count as f64 / total_hint as f64).min(1.0));
        }
    }
    let total = digest.count;
    let core = build_manifest(request, evidence, pinned, &[], &[], total, &digest);
    let pdf = render_report(
        lake,
        pinned,
        request,
        &q,
        evidence,
        &digest,
        &core.sha256(),
        &|f| stage(f),
    )
    .await?;
    stage(0.95);
    let base = sanitize_name(&request.name);
    let file_name = format!("{base}.pdf");
    let target = target(&file_name);
    let path = match &target {
        ArtifactTarget::File { path, .. } => Some(path.clone()),
        ArtifactTarget::Stdout => None,
    };
    let single_name = path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file_name.clone());
    let mut writer = ArtifactWriter::create(target, false, true)?;
    if let Err(e) = writer.write_file(single_name, pdf, total) {
        writer.discard();
        return Err(e);
    }
    let manifest = bind_report(core, writer.files());
    let data_files = writer.files().to_vec();
    let manifest_bytes = manifest.to_bytes();
    let manifest_sha256 = sha256_hex(&manifest_bytes);
    let package = package_files(
        evidence,
        &manifest,
        &manifest_bytes,
        writer.files(),
        writer.is_zip(),
    );
    let written = tokio::task::spawn_blocking(move || {
        let r = package
            .into_iter()
            .try_for_each(|(name, bytes)| writer.add_metadata_file(name, bytes));
        match r {
            Ok(()) => writer.publish(),
            Err(e) => {
                writer.discard();
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
    Ok(ExportOutcome {
        file_name,
        path,
        content_type: Format::Pdf.content_type(),
        files: data_files,
        bytes: written.bytes,
        sha256: written.sha256,
        rows: BTreeMap::from([("events".to_string(), total)]),
        versions: pinned.versions(),
        manifest,
        manifest_sha256,
    })
}

/// Renders the evidence report of `request`'s scope (`q`); `digest` covers the
/// scope's events and `manifest_sha256` (the manifest without the report) is
/// printed on the cover and in the document keywords.
#[allow(
    clippy::too_many_arguments,
    reason = "private helper of the two report paths; every input is distinct and borrowed"
)]
pub(super) async fn render_report(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
    q: &ScopedQueries,
    evidence: &Evidence,
    digest: &IdDigest,
    manifest_sha256: &str,
    stage: &(dyn Fn(f64) + Sync),
) -> Result<Vec<u8>> {
    // The preceding period of the same length, for the change figures.
    let len = request.scope.window.end - request.scope.window.start;
    let mut previous = request.clone();
    previous.scope.window = crate::scope::Window {
        start: request.scope.window.start - len,
        end: request.scope.window.start,
    };
    let p = previous.queries(lake, pinned, DEFAULT_BATCH_ROWS)?;
    let mut data = crate::report::collect(q, &p, 10).await?;
    stage(0.6);
    let filters = request.parameters()["filters"].clone();
    let filters_text = match filters.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_string().trim_matches(['[', ']'])))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "none".to_string(),
    };
    for (k, v) in [
        ("title", serde_json::json!(request.name)),
        (
            "period",
            serde_json::json!({"from": request.scope.from, "to": request.scope.to,
                               "timezone": request.scope.timezone.name()}),
        ),
        ("filters", serde_json::json!(filters_text)),
        ("export_id", serde_json::json!(evidence.export_id)),
        (
            "generated_at",
            serde_json::json!(
                evidence
                    .created_at
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string()
            ),
        ),
        ("event_ids_digest", serde_json::json!(digest.hex())),
        ("manifest_sha256", serde_json::json!(manifest_sha256)),
        (
            "signing_key_fingerprint",
            serde_json::json!(evidence.signer.fingerprint()),
        ),
    ] {
        data[k] = v;
    }
    let style = request.report_style.clone();
    tokio::task::spawn_blocking(move || {
        crate::report::render_styled(crate::report::EVIDENCE_TEMPLATE, &data, &style)
    })
    .await
    .map_err(|e| EngineError::Io(std::io::Error::other(e)))?
}

/// `core` (the manifest before the report was written) with the report, the last
/// of `files`, added and bound: `report.manifest_sha256` is `core`'s hash.
pub(super) fn bind_report(core: Manifest, files: &[ArtifactFile]) -> Manifest {
    let binding = core.sha256();
    let mut manifest = core;
    if let Some(f) = files.last() {
        manifest.files.push(ManifestFile {
            path: f.path.clone(),
            dataset: "report".to_string(),
            bytes: f.bytes,
            rows: f.rows,
            sha256: f.sha256.clone(),
        });
        manifest.report = Some(ManifestReport {
            path: f.path.clone(),
            manifest_sha256: binding,
            method: REPORT_BINDING_METHOD.to_string(),
        });
    }
    manifest
}
