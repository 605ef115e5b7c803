//! Reading `/metrics` the way Prometheus does: the text goes through a Prometheus text-format parser
//! (`prometheus-parse`), and every sample line is also checked for shape, HELP and TYPE.

use prometheus_parse::{Sample, Scrape, Value};

use super::Gateway;

/// The gateway's `/metrics`, parsed.
pub async fn scrape(gw: &Gateway) -> Exposition {
    Exposition::parse(gw.admin_text("/metrics").await)
}

pub struct Exposition {
    scrape: Scrape,
    pub text: String,
}

impl Exposition {
    /// Parses `text`, failing the test on a malformed line or a family without HELP and TYPE.
    pub fn parse(text: String) -> Exposition {
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad exposition line {line:?}"));
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
            let name = series.split('{').next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no TYPE for {name}"
            );
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {name}"
            );
        }
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(lines).unwrap_or_else(|e| panic!("exposition: {e}\n{text}"));
        assert!(!scrape.samples.is_empty(), "no samples in:\n{text}");
        Exposition { scrape, text }
    }

    fn matching<'a>(
        &'a self,
        metric: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.scrape.samples.iter().filter(move |s| {
            s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The sum over every sample of `metric` carrying `labels` (a histogram counts its
    /// observations); 0 when there is none.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(metric, labels)
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                Value::Summary(_) => 0.0,
            })
            .sum()
    }

    /// Whether any sample of `metric` carries `labels`.
    pub fn has(&self, metric: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(metric, labels).next().is_some()
    }
}
