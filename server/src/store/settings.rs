//! Saved presets (SQL definitions users add through the API) and settings (JSON
//! values by name, e.g. the redaction rules), in the metadata database.

use anyhow::Result;
use serde::Serialize;

use super::db::{Row, args, is_unique_violation};
use super::{Store, random_hex};

/// A preset saved through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedPreset {
    /// `pre_` + 16 hex digits.
    pub id: String,
    /// What `preset` in an export names; unique among all presets.
    pub name: String,
    /// One line saying what it exports.
    pub description: String,
    /// Default format (`csv|json|ndjson|parquet`).
    pub format: String,
    /// The query (checked like every definition before it is saved).
    pub sql: String,
    /// Who saved it first (`token:NAME`).
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

fn preset_row(r: &Row) -> Result<SavedPreset> {
    Ok(SavedPreset {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        format: r.get(3)?,
        sql: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

const PRESET_COLUMNS: &str =
    "id, name, description, format, sql, created_by, created_at, updated_at";

impl Store {
    /// Every saved preset, by name.
    pub fn saved_presets(&self) -> Result<Vec<SavedPreset>> {
        self.with(|c| {
            c.query(
                &format!("SELECT {PRESET_COLUMNS} FROM presets ORDER BY name"),
                &[],
            )?
            .iter()
            .map(preset_row)
            .collect()
        })
    }

    /// The saved preset with this id or name.
    pub fn saved_preset(&self, id_or_name: &str) -> Result<Option<SavedPreset>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {PRESET_COLUMNS} FROM presets WHERE id = ?1 OR name = ?1"),
                args![id_or_name],
            )?
            .as_ref()
            .map(preset_row)
            .transpose()
        })
    }

    /// Saves a new preset; `None` when its name is taken.
    pub fn insert_preset(
        &self,
        name: &str,
        description: &str,
        format: &str,
        sql: &str,
        created_by: &str,
        now_ms: i64,
    ) -> Result<Option<SavedPreset>> {
        let id = format!("pre_{}", random_hex(8));
        let inserted = self.with(|c| {
            c.execute(
                "INSERT INTO presets(id, name, description, format, sql, created_by, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT DO NOTHING",
                args![&id, name, description, format, sql, created_by, now_ms],
            )
        })?;
        if inserted == 0 {
            return Ok(None);
        }
        self.saved_preset(&id)
    }

    /// Replaces a saved preset's fields; `Ok(false)` when the new name is taken by
    /// another preset.
    pub fn update_preset(
        &self,
        id: &str,
        name: &str,
        description: &str,
        format: &str,
        sql: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let result = self.with(|c| {
            c.execute(
                "UPDATE presets SET name = ?2, description = ?3, format = ?4, sql = ?5, updated_at = ?6
                 WHERE id = ?1",
                args![id, name, description, format, sql, now_ms],
            )
        });
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a saved preset; whether it existed.
    pub fn delete_preset(&self, id: &str) -> Result<bool> {
        Ok(self.with(|c| c.execute("DELETE FROM presets WHERE id = ?1", args![id]))? > 0)
    }

    /// A setting's JSON text, if it was ever set.
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_opt("SELECT value FROM settings WHERE name = ?1", args![name])?
                .map(|r| r.get(0))
                .transpose()
        })
    }

    /// Stores a setting's JSON text.
    pub fn set_setting(&self, name: &str, value: &str, by: &str, now_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings(name, value, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET value = ?2, updated_by = ?3, updated_at = ?4",
                args![name, value, by, now_ms],
            )
        })?;
        Ok(())
    }
}
