//! `--junit-xml`: the run's results as JUnit XML, the format Jenkins, CircleCI, GitHub Actions
//! and GitLab read. One testcase per model, seed, data test and unit test; a failing test is a
//! `<failure>` (with its failing-row count), a node that errored is an `<error>`, a skipped one
//! `<skipped>`; warnings pass and carry their message in `<system-out>`.

use super::runner::{NodeResult, Status};
use crate::parse::Manifest;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

pub fn render(command: &str, results: &[NodeResult], manifest: &Manifest, elapsed: f64, scrub: &dyn Fn(&str) -> String) -> String {
    let count = |st: &[Status]| results.iter().filter(|r| st.contains(&r.status)).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"kiln {command}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{elapsed:.3}\">\n",
        results.len(),
        count(&[Status::Fail]),
        count(&[Status::Error]),
        count(&[Status::Skipped]),
    ));
    out.push_str(&format!(
        "  <testsuite name=\"kiln {command}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{elapsed:.3}\">\n",
        results.len(),
        count(&[Status::Fail]),
        count(&[Status::Error]),
        count(&[Status::Skipped]),
    ));
    for r in results {
        let node = manifest.nodes.get(&r.unique_id).or_else(|| manifest.unit_tests.get(&r.unique_id));
        let (classname, name, file) = match node {
            Some(n) => (format!("{}.{}", n.resource_type.as_str(), n.package), n.name.clone(), n.original_file_path.clone()),
            None => ("kiln".to_string(), r.unique_id.clone(), String::new()),
        };
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            escape(&classname),
            escape(&name),
            escape(&file),
            r.seconds
        ));
        let message = scrub(&r.message);
        let first_line = message.lines().next().unwrap_or("");
        match r.status {
            Status::Success | Status::Pass => out.push_str(" />\n"),
            Status::Warn => out.push_str(&format!(">\n      <system-out>WARN: {}</system-out>\n    </testcase>\n", escape(&message))),
            Status::Skipped => out.push_str(&format!(">\n      <skipped message=\"{}\" />\n    </testcase>\n", escape(first_line))),
            Status::Fail => out.push_str(&format!(
                ">\n      <failure type=\"fail\" message=\"{}\">{}{}</failure>\n    </testcase>\n",
                escape(first_line),
                r.failures.map(|n| format!("failures: {n}\n")).unwrap_or_default(),
                escape(&message)
            )),
            Status::Error => out.push_str(&format!(
                ">\n      <error type=\"error\" message=\"{}\">{}</error>\n    </testcase>\n",
                escape(first_line),
                escape(&message)
            )),
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_xml() {
        assert_eq!(super::escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
