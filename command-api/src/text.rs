//! The rules every free-text field of a command shares (titles, names, descriptions, keys), and
//! their JSON Schema patterns for the OpenAPI document.
//!
//! Text ends up in events, stored as JSON in PostgreSQL (`jsonb`), which cannot hold U+0000: a
//! NUL is refused with a 422 on its field rather than failing the append. "Blank" is what
//! `str::trim` removes, i.e. Unicode `White_Space`, spelled out in [`NON_BLANK_PATTERN`] so that
//! the document and the server agree on every character.

/// Contains no NUL.
pub const NUL_FREE_PATTERN: &str = r"^[^\u0000]*$";

/// Contains no NUL and at least one character that is not Unicode `White_Space`.
pub const NON_BLANK_PATTERN: &str = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";

/// Why `text` breaks the NUL rule, if it does.
pub fn nul_problem(text: &str) -> Option<&'static str> {
    text.contains('\0')
        .then_some("must not contain NUL characters (U+0000)")
}

/// Why `text` is not 1 to `max_chars` characters, not blank and without NUL, if it is not.
pub fn non_blank_problem(text: &str, max_chars: usize) -> Option<String> {
    if text.trim().is_empty() || text.chars().count() > max_chars {
        Some(format!("must be 1 to {max_chars} characters, not blank"))
    } else {
        nul_problem(text).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blank_pattern_lists_exactly_what_trim_removes() {
        let listed: Vec<char> = ('\0'..=char::MAX).filter(|c| c.is_whitespace()).collect();
        let spelled: Vec<char> = "\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\
                                  \u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\
                                  \u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}"
            .chars()
            .collect();
        assert_eq!(listed, spelled);
        assert!(NON_BLANK_PATTERN.contains(r"\t-\r \u0085\u00a0\u1680\u2000-\u200a"));
        assert!(non_blank_problem(" \u{3000}", 10).is_some());
        assert!(non_blank_problem("a\0", 10).is_some());
        assert_eq!(
            non_blank_problem("\u{1c}", 10),
            None,
            "U+001C is not White_Space"
        );
        assert!(non_blank_problem("ok", 1).is_some());
    }
}
