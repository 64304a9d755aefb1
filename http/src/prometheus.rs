//! The Prometheus text exposition format (0.0.4): the lines every family is written with. Each
//! API renders its own families with these.
//!
//! Invariants: a family's `# HELP` and `# TYPE` come in one [`header`] call; label values pass
//! through [`escape`].

use std::fmt::Write;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value escapes of the text format: backslash, double quote, line feed.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A family's `# HELP` and `# TYPE` lines; `kind` is `counter`, `gauge` or `histogram`.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample; `labels` is `a="x",b="y"` (values escaped), or empty.
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_well_formed() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        header(&mut out, "x_total", "Things.", "counter");
        sample(&mut out, "x_total", "", 3);
        sample(&mut out, "x_total", &format!("name=\"{}\"", escape("q\"")), 0.5);
        assert_eq!(out, "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\nx_total{name=\"q\\\"\"} 0.5\n");
    }
}
