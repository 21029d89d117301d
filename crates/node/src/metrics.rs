//! Prometheus text exposition of the node's counters (`GET /metrics`).
//!
//! The counters live in the protocol cores and the runtime; this module only renders a
//! snapshot of them in the text format (version 0.0.4): `# HELP`, `# TYPE`, one sample per
//! line, labels for per-peer values.

use std::fmt::Write;

/// One metric: name, help, type and samples (labels, value).
#[derive(Clone, Debug)]
pub struct Metric {
    /// The name (`tributary_…`).
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Samples: label pairs and the value.
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Metric {
    /// A metric with one unlabelled sample.
    #[must_use]
    pub fn single(name: &'static str, help: &'static str, kind: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind,
            samples: vec![(Vec::new(), value)],
        }
    }

    /// An unlabelled counter.
    #[must_use]
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        #[expect(
            clippy::cast_precision_loss,
            reason = "metric values are approximate by nature"
        )]
        Self::single(name, help, "counter", value as f64)
    }
}

/// Renders metrics in the Prometheus text format.
#[must_use]
pub fn render(metrics: &[Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {}", m.name, m.kind);
        for (labels, value) in &m.samples {
            out.push_str(m.name);
            if !labels.is_empty() {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                let _ = write!(out, "{{{}}}", inner.join(","));
            }
            let _ = writeln!(out, " {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let text = render(&[
            Metric::single("tributary_depth", "Depth.", "gauge", 3.0),
            Metric {
                name: "tributary_penalties_total",
                help: "Penalties.",
                kind: "counter",
                samples: vec![(vec![("peer", "a\"b".to_owned())], 2.0)],
            },
        ]);
        assert_eq!(
            text,
            "# HELP tributary_depth Depth.\n# TYPE tributary_depth gauge\ntributary_depth 3\n\
             # HELP tributary_penalties_total Penalties.\n# TYPE tributary_penalties_total counter\n\
             tributary_penalties_total{peer=\"a\\\"b\"} 2\n"
        );
    }
}
