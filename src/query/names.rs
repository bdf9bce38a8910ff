//! Person names for searching: case folding for PN matching (PS3.4
//! C.2.2.2.1 leaves case sensitivity of PN to the SCP; users expect
//! case-insensitive), and accent- and order-insensitive words for
//! `fuzzymatching=true`.
//!
//! Fuzzy matching, exactly: the name (all component groups) and the query
//! are split into words on `^`, `=`, spaces, commas and hyphens; each word is
//! lower-cased and stripped of diacritics (Unicode NFD, combining marks
//! removed; đ→d, ø→o, ł→l, ß→ss, æ→ae, œ→oe). A study matches when every
//! query word is a prefix of some word of the name, in any order: `nguyen
//! van an`, `NGUYEN^VAN^AN`, `Văn An` and `ngu an` all find `Nguyễn^Văn An`.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The Alphabetic component group, lower-cased, trailing empty components
/// removed: what single-value and wildcard PN matching compare against.
pub fn pn_match_key(value: &str) -> String {
    let alphabetic = value.split('=').next().unwrap_or("");
    alphabetic.trim_end_matches(['^', ' ']).to_lowercase()
}

/// Lower-cases a PN query value the same way (keeping wildcards).
pub(crate) fn pn_query(value: &str) -> String {
    value.trim_end_matches(['^', ' ']).to_lowercase()
}

/// Lower-cased, accent-free words of a name or query, deduplicated.
pub fn fuzzy_words(value: &str) -> Vec<String> {
    let mut words: Vec<String> = value
        .split(['^', '=', ' ', ',', '-', '\t'])
        .map(fold)
        .filter(|w| !w.is_empty())
        .collect();
    words.sort();
    words.dedup();
    words
}

/// Lower-case, diacritics removed.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'đ' | 'Đ' => out.push('d'),
            'ø' | 'Ø' => out.push('o'),
            'ł' | 'Ł' => out.push('l'),
            'ß' => out.push_str("ss"),
            'æ' | 'Æ' => out.push_str("ae"),
            'œ' | 'Œ' => out.push_str("oe"),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The smallest string greater than every string starting with `prefix`
/// (for index-friendly prefix ranges: `col >= p AND col < next`).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_names_fold() {
        assert_eq!(fuzzy_words("Nguyễn^Văn An"), ["an", "nguyen", "van"]);
        assert_eq!(fuzzy_words("nguyen van an"), ["an", "nguyen", "van"]);
        assert_eq!(fuzzy_words("NGUYEN^VAN^AN"), ["an", "nguyen", "van"]);
        assert_eq!(fold("Đặng Thị Bích"), "dang thi bich");
        assert_eq!(fold("Müller"), "muller");
    }

    #[test]
    fn match_keys() {
        assert_eq!(pn_match_key("Nguyễn^Văn An^^"), "nguyễn^văn an");
        assert_eq!(pn_match_key("Yamada^Tarou=山田^太郎"), "yamada^tarou");
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
    }
}
