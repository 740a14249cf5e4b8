//! `evidex presets`, and where the CLI finds definitions: built-in, `presets_dir`,
//! and those saved through the API.

use std::process::ExitCode;

use anyhow::{Result, bail};
use evidex_engine::definition::{self, Definition};
use evidex_server::config::Config;
use evidex_server::store::Store;

/// All definitions: the built-in presets, those of `presets_dir`, then the ones
/// saved through the API (when this data location has a metadata database).
pub(super) fn all_presets(config: &Config) -> Result<Vec<Definition>> {
    let mut all = definition::builtin_presets();
    if let Some(dir) = &config.presets_dir {
        for d in definition::load_dir(dir)? {
            if all.iter().any(|b| b.name == d.name) {
                bail!(
                    "{}: preset name {:?} is already a built-in preset",
                    d.source,
                    d.name
                );
            }
            all.push(d);
        }
    }
    if let Some(catalog) = stored_catalog(config)? {
        all.extend(
            catalog
                .presets
                .into_iter()
                .filter(|d| d.source.starts_with("saved:")),
        );
    }
    Ok(all)
}

/// The saved presets and settings of this data location's metadata database, when
/// it has one (the CLI never creates it just to read settings).
pub(super) fn stored_catalog(config: &Config) -> Result<Option<evidex_server::service::Catalog>> {
    if config.database_url.is_some() {
        let store = Store::from_config(config)?;
        return Ok(Some(evidex_server::service::Catalog::load(config, &store)?));
    }
    let Some(dir) = config
        .state_dir()
        .ok()
        .filter(|d| d.join(evidex_server::store::DB_FILE).exists())
    else {
        return Ok(None);
    };
    let store = Store::open(&dir)?;
    Ok(Some(evidex_server::service::Catalog::load(config, &store)?))
}

pub(super) fn run_presets(config: &Config) -> Result<ExitCode> {
    for d in all_presets(config)? {
        println!("{:<20} {:<8} {}", d.name, d.format.as_str(), d.description);
    }
    Ok(ExitCode::SUCCESS)
}
