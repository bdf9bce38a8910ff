//! Limits that keep one caller from hurting the others, per identity (a
//! user, an API key, an AE title; an address for callers without one):
//! a request rate (token bucket, `--rate-limit`, `--rate-burst`), requests
//! at once (`--max-concurrent-requests`, held until the answer's body is
//! sent), STOW requests at once (`--max-concurrent-stow`) and the largest
//! request body per role (`--max-body ROLE=BYTES`). Refusals are 429 with
//! `Retry-After` and 413, decided before any handler runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Principal, Role};

/// The limits, as configured (0: none).
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    /// Requests per second per identity.
    pub(crate) rate: f64,
    /// Requests an identity may make at once above the rate.
    pub(crate) burst: f64,
    /// STOW requests at once per identity.
    pub(crate) max_concurrent_stow: usize,
    /// Requests of any kind at once per identity.
    pub(crate) max_concurrent_requests: usize,
    /// Largest request body by role (a caller with several roles gets the
    /// largest); roles not named: no limit beyond the ingest's own.
    pub(crate) max_body: Vec<(Role, u64)>,
}

/// Parses `ROLE=BYTES` (`BYTES` may end in K, M, G: powers of 1024).
pub(crate) fn parse_max_body(entry: &str) -> Result<(Role, u64), String> {
    let (role, size) = entry
        .split_once('=')
        .ok_or_else(|| format!("--max-body '{entry}': expected ROLE=BYTES"))?;
    let role =
        Role::parse(role).ok_or_else(|| format!("--max-body '{entry}': unknown role '{role}'"))?;
    let size = size.trim();
    let (digits, unit) = match size.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => size.split_at(i),
        None => (size, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("--max-body '{entry}': bad size"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => return Err(format!("--max-body '{entry}': unit K, M or G")),
    };
    Ok((role, n.saturating_mul(mult)))
}

#[derive(Debug, Default)]
pub struct Limits {
    pub config: LimitsConfig,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    stow: Counts,
    requests: Counts,
}

/// Requests running per identity.
type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// Held while a request (or a STOW) runs; frees its place on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    key: String,
    counts: Counts,
}

impl Slot {
    /// A place among at most `max` (0: no limit) for `key`.
    fn take(counts: &Counts, key: String, max: usize) -> Option<Slot> {
        let mut m = counts.lock().ok()?;
        let n = m.entry(key.clone()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key,
            counts: counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counts.lock() {
            if let Some(n) = m.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// Identities tracked at most (beyond: the oldest buckets are dropped).
const MAX_TRACKED: usize = 100_000;

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            ..Limits::default()
        }
    }

    fn key(p: &Principal) -> String {
        if p.authenticated() {
            format!("{}:{}", p.method.as_str(), p.name)
        } else {
            format!(
                "addr:{}",
                p.address.map(|a| a.to_string()).unwrap_or_default()
            )
        }
    }

    /// `Err(seconds to wait)` when the caller is over its rate.
    pub(crate) fn admit(&self, p: &Principal) -> Result<(), u64> {
        let rate = self.config.rate;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = self.config.burst.max(1.0);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (tokens, at)| {
                *tokens < burst && at.elapsed().as_secs_f64() * rate < burst
            });
        }
        let now = Instant::now();
        let (tokens, at) = buckets.entry(Self::key(p)).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// A place for one more STOW of this caller, or `None` when it has
    /// as many running as allowed.
    pub(crate) fn stow_slot(&self, p: &Principal) -> Option<Slot> {
        Slot::take(&self.stow, Self::key(p), self.config.max_concurrent_stow)
    }

    /// A place for one more request of this caller, or `None` when it has
    /// as many running as allowed.
    pub(crate) fn request_slot(&self, p: &Principal) -> Option<Slot> {
        Slot::take(
            &self.requests,
            Self::key(p),
            self.config.max_concurrent_requests,
        )
    }

    /// The largest body this caller may send (`None`: no limit here).
    pub(crate) fn max_body(&self, p: &Principal) -> Option<u64> {
        if self.config.max_body.is_empty() || !p.authenticated() {
            return None;
        }
        let sizes: Vec<u64> = p
            .roles
            .iter()
            .filter_map(|r| {
                self.config
                    .max_body
                    .iter()
                    .find(|(role, _)| role == r)
                    .map(|(_, n)| *n)
            })
            .collect();
        if sizes.len() < p.roles.len() || sizes.is_empty() {
            // A role without a limit lifts it.
            return None;
        }
        sizes.into_iter().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Method, Permissions};

    fn who(name: &str, roles: Vec<Role>) -> Principal {
        Principal {
            method: Method::ApiKey,
            name: name.into(),
            permissions: Permissions::of_roles(&roles),
            roles,
            address: None,
            share: None,
        }
    }

    #[test]
    fn rates_stow_slots_and_bodies() {
        let l = Limits::new(LimitsConfig {
            rate: 1.0,
            burst: 3.0,
            max_concurrent_stow: 2,
            max_concurrent_requests: 3,
            max_body: vec![parse_max_body("clinician=1M").unwrap()],
        });
        let (a, b) = (
            who("a", vec![Role::Clinician]),
            who("b", vec![Role::Modality]),
        );
        for _ in 0..3 {
            assert!(l.admit(&a).is_ok());
        }
        assert_eq!(l.admit(&a), Err(1));
        assert!(l.admit(&b).is_ok(), "another identity has its own bucket");
        let s1 = l.stow_slot(&b).unwrap();
        let _s2 = l.stow_slot(&b).unwrap();
        assert!(l.stow_slot(&b).is_none());
        drop(s1);
        assert!(l.stow_slot(&b).is_some());
        let held: Vec<Slot> = (0..3).map(|_| l.request_slot(&a).unwrap()).collect();
        assert!(l.request_slot(&a).is_none());
        assert!(l.request_slot(&b).is_some(), "counted per identity");
        drop(held);
        assert!(l.request_slot(&a).is_some());
        assert_eq!(l.max_body(&a), Some(1 << 20));
        assert_eq!(l.max_body(&b), None);
        assert!(parse_max_body("nurse=1").is_err());
        assert_eq!(
            parse_max_body("modality=2G").unwrap(),
            (Role::Modality, 2 << 30)
        );
    }
}
