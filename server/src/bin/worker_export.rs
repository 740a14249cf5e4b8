//! `worker_export`: a job worker only (arrives with the export service).
fn main() {
    eprintln!(
        "worker_export: the background job worker is part of the export service (issue 4) and is not built yet"
    );
    std::process::exit(2);
}
