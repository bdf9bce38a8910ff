//! Validated DICOM UIDs (PS3.5 §9.1).
//!
//! A UID that reaches an object key, a SQL parameter or a URL has passed
//! through [`Uid::parse`], so malformed input never becomes a path.

use std::fmt;

/// A DICOM Unique Identifier: 1..=64 characters of digits and dots,
/// components without leading zeros (except a lone `0`), no empty component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UidError {
    #[error("UID is empty")]
    Empty,
    #[error("UID is longer than 64 characters")]
    TooLong,
    #[error("UID has a character other than digits and '.'")]
    BadCharacter,
    #[error("UID has an empty component")]
    EmptyComponent,
    #[error("UID component has a leading zero")]
    LeadingZero,
}

impl Uid {
    /// Parses a UID as it appears in a URL or a query (no padding allowed).
    pub fn parse(s: &str) -> Result<Uid, UidError> {
        if s.is_empty() {
            return Err(UidError::Empty);
        }
        if s.len() > 64 {
            return Err(UidError::TooLong);
        }
        for component in s.split('.') {
            if component.is_empty() {
                return Err(UidError::EmptyComponent);
            }
            if !component.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UidError::BadCharacter);
            }
            if component.len() > 1 && component.starts_with('0') {
                return Err(UidError::LeadingZero);
            }
        }
        Ok(Uid(s.to_owned()))
    }

    /// Parses a UID value read from a data set: PS3.5 §9.1 pads an odd-length
    /// UI value with a single trailing NUL; many writers pad with a space.
    pub(crate) fn from_value(s: &str) -> Result<Uid, UidError> {
        Uid::parse(s.trim_end_matches(['\0', ' ']).trim_start_matches(' '))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.0)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid() {
        for ok in ["1.2.840.10008.1.2.1", "0", "1.0.3", "2.25.123456789"] {
            assert!(Uid::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Uid::from_value("1.2.3\0").unwrap().as_str(), "1.2.3");
        assert_eq!(Uid::from_value("1.2.3 ").unwrap().as_str(), "1.2.3");
    }

    #[test]
    fn rejects_invalid() {
        assert_eq!(Uid::parse(""), Err(UidError::Empty));
        assert_eq!(Uid::parse("1..2"), Err(UidError::EmptyComponent));
        assert_eq!(Uid::parse("1.2."), Err(UidError::EmptyComponent));
        assert_eq!(Uid::parse("1.02"), Err(UidError::LeadingZero));
        assert_eq!(Uid::parse("1.2.abc"), Err(UidError::BadCharacter));
        assert!(Uid::parse("../etc").is_err());
        assert_eq!(Uid::parse("1.2.x"), Err(UidError::BadCharacter));
        assert_eq!(Uid::parse(&"1".repeat(65)), Err(UidError::TooLong));
    }
}
