//! PDF rendering with typst, in process: the template is typst source embedded in
//! the binary, the report's numbers and texts reach it only as `data.json` (read
//! with typst's `json()`), so no event text can inject markup. Fonts are embedded
//! (`typst-assets`); nothing is read from the system or the network.

use serde_json::Value;
use typst_as_lib::TypstEngine;

use crate::error::{EngineError, Result};

/// The built-in evidence report template (`templates/evidence_report.typ`).
pub const EVIDENCE_TEMPLATE: &str = include_str!("../../templates/evidence_report.typ");

/// Renders `template` with `data` as its `data.json`; returns the PDF bytes.
pub fn render_pdf(template: &str, data: &Value) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(data).map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    let engine = TypstEngine::builder()
        .main_file(template)
        .fonts(typst_assets::fonts())
        .with_static_file_resolver([("data.json", json)])
        .build();
    let doc = engine.compile().output.map_err(|e| {
        EngineError::Io(std::io::Error::other(format!(
            "the report template failed: {e}"
        )))
    })?;
    typst_pdf::pdf(&doc, &typst_pdf::PdfOptions::default()).map_err(|errors| {
        let msgs: Vec<String> = errors.iter().map(|e| e.message.to_string()).collect();
        EngineError::Io(std::io::Error::other(format!(
            "the PDF could not be written: {}",
            msgs.join("; ")
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(text: &str, decisions: u64) -> Value {
        json!({
            "title": "Q1 2026 SOC2 Audit",
            "period": {"from": "2026-01-01", "to": "2026-03-31", "timezone": "Europe/Berlin"},
            "filters": "decision: block",
            "export_id": "exp_01TEST",
            "generated_at": "2026-04-01T09:00:00Z",
            "manifest_sha256": "ab".repeat(32),
            "totals": {"decisions": decisions},
            "summary": [{"label": "Blocked", "count": 12, "rate": "1.2%"}],
            "breakdown": [{"policy": "pii-detection", "decision": "block", "severity": "high", "events": 12}],
            "samples": [{"timestamp": "2026-01-02T10:00:00Z", "id": "evt_1", "decision": "block",
                         "policy": "pii-detection", "text": text}],
        })
    }

    fn pdftotext(pdf: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("r.pdf");
        std::fs::write(&path, pdf).ok()?;
        let out = std::process::Command::new("pdftotext")
            .arg(&path)
            .arg("-")
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn event_text_is_data_never_markup() {
        let hostile = "#set page(fill: red) ] [ *bold* $x$ <label> @ref #panic(\"no\")";
        let pdf = render_pdf(EVIDENCE_TEMPLATE, &sample(hostile, 1000)).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        // To look at it: EVIDEX_REPORT_DUMP=/tmp/r.pdf cargo test ... then pdftoppm.
        if let Some(path) = std::env::var_os("EVIDEX_REPORT_DUMP") {
            std::fs::write(path, &pdf).unwrap();
        }
        let text = pdftotext(&pdf).expect("pdftotext (poppler-utils) is installed");
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("#set page(fill: red) ] [ *bold* $x$ <label> @ref #panic(\"no\")"),
            "{flat}"
        );
        assert!(
            flat.contains("Q1 2026 SOC2 Audit") && flat.contains("exp_01TEST"),
            "{flat}"
        );
    }

    #[test]
    fn an_empty_scope_says_so() {
        let pdf = render_pdf(EVIDENCE_TEMPLATE, &sample("x", 0)).unwrap();
        let text = pdftotext(&pdf).expect("pdftotext (poppler-utils) is installed");
        assert!(text.contains("There were no decision events"), "{text}");
    }

    #[test]
    fn template_errors_are_reported_not_panicked() {
        let e = render_pdf("#let x = data.nope", &json!({})).unwrap_err();
        assert!(e.to_string().contains("the report template failed"), "{e}");
    }
}
