//! Configuration: a TOML file, then `EVIDEX_SECTION__KEY` environment overrides, then
//! command-line flags, validated once into one typed [`Config`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use evidex_engine::redact::RedactionRules;
use serde::Deserialize;

mod env;
use env::{EnvKey, NOT_CONFIG_VARS, env_key_path, key_at, parse_env_value, set_path};

/// Everything evidex can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the event lake lives: a local directory (default `./evidex-data`) or
    /// `s3://bucket/prefix`.
    pub data: String,
    /// Local directory for the metadata database and keys when `data` is on S3.
    pub state_dir: Option<PathBuf>,
    /// The shared metadata database of a scale-out deployment
    /// (`postgres://user:password@host:port/database`, env `EVIDEX_DATABASE_URL`).
    /// Unset: SQLite in the state directory, the embedded default.
    pub database_url: Option<DatabaseUrl>,
    /// PEM certificates (one or more) to trust for the metadata database's TLS
    /// certificate besides the system's roots: a private CA, or the server's own
    /// self-signed certificate. The server's certificate is always verified, name
    /// included, whenever TLS is used (`sslmode=prefer`, the default, uses it when
    /// the server offers it; `sslmode=require` insists; `sslmode=disable` never).
    pub database_ca_file: Option<PathBuf>,
    /// Where finished exports are kept: a local directory (default
    /// `STATE/artifacts`) or `s3://bucket/prefix`, which every node of a scale-out
    /// deployment reads (credentials from the same `AWS_*` variables as the lake).
    pub artifacts: Option<String>,
    /// With `artifacts` on S3: downloads (`GET`, token or link) answer `307` to a
    /// presigned URL of the object valid this many seconds (1 to 604800, SigV4's
    /// limit; never past the link's own expiry) instead of streaming it through
    /// this node. Unset: every download streams through the node.
    pub artifacts_redirect_secs: Option<u64>,
    /// Export settings.
    pub export: ExportConfig,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Redaction rules applied to every export.
    pub redaction: RedactionRules,
    /// A directory of extra definition files (`*.sql` with a header), listed by
    /// `evidex presets` beside the built-in ones.
    pub presets_dir: Option<PathBuf>,
    /// The HTTP service.
    pub server: ServerConfig,
    /// How PDF reports look.
    pub report: ReportConfig,
    /// Outbound connections (webhooks, delivery endpoints).
    pub network: NetworkConfig,
    /// Keys that protect stored secrets.
    pub secrets: SecretsConfig,
    /// How deliveries to the bucket (set with `PUT /v1/settings/delivery`) run.
    pub delivery: DeliveryConfig,
    /// How schedules run.
    pub scheduler: SchedulerConfig,
    /// Per-token rate limits, the cap on unfinished exports and the request
    /// timeout.
    pub limits: crate::limits::LimitsConfig,
    /// `EVIDEX_*` variables that cannot be configuration keys and were ignored
    /// (set by the platform, like Kubernetes' `EVIDEX_PORT`); callers warn about them.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
    /// Object-store settings from the environment's `AWS_*` variables (lower-cased
    /// keys, as `object_store` takes them), for the lake and the artifacts bucket.
    #[serde(skip)]
    pub storage_options: StorageOptions,
}

/// Object-store settings (they include the secret access key, so `Debug` prints
/// only their names).
#[derive(Clone, Default)]
pub struct StorageOptions(pub HashMap<String, String>);

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// A PostgreSQL connection URL. It usually holds a password, so `Debug` does not
/// print it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(set)")
    }
}

/// Operational settings of S3 delivery (the bucket itself is a stored setting).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How long a failing delivery keeps being retried, in seconds from the first
    /// attempt (exponential backoff with jitter between attempts). Default 6 hours.
    pub retry_for_secs: u64,
    /// Artifacts of at least this many bytes are uploaded in parts (S3 multipart
    /// upload). Default 64 MiB; at least 5 MiB, the smallest part S3 accepts.
    pub multipart_threshold_bytes: u64,
    /// Bound on each step of a test connection and each request of a delivery, in
    /// seconds. Default 10.
    pub step_timeout_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_for_secs: 6 * 3600,
            multipart_threshold_bytes: 64 << 20,
            step_timeout_secs: 10,
        }
    }
}

/// Scheduler settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Seconds between two looks at the schedules. Default 30.
    pub tick_secs: u64,
    /// At most this many missed periods of one schedule are queued at once after an
    /// outage (oldest first; the rest follow on the next ticks). Default 60.
    pub catch_up_cap: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            tick_secs: 30,
            catch_up_cap: 60,
        }
    }
}

/// Outbound network settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Allow webhook URLs and delivery endpoints that resolve to private, loopback,
    /// link-local or cloud-metadata addresses (on-premises installs and tests; off by
    /// default, so a stored URL cannot reach the server's own network).
    pub allow_private_targets: bool,
}

/// Where the keys come from. On one machine evidex creates them in the state
/// directory; nodes that share a lake must all be given the same keys, as files or
/// values (`evidex keys init` makes a set).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// A file holding the 32-byte AES-256-GCM master key as 64 hex characters
    /// (mode 600). Default: `STATE/master.key`, created on first start.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, 64 hex characters (`EVIDEX_SECRETS__MASTER_KEY`).
    pub master_key: Option<String>,
    /// A file holding the Ed25519 signing key's 32-byte seed as hex (mode 600).
    /// Default: `STATE/signing.key`, created on first use.
    pub signing_key_file: Option<PathBuf>,
    /// The signing key's seed itself, 64 hex characters
    /// (`EVIDEX_SECRETS__SIGNING_KEY`).
    pub signing_key: Option<String>,
    /// The key download links are signed with, 64 hex characters
    /// (`EVIDEX_SECRETS__LINK_KEY`). Default: one kept in the metadata database.
    pub link_key: Option<String>,
}

impl std::fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key values never reach a log.
        f.debug_struct("SecretsConfig")
            .field("master_key_file", &self.master_key_file)
            .field("master_key", &self.master_key.as_ref().map(|_| "(set)"))
            .field("signing_key_file", &self.signing_key_file)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "(set)"))
            .field("link_key", &self.link_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// PDF report styling.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Headings and charts, `#rrggbb`.
    pub accent: Option<String>,
    /// Secondary text, `#rrggbb`.
    pub muted: Option<String>,
    /// The line above the title on the cover.
    pub organisation: Option<String>,
    /// A PNG, JPEG or SVG file shown on the cover.
    pub logo: Option<PathBuf>,
}

/// HTTP service settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// In-process export workers.
    pub workers: usize,
    /// Seconds an artifact (and its download links) is kept (default 7 days).
    pub retention_secs: u64,
    /// Seconds a download link is valid, at most the retention (default 7 days).
    pub link_ttl_secs: u64,
    /// Base URL links are made with (default `http://LISTEN`).
    pub public_url: Option<String>,
    /// Largest request body, bytes (ingest bodies after gzip decoding too).
    pub max_body_bytes: usize,
    /// Longest an ingest batch waits for requests still arriving (being read or
    /// parsed) before committing, ms; it closes at once when none is.
    pub ingest_linger_ms: u64,
    /// On SIGTERM or Ctrl-C: seconds running export jobs may take to finish after
    /// in-flight requests were answered (default 30; workers claim nothing new).
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_string(),
            workers: 2,
            retention_secs: 7 * 86_400,
            link_ttl_secs: 7 * 86_400,
            public_url: None,
            max_body_bytes: 64 << 20,
            ingest_linger_ms: 50,
            shutdown_grace_secs: 30,
        }
    }
}

/// Export settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Rows per file before an export becomes a ZIP of parts.
    pub split_rows: u64,
    /// Neutralise spreadsheet formulas in CSV cells (default on).
    pub csv_formula_guard: bool,
    /// Start each CSV file with a UTF-8 byte-order mark, for Excel on Windows
    /// (default off).
    pub csv_bom: bool,
    /// Memory (MiB) one export's queries may hold before sorts, aggregations and
    /// joins spill to disk.
    pub query_memory_mb: usize,
}

/// Ingest settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Longest accepted record in bytes.
    pub max_record_bytes: usize,
    /// Compact a date partition once it holds this many files.
    pub compact_min_files: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: "./evidex-data".to_string(),
            state_dir: None,
            database_url: None,
            database_ca_file: None,
            artifacts: None,
            artifacts_redirect_secs: None,
            export: ExportConfig::default(),
            ingest: IngestConfig::default(),
            redaction: RedactionRules::default(),
            presets_dir: None,
            server: ServerConfig::default(),
            report: ReportConfig::default(),
            network: NetworkConfig::default(),
            secrets: SecretsConfig::default(),
            delivery: DeliveryConfig::default(),
            scheduler: SchedulerConfig::default(),
            limits: crate::limits::LimitsConfig::default(),
            ignored_env: Vec::new(),
            storage_options: StorageOptions::default(),
        }
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            split_rows: evidex_engine::export::DEFAULT_SPLIT_ROWS,
            csv_formula_guard: true,
            csv_bom: false,
            query_memory_mb: evidex_engine::views::QUERY_MEMORY_LIMIT >> 20,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_record_bytes: 1 << 20,
            compact_min_files: 8,
        }
    }
}

impl Config {
    /// Loads the file (if any), applies `EVIDEX_*` variables from `env`, and validates.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("config file {} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut keys: Vec<_> = env
            .keys()
            .filter(|k| k.starts_with("EVIDEX_"))
            .cloned()
            .collect();
        keys.sort();
        let mut ignored = Vec::new();
        for key in keys {
            let path = match env_key_path(&key)? {
                EnvKey::Config(path) => path,
                EnvKey::NotConfig => {
                    if !NOT_CONFIG_VARS.contains(&key.as_str()) {
                        ignored.push(key);
                    }
                    continue;
                }
            };
            set_path(&mut table, &path, parse_env_value(&env[&key]))
                .with_context(|| format!("environment variable {key}"))?;
        }
        // Re-parsing the merged table as text makes errors point at the key at fault.
        let merged = toml::to_string(&table).context("configuration cannot be serialised")?;
        let config: Config = toml::from_str(&merged)
            .map_err(|e: toml::de::Error| {
                // toml's own text quotes the offending line, which may hold a secret
                // value (`[secrets]`): name the key, never the value.
                let at = e
                    .span()
                    .map(|r| key_at(&merged, r.start))
                    .unwrap_or_default();
                anyhow::anyhow!("configuration: {}{at}", e.message().trim())
            })
            .context(match file {
                Some(p) => format!("in {} or EVIDEX_* variables", p.display()),
                None => "in EVIDEX_* variables".to_string(),
            })?;
        config.validate()?;
        let mut config = config;
        config.ignored_env = ignored;
        config.storage_options = StorageOptions(
            env.iter()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        );
        Ok(config)
    }

    /// The warning to print for [`Config::ignored_env`], if any.
    pub fn ignored_env_warning(&self) -> Option<String> {
        (!self.ignored_env.is_empty()).then(|| {
            format!(
                "warning: ignoring {}: not evidex configuration keys (those are EVIDEX_KEY or EVIDEX_SECTION__KEY)",
                self.ignored_env.join(", ")
            )
        })
    }

    fn validate(&self) -> Result<()> {
        if self.data.trim().is_empty() {
            bail!("configuration: data must not be empty");
        }
        if let Some(a) = &self.artifacts
            && (a.trim().is_empty()
                || (a.contains("://") && !a.starts_with("s3://") && !a.starts_with("file://"))
                || (a.starts_with("s3://") && a.len() <= "s3://".len()))
        {
            bail!("configuration: artifacts must be a local directory or s3://bucket/prefix");
        }
        if self.limits.request_timeout_secs == 0 {
            bail!("configuration: limits.request_timeout_secs must be at least 1");
        }
        if let Some(secs) = self.artifacts_redirect_secs {
            if !(1..=604_800).contains(&secs) {
                bail!(
                    "configuration: artifacts_redirect_secs must be between 1 and 604800 (7 days, the longest a presigned S3 URL can live), got {secs}"
                );
            }
            if !self
                .artifacts
                .as_deref()
                .is_some_and(|a| a.starts_with("s3://"))
            {
                bail!(
                    "configuration: artifacts_redirect_secs needs artifacts = \"s3://bucket/prefix\" (a local artifacts directory has nothing to redirect to)"
                );
            }
        }
        if let Some(url) = &self.database_url
            && !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://"))
        {
            bail!(
                "configuration: database_url must be a PostgreSQL URL \
                 (postgres://user:password@host:port/database); leave it unset for the \
                 embedded SQLite database"
            );
        }
        if self.export.split_rows == 0 {
            bail!("configuration: export.split_rows must be at least 1");
        }
        if self.server.retention_secs == 0 || self.server.link_ttl_secs == 0 {
            bail!(
                "configuration: server.retention_secs and server.link_ttl_secs must be at least 1"
            );
        }
        if self.server.max_body_bytes < 1024 {
            bail!("configuration: server.max_body_bytes must be at least 1024");
        }
        if self.export.query_memory_mb == 0 {
            bail!("configuration: export.query_memory_mb must be at least 1");
        }
        if self.ingest.max_record_bytes < 1024 {
            bail!("configuration: ingest.max_record_bytes must be at least 1024");
        }
        if self.delivery.multipart_threshold_bytes < 5 << 20 {
            bail!(
                "configuration: delivery.multipart_threshold_bytes must be at least 5242880 (5 MiB, the smallest part S3 accepts)"
            );
        }
        if self.delivery.step_timeout_secs == 0 || self.delivery.retry_for_secs == 0 {
            bail!(
                "configuration: delivery.step_timeout_secs and delivery.retry_for_secs must be at least 1"
            );
        }
        if self.scheduler.tick_secs == 0 || self.scheduler.catch_up_cap == 0 {
            bail!(
                "configuration: scheduler.tick_secs and scheduler.catch_up_cap must be at least 1"
            );
        }
        self.redaction
            .compile()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        self.report_style()?;
        Ok(())
    }

    /// The report style, with the logo file read (at most 2 MB).
    pub fn report_style(&self) -> Result<evidex_engine::report::ReportStyle> {
        use evidex_engine::report::ReportStyle;
        let r = &self.report;
        for (key, v) in [("report.accent", &r.accent), ("report.muted", &r.muted)] {
            if let Some(v) = v {
                ReportStyle::check_colour(key, v)
                    .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
            }
        }
        let logo = match &r.logo {
            None => None,
            Some(path) => {
                let ext = path
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                if !["png", "jpg", "jpeg", "svg"].contains(&ext.as_str()) {
                    bail!(
                        "configuration: report.logo {}: use a .png, .jpg or .svg file",
                        path.display()
                    );
                }
                let bytes = std::fs::read(path).with_context(|| {
                    format!(
                        "configuration: report.logo {} cannot be read",
                        path.display()
                    )
                })?;
                if bytes.len() > 2 << 20 {
                    bail!(
                        "configuration: report.logo {} is larger than 2 MB",
                        path.display()
                    );
                }
                Some((ext, bytes))
            }
        };
        Ok(ReportStyle {
            accent: r.accent.clone(),
            muted: r.muted.clone(),
            organisation: r.organisation.clone(),
            logo,
        })
    }

    /// The local directory for the signing key, metadata database and master key:
    /// `state_dir`, or `_state` inside a local data directory.
    pub fn state_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        let data = self.data.strip_prefix("file://").unwrap_or(&self.data);
        if data.contains("://") {
            bail!(
                "configuration: state_dir must be set when data is not a local directory ({})",
                self.data
            );
        }
        Ok(PathBuf::from(data).join("_state"))
    }
}

#[cfg(test)]
mod tests {
    use super::env::fields_of;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "data = \"/tmp/x\"\n[export]\nsplit_rows = 10\n").unwrap();
        let c = Config::load(
            Some(&f),
            &env(&[("EVIDEX_EXPORT__CSV_FORMULA_GUARD", "false")]),
        )
        .unwrap();
        assert_eq!(c.data, "/tmp/x");
        assert_eq!(c.export.split_rows, 10);
        assert!(!c.export.csv_formula_guard);
    }

    #[test]
    fn redaction_rules_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[redaction]\ndetectors = [\"email\"]\n[[redaction.custom]]\nname = \"ticket\"\npattern = \"TCK-[0-9]+\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &env(&[])).unwrap();
        assert_eq!(c.redaction.detectors, vec!["email".to_string()]);
        assert_eq!(c.redaction.custom[0].name, "ticket");
        let c = Config::load(None, &env(&[("EVIDEX_REDACTION__DETECTORS", "[]")])).unwrap();
        assert!(c.redaction.is_empty());
        let e =
            Config::load(None, &env(&[("EVIDEX_REDACTION__DETECTORS", "[\"mail\"]")])).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown detector \"mail\""),
            "{e:#}"
        );
        std::fs::write(&f, "[[redaction.custom]]\nname = \"x\"\npattern = \"(\"\n").unwrap();
        let e = Config::load(Some(&f), &env(&[])).unwrap_err();
        assert!(
            format!("{e:#}").contains("redaction.custom[0].pattern"),
            "{e:#}"
        );
    }

    #[test]
    fn report_style_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let logo = dir.path().join("logo.svg");
        std::fs::write(&logo, "<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap();
        let logo_s = logo.display().to_string();
        let c = Config::load(
            None,
            &env(&[
                ("EVIDEX_REPORT__ACCENT", "#112233"),
                ("EVIDEX_REPORT__LOGO", &logo_s),
            ]),
        )
        .unwrap();
        let style = c.report_style().unwrap();
        assert_eq!(style.logo.unwrap().0, "svg");
        let e = Config::load(None, &env(&[("EVIDEX_REPORT__ACCENT", "blue")])).unwrap_err();
        assert!(format!("{e:#}").contains("report.accent"), "{e:#}");
        let e = Config::load(None, &env(&[("EVIDEX_REPORT__LOGO", "/nope/logo.png")])).unwrap_err();
        assert!(format!("{e:#}").contains("report.logo"), "{e:#}");
    }

    #[test]
    fn scale_out_settings_are_checked_and_never_printed() {
        let c = Config::load(
            None,
            &env(&[
                (
                    "EVIDEX_DATABASE_URL",
                    "postgres://evidex:hunter2@db:5432/evidex",
                ),
                ("EVIDEX_ARTIFACTS", "s3://bucket/artifacts"),
                ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.database_url.as_ref().unwrap().0,
            "postgres://evidex:hunter2@db:5432/evidex"
        );
        assert_eq!(c.artifacts.as_deref(), Some("s3://bucket/artifacts"));
        assert_eq!(c.storage_options.0["aws_secret_access_key"], "very-secret");
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("very-secret"),
            "{printed}"
        );

        let err = Config::load(
            None,
            &env(&[("EVIDEX_DATABASE_URL", "mysql://u:hunter2@db/x")]),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("database_url must be a PostgreSQL URL"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        for bad in ["ftp://host/x", "s3://", " "] {
            let err = Config::load(None, &env(&[("EVIDEX_ARTIFACTS", bad)])).unwrap_err();
            assert!(
                format!("{err:#}")
                    .contains("artifacts must be a local directory or s3://bucket/prefix"),
                "{bad}: {err:#}"
            );
        }
        let c = Config::load(None, &env(&[("EVIDEX_ARTIFACTS", "/srv/evidex/artifacts")])).unwrap();
        assert_eq!(c.artifacts.as_deref(), Some("/srv/evidex/artifacts"));
        // Presigned redirects: S3 artifacts only, within SigV4's 7 days.
        let c = Config::load(
            None,
            &env(&[
                ("EVIDEX_ARTIFACTS", "s3://bucket/artifacts"),
                ("EVIDEX_ARTIFACTS_REDIRECT_SECS", "300"),
            ]),
        )
        .unwrap();
        assert_eq!(c.artifacts_redirect_secs, Some(300));
        for (artifacts, secs, says) in [
            ("s3://bucket/a", "0", "between 1 and 604800"),
            ("s3://bucket/a", "604801", "between 1 and 604800"),
            ("/srv/a", "60", "needs artifacts = \"s3://bucket/prefix\""),
        ] {
            let err = Config::load(
                None,
                &env(&[
                    ("EVIDEX_ARTIFACTS", artifacts),
                    ("EVIDEX_ARTIFACTS_REDIRECT_SECS", secs),
                ]),
            )
            .unwrap_err();
            assert!(format!("{err:#}").contains(says), "{secs}: {err:#}");
        }
    }

    #[test]
    fn platform_variables_are_ignored_and_misspellings_refused() {
        let c = Config::load(
            None,
            &env(&[
                ("EVIDEX_BIN", "/usr/bin/evidex"),
                ("EVIDEX_PORT", "tcp://10.0.0.7:8080"),
                ("EVIDEX_SERVICE_HOST", "10.0.0.7"),
                ("EVIDEX_PORT_8080_TCP_ADDR", "10.0.0.7"),
                ("EVIDEX_LOG", "debug"),
                ("EVIDEX_SERVER__LISTEN", "0.0.0.0:9000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(
            c.ignored_env,
            [
                "EVIDEX_BIN",
                "EVIDEX_PORT",
                "EVIDEX_PORT_8080_TCP_ADDR",
                "EVIDEX_SERVICE_HOST"
            ]
        );
        for (var, want) in [
            (
                "EVIDEX_SERVER__LISTN",
                "did you mean EVIDEX_SERVER__LISTEN?",
            ),
            (
                "EVIDEX_SERVR__LISTEN",
                "did you mean EVIDEX_SERVER__LISTEN?",
            ),
            ("EVIDEX_DAT", "did you mean EVIDEX_DATA?"),
            (
                "EVIDEX_EXPORT__NOTHING_LIKE_IT",
                "the keys of [export] are split_rows",
            ),
        ] {
            let e = Config::load(None, &env(&[(var, "1")])).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{var}: {e:#}");
        }
        assert!(fields_of::<ServerConfig>().contains(&"listen"));
    }

    #[test]
    fn config_errors_never_quote_a_secret_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("evidex.toml");
        std::fs::write(
            &f,
            "[secrets]\nmaster_kye = \"00112233445566778899aabbccddeeff\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Config::load(Some(&f), &HashMap::new()).unwrap_err());
        assert!(e.contains("master_kye"), "{e}");
        assert!(!e.contains("00112233"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::load(None, &env(&[("EVIDEX_EXPORT__SPLIT_ROW", "3")])).unwrap_err();
        assert!(format!("{e:#}").contains("split_row"), "{e:#}");
        let e = Config::load(None, &env(&[("EVIDEX_EXPORT__SPLIT_ROWS", "many")])).unwrap_err();
        assert!(format!("{e:#}").contains("split_rows"), "{e:#}");
        let e = Config::load(None, &env(&[("EVIDEX_EXPORT__SPLIT_ROWS", "0")])).unwrap_err();
        assert!(format!("{e:#}").contains("at least 1"), "{e:#}");
    }
}
