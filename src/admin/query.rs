//! Query strings, decoded and checked against what `docs/admin-api.openapi.json` says each
//! parameter is: a value outside it is a `400 bad_query`, never quietly read as the default.

use std::fmt;

/// A query string's `key=value` pairs, percent-decoded. Keys the endpoint does not know are
/// ignored, as HTTP servers do.
pub(super) struct Query {
    pairs: Vec<(String, String)>,
}

/// A parameter whose value the document does not allow.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct QueryError(String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Query {
    pub(super) fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query { pairs }
    }

    /// Every value of `key`, in order (`pool=a&pool=b`).
    pub(super) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a parameter given once; given twice, the last wins.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A non-negative integer (`minimum: 0` in the document); one too large for this machine is
    /// as good as the largest it has, for a count of things to show or skip.
    pub(super) fn count(&self, key: &str) -> Result<Option<usize>, QueryError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QueryError(format!(
                "{key}={value:?} is not a whole number of 0 or more"
            )));
        }
        Ok(Some(value.parse::<usize>().unwrap_or(usize::MAX)))
    }

    /// A boolean: `true` or `false`, as the document's `type: boolean` is written in a query.
    pub(super) fn flag(&self, key: &str) -> Result<Option<bool>, QueryError> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(value) => Err(QueryError(format!(
                "{key}={value:?} is neither true nor false"
            ))),
        }
    }

    /// A value from a fixed list.
    pub(super) fn choice(&self, key: &str, allowed: &[&str]) -> Result<Option<&str>, QueryError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) if allowed.contains(&value) => Ok(Some(value)),
            Some(value) => Err(QueryError(format!(
                "{key}={value:?} is not one of {}",
                allowed.join(", ")
            ))),
        }
    }

    /// An RFC 3339 time, in milliseconds since the epoch.
    pub(super) fn time(&self, key: &str) -> Result<Option<i64>, QueryError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        chrono::DateTime::parse_from_rfc3339(value)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|_| QueryError(format!("{key}={value:?} is not an RFC 3339 time")))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, b) {
            (Some(byte), _) => {
                out.push(u8::try_from(byte).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_repeated_keys_kept() {
        let q = Query::parse("pool=a%20b&pool=c+d&status=active&flag&=x");
        assert_eq!(q.all("pool").collect::<Vec<_>>(), ["a b", "c d"]);
        assert_eq!(q.get("status"), Some("active"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("missing"), None);
        // A broken escape is kept as written.
        assert_eq!(Query::parse("k=%zz%4").get("k"), Some("%zz%4"));
    }

    #[test]
    fn counts_are_whole_numbers_of_zero_or_more() {
        let q = Query::parse("limit=10&offset=-1&a=&b=1.5&c=+1&big=99999999999999999999999");
        assert_eq!(q.count("limit"), Ok(Some(10)));
        assert_eq!(q.count("absent"), Ok(None));
        assert_eq!(q.count("big"), Ok(Some(usize::MAX)));
        for key in ["offset", "a", "b", "c"] {
            assert!(q.count(key).is_err(), "{key}");
        }
    }

    #[test]
    fn flags_are_true_or_false_only() {
        let q = Query::parse("a=true&b=false&c=1&d=yes&e=");
        assert_eq!(q.flag("a"), Ok(Some(true)));
        assert_eq!(q.flag("b"), Ok(Some(false)));
        assert_eq!(q.flag("z"), Ok(None));
        for key in ["c", "d", "e"] {
            assert!(q.flag(key).is_err(), "{key}");
        }
    }

    #[test]
    fn choices_and_times_refuse_what_is_not_listed() {
        let q = Query::parse("status=active&bad=sometimes&since=2026-12-03T10:00:00Z&when=today");
        assert_eq!(
            q.choice("status", &["active", "suspended"]),
            Ok(Some("active"))
        );
        assert!(q.choice("bad", &["active", "suspended"]).is_err());
        assert_eq!(q.time("since"), Ok(Some(1_796_292_000_000)));
        assert!(q.time("when").is_err());
    }
}
