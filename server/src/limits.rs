//! Request limits: per-token rate limits on the routes that cost the most (ingest,
//! export creation, preview), a cap on one token's unfinished exports, and the
//! request timeout. One client that loops — a misconfigured pipeline, a stolen
//! token — then slows only itself.
//!
//! Rates are token buckets per token id (the Generic Cell Rate Algorithm of the
//! `governor` crate, a well-kept implementation): `N` per minute allows a burst of
//! `N` and refills one every `60/N` s. A refused request answers `429 Too Many
//! Requests` with `Retry-After` in whole seconds (RFC 9110 §10.2.3, RFC 6585 §4).
//! The buckets live in each process: behind a load balancer each node allows the
//! rate, so the effective limit is the rate times the nodes. The cap on unfinished
//! exports is checked in the database transaction that creates the job, so it holds
//! across nodes.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// `[limits]` in the configuration; a rate of `0` turns that limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Ingest requests (`POST /v1/ingest/...`) per token per minute (default
    /// 60,000: a gateway sending one request per event at 1,000 events/s stays
    /// under it; a client caught in a tight loop does not).
    pub ingest_per_minute: u32,
    /// Export jobs created (`POST /v1/exports`, re-runs) per token per minute
    /// (default 60).
    pub create_per_minute: u32,
    /// Previews and value lists (`POST /v1/exports/preview`, `/values`) per token
    /// per minute (default 120).
    pub preview_per_minute: u32,
    /// Export jobs one token may have queued or running at once (default 20; `0`:
    /// no cap). Scheduled runs are not counted.
    pub concurrent_exports: u32,
    /// Seconds a request may take before its response starts (default 120); the
    /// answer is then `408 Request Timeout`. Downloads and the event stream count
    /// until their first byte, not to their end.
    pub request_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ingest_per_minute: 60_000,
            create_per_minute: 60,
            preview_per_minute: 120,
            concurrent_exports: 20,
            request_timeout_secs: 120,
        }
    }
}

/// Which rate a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// `POST /v1/ingest/{dataset}`.
    Ingest,
    /// Creating an export job.
    Create,
    /// Preview and value lists.
    Preview,
}

impl Limited {
    /// The name used in messages and the configuration key's prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Ingest => "ingest",
            Limited::Create => "create",
            Limited::Preview => "preview",
        }
    }
}

/// The per-token rate limiters of one process.
pub struct RateLimits {
    ingest: Option<(u32, DefaultKeyedRateLimiter<String>)>,
    create: Option<(u32, DefaultKeyedRateLimiter<String>)>,
    preview: Option<(u32, DefaultKeyedRateLimiter<String>)>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

fn limiter(per_minute: u32) -> Option<(u32, DefaultKeyedRateLimiter<String>)> {
    NonZeroU32::new(per_minute).map(|n| (per_minute, RateLimiter::keyed(Quota::per_minute(n))))
}

impl RateLimits {
    /// The limiters `config` asks for.
    pub fn new(config: &LimitsConfig) -> RateLimits {
        RateLimits {
            ingest: limiter(config.ingest_per_minute),
            create: limiter(config.create_per_minute),
            preview: limiter(config.preview_per_minute),
        }
    }

    /// Counts one request of `token_id` against `kind`. `Err(RateLimited)` when
    /// the token's bucket is empty, with the wait until the next request is allowed.
    pub fn check(&self, kind: Limited, token_id: &str) -> Result<(), RateLimited> {
        let slot = match kind {
            Limited::Ingest => &self.ingest,
            Limited::Create => &self.create,
            Limited::Preview => &self.preview,
        };
        let Some((per_minute, limiter)) = slot else {
            return Ok(());
        };
        // Forget idle tokens' buckets now and then, so memory stays bounded by the
        // tokens active within a minute.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&token_id.to_string())
            .map_err(|not_until| RateLimited {
                kind,
                per_minute: *per_minute,
                wait: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }
}

/// A refused request: which limit, and how long until the next one passes.
#[derive(Debug, Clone, Copy)]
pub struct RateLimited {
    /// The limit that refused it.
    pub kind: Limited,
    /// Its rate, per token per minute.
    pub per_minute: u32,
    /// Time until the bucket holds a request again.
    pub wait: Duration,
}

impl RateLimited {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64
    }
}

/// The job store refused an export because the token already has `cap` queued or
/// running (`limits.concurrent_exports`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "this token already has {cap} exports queued or running (limits.concurrent_exports); wait for one to finish or cancel one"
)]
pub struct TooManyExports {
    /// The configured cap.
    pub cap: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_burst_then_429_and_others_are_unaffected() {
        let limits = RateLimits::new(&LimitsConfig {
            create_per_minute: 3,
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            limits.check(Limited::Create, "tok_a").unwrap();
        }
        let refused = limits.check(Limited::Create, "tok_a").unwrap_err();
        assert_eq!(refused.per_minute, 3);
        // One request refills every 20 s.
        assert!(
            (1..=20).contains(&refused.retry_after_secs()),
            "{refused:?}"
        );
        limits.check(Limited::Create, "tok_b").unwrap();
        limits.check(Limited::Preview, "tok_a").unwrap();
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = RateLimits::new(&LimitsConfig {
            ingest_per_minute: 0,
            ..LimitsConfig::default()
        });
        for _ in 0..100_000 {
            limits.check(Limited::Ingest, "tok").unwrap();
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = |ms| RateLimited {
            kind: Limited::Ingest,
            per_minute: 1,
            wait: Duration::from_millis(ms),
        };
        assert_eq!(r(0).retry_after_secs(), 1);
        assert_eq!(r(1).retry_after_secs(), 1);
        assert_eq!(r(1000).retry_after_secs(), 1);
        assert_eq!(r(1001).retry_after_secs(), 2);
        assert_eq!(r(19_999).retry_after_secs(), 20);
    }
}
