//! Limits on the shape of one DICOMweb request, so that what a request
//! costs the server stays proportional to what it sent and bounded
//! (issue #17). Each is a flag (`--stow-max-parts`, …) with a safe default,
//! listed in the README's "Limits" table beside the per-caller limits of
//! [`crate::auth::limits`] (rate, concurrency, body size per role).
//!
//! A request over one is refused with a message that names the flag, and
//! as early as the limit can be seen: a frame list before anything is
//! read; a STOW part count or header size as soon as the part that passes
//! it arrives (parts before it were processed and stay stored: a client
//! that resends them in smaller requests gets "already stored").

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Parts (instances) in one STOW request.
    pub(crate) stow_max_parts: usize,
    /// Bytes of one part's header block (its MIME headers).
    pub(crate) stow_max_part_header: usize,
    /// Bytes of all part header blocks of one STOW request together.
    pub(crate) stow_max_header_bytes: u64,
    /// Failed instances listed one by one in a STOW response; the rest are
    /// counted in a summary (a `Warning` header).
    pub(crate) stow_max_failures_listed: usize,
    /// Frames named in one frame list (`…/frames/1,2,3`).
    pub(crate) max_frames: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            stow_max_parts: 10_000,
            stow_max_part_header: 16 << 10,
            stow_max_header_bytes: 16 << 20,
            stow_max_failures_listed: 1_000,
            max_frames: 10_000,
        }
    }
}

/// What a refusal for a request over `flag` says.
pub(crate) fn exceeded(flag: &str, limit: u64, what: impl std::fmt::Display) -> String {
    format!("limit --{flag} ({limit}) exceeded: {what}")
}

impl RequestLimits {
    /// Checks the flags' values (0 would refuse every request).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let zero = [
            ("stow-max-parts", self.stow_max_parts as u64),
            ("stow-max-part-header", self.stow_max_part_header as u64),
            ("stow-max-header-bytes", self.stow_max_header_bytes),
            ("max-frames", self.max_frames as u64),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        match zero {
            Some((flag, _)) => Err(format!("--{flag} must be at least 1")),
            None if self.stow_max_part_header < 256 => {
                Err("--stow-max-part-header must be at least 256 bytes".into())
            }
            None => Ok(()),
        }
    }

    /// A 1-based frame list (`1,3,5`) as 0-based numbers, at most
    /// `max_frames` of them (PS3.18 §10.4.1.1.4: a comma-separated list of
    /// positive integers).
    pub(crate) fn frame_list(&self, list: &str) -> Result<Vec<u32>, ApiError> {
        let count = list.split(',').count();
        if count > self.max_frames {
            // A path, not a body: 400 rather than 413.
            return Err(ApiError::BadRequest(exceeded(
                "max-frames",
                self.max_frames as u64,
                format!("the frame list names {count} frames"),
            )));
        }
        list.split(',')
            .map(|n| {
                n.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n - 1)
            })
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                let shown: String = list.chars().take(64).collect();
                ApiError::BadRequest(format!(
                    "malformed frame list '{shown}': 1-based numbers separated by commas"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists() {
        let l = RequestLimits {
            max_frames: 3,
            ..RequestLimits::default()
        };
        assert_eq!(l.frame_list("1").unwrap(), vec![0]);
        assert_eq!(l.frame_list("1, 3,2").unwrap(), vec![0, 2, 1]);
        for bad in ["", "0", "1,,2", "a", "-1", "4294967296"] {
            assert!(
                matches!(l.frame_list(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        match l.frame_list("1,2,3,4") {
            Err(ApiError::BadRequest(m)) => {
                assert!(m.contains("--max-frames (3)"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(RequestLimits::default().validate().is_ok());
        let l = RequestLimits {
            stow_max_parts: 0,
            ..RequestLimits::default()
        };
        assert!(l.validate().unwrap_err().contains("--stow-max-parts"));
    }
}
