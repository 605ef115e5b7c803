//! Request paths as route rules and route limits see them: a prefix covers whole segments.
//!
//! A leaf: it knows nothing of rules, limits or tenants, only paths. A path that could mean another
//! path to the backend (`//admin`, `/./admin`, `/x/../admin`, `/admin;x`, a percent-encoded
//! character that never needs encoding) is refused outright where rules apply, because the gateway
//! and the backend could disagree on whether a rule covers it.

/// Whether `prefix` (a route rule's or route limit's) covers `path`, by whole segments: `/admin`
/// covers `/admin` and `/admin/x`, not `/administrator`.
pub fn covers_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether the backend might read `path` as another path than the gateway does.
pub fn is_ambiguous(path: &str) -> bool {
    if path.contains("//") || path.contains('\\') || path.contains(';') {
        return true;
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return true;
    }
    // `%2F`, `%5C`, `%00`, and any unreserved character (RFC 3986: letters, digits, `-._~`), which
    // a backend may decode into a path the rule would have covered.
    path.as_bytes().windows(3).any(|w| {
        if w[0] != b'%' {
            return false;
        }
        let hex = |b: u8| char::from(b).to_digit(16);
        match (hex(w[1]), hex(w[2])) {
            (Some(hi), Some(lo)) => {
                let byte = (hi * 16 + lo) as u8;
                byte.is_ascii_alphanumeric() || b"-._~/\\\0".contains(&byte)
            }
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(covers_prefix("/admin", "/admin"));
        assert!(covers_prefix("/admin", "/admin/users"));
        assert!(!covers_prefix("/admin", "/administrator"));
        assert!(!covers_prefix("/admin", "/"));
        assert!(covers_prefix("/", "/anything"));
    }

    #[test]
    fn paths_that_could_dodge_a_rule_are_ambiguous() {
        for path in [
            "//admin",
            "/./admin",
            "/x/../admin",
            "/%2e/admin",
            "/%2Fadmin",
            "/a\\b",
            "/x/..",
            "/%61dmin",
            "/admin;x=1",
            "/a%zz",
        ] {
            assert!(is_ambiguous(path), "{path}");
        }
        for path in ["/", "/admin", "/a.b/c", "/v1/users/%20x"] {
            assert!(!is_ambiguous(path), "{path}");
        }
    }
}
