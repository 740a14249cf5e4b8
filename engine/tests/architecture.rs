//! The engine's layering, checked on its sources: the scoped views and the format
//! list sit below the encoders, the SQL definitions and the PDF report, so none of
//! the lower modules may import the export orchestration (`crate::export`), and the
//! definitions and the report do not import each other. A `use` that breaks this is
//! an import cycle in the making.

use std::path::{Path, PathBuf};

fn sources(under: &Path) -> Vec<PathBuf> {
    if under.is_file() {
        return vec![under.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(under).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn lower_layers_do_not_import_the_layers_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rules: &[(&str, &[&str])] = &[
        (
            "format.rs",
            &[
                "crate::export",
                "crate::definition",
                "crate::report",
                "crate::views",
            ],
        ),
        ("views", &["crate::export", "crate::report"]),
        (
            "definition.rs",
            &["crate::export", "crate::report", "crate::views"],
        ),
        ("report", &["crate::export", "crate::definition"]),
    ];
    let mut broken = Vec::new();
    for (module, forbidden) in rules {
        let files = sources(&src.join(module));
        assert!(!files.is_empty(), "{module} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for f in *forbidden {
                    if code.contains(f) {
                        broken.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layering:\n{}",
        broken.join("\n")
    );
}
