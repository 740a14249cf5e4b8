//! The API under tools nobody here wrote: the OpenAPI document validates as OpenAPI
//! 3.1 (`openapi-spec-validator`), and Schemathesis, a property-based API tester
//! driven by that document, sends generated requests to every operation of a live
//! server with an admin token: no 5xx answer, no answer that contradicts the
//! document, no crash. Both come from PyPI into the test virtual environment
//! (scripts/test.sh; `TEST_PYTHON`).
//!
//! Bounded: `SCHEMATHESIS_EXAMPLES` examples per operation (default 10). The
//! seed is printed with the summary; `schemathesis run --seed N` replays a run.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, evidex, token};

fn python() -> PathBuf {
    PathBuf::from(std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_schemathesis_finds_nothing() {
    let e = common::env(3000, 30);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let admin = token(&e.data, "admin");
    // Limits that would turn a fuzzer's request rate into 429s are lifted; the
    // request timeout is short, which also cuts the event stream's long polls.
    let server = Server::start(
        &e.data,
        1,
        &[
            ("EVIDEX_LIMITS__CREATE_PER_MINUTE", "0"),
            ("EVIDEX_LIMITS__PREVIEW_PER_MINUTE", "0"),
            ("EVIDEX_LIMITS__INGEST_PER_MINUTE", "0"),
            ("EVIDEX_LIMITS__CONCURRENT_EXPORTS", "100000"),
            ("EVIDEX_LIMITS__REQUEST_TIMEOUT_SECS", "4"),
        ],
    );
    let doc_url = format!("{}/openapi.json", server.base);

    let check = Command::new(python())
        .args([
            "-c",
            "import json, sys, urllib.request\n\
             from openapi_spec_validator import OpenAPIV31SpecValidator, validate\n\
             doc = json.load(urllib.request.urlopen(sys.argv[1]))\n\
             assert doc['openapi'].startswith('3.1'), doc['openapi']\n\
             validate(doc, cls=OpenAPIV31SpecValidator)\n\
             print('valid OpenAPI 3.1:', len(doc['paths']), 'paths')",
            &doc_url,
        ])
        .output()
        .expect("the test Python runs (scripts/test.sh prepares it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "openapi-spec-validator: {said}");
    eprintln!("{}", said.trim());

    // Real answers against the document's schemas, with the `jsonschema` library
    // (Draft 2020-12, the dialect of OpenAPI 3.1): a completed export's record and
    // the manifest stored in its artifact, which Schemathesis cannot reach (it
    // needs a job that finished).
    let c = common::Client::new(&server.base);
    let created = c
        .post(
            "/v1/exports",
            &admin,
            &serde_json::json!({"name": "Schema check", "from": "2026-01-01", "to": "2026-12-31",
                                "format": "csv", "include": ["escalations", "report"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.message());
    let id = created.json()["id"].as_str().unwrap().to_string();
    let job = c
        .wait(&id, &admin, std::time::Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    let manifest = c
        .get(&format!("/v1/exports/{id}/manifest"), &admin)
        .await
        .json();
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [("Export", &job), ("Manifest", &manifest)] {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, value.to_string()).unwrap();
        let out = Command::new(python())
            .args([
                "-c",
                "import json, sys, urllib.request\n\
                 from jsonschema import Draft202012Validator\n\
                 doc = json.load(urllib.request.urlopen(sys.argv[1]))\n\
                 schema = {'$ref': '#/components/schemas/' + sys.argv[2], 'components': doc['components']}\n\
                 errors = list(Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[3]))))\n\
                 [print(e.json_path, e.message) for e in errors]\n\
                 sys.exit(1 if errors else 0)",
                &doc_url,
                name,
                file.to_str().unwrap(),
            ])
            .output()
            .expect("the test Python runs");
        assert!(
            out.status.success(),
            "{name} does not match its schema: {}{}\n{value}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python().with_file_name("schemathesis"))
            .args([
                "run",
                &doc_url,
                "--header",
                &format!("Authorization: Bearer {admin}"),
                "--max-examples",
                &examples,
                "--checks",
                "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
                "--request-timeout",
                "10",
                // Revoking tokens would revoke the fuzzer's own (it learns ids
                // from GET /v1/tokens): the token routes have their own tests.
                "--exclude-path-regex",
                "^/v1/tokens/",
                "--no-color",
            ])
            .output()
            .expect("schemathesis runs (scripts/test.sh installs it)")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    // The summary into the test output (the README shows it).
    let summary: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    eprintln!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
