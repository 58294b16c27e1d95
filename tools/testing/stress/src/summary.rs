// SPDX-License-Identifier: GPL-2.0

//! The one-line result of a scenario: `vsock-stress SCENARIO: result=ok key=value ...` (or one
//! JSON object with `--json`), and the checks it found violated, one per line on stderr.

use std::fmt::Write;

use rvsock_samples::json::Object;

/// How many violations are printed; the rest are only counted.
const MAX_PRINTED: usize = 20;

#[derive(Clone, Debug)]
enum Value {
    Int(u64),
    Num(f64),
    Str(String),
}

/// The figures and the violated checks of one scenario run.
#[derive(Debug)]
pub struct Summary {
    scenario: &'static str,
    fields: Vec<(&'static str, Value)>,
    violations: Vec<String>,
}

impl Summary {
    /// An empty summary of `scenario`.
    pub fn new(scenario: &'static str) -> Summary {
        Summary {
            scenario,
            fields: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Adds an integer figure.
    pub fn int(&mut self, key: &'static str, v: u64) -> &mut Self {
        self.fields.push((key, Value::Int(v)));
        self
    }

    /// Adds a decimal figure (3 decimals in the key=value form).
    pub fn num(&mut self, key: &'static str, v: f64) -> &mut Self {
        self.fields.push((key, Value::Num(v)));
        self
    }

    /// Adds a word (no blanks, so the key=value line stays parseable).
    pub fn str(&mut self, key: &'static str, v: impl Into<String>) -> &mut Self {
        let v: String = v.into();
        self.fields
            .push((key, Value::Str(v.replace(char::is_whitespace, "_"))));
        self
    }

    /// Records a violated check.
    pub fn violation(&mut self, msg: impl Into<String>) {
        self.violations.push(msg.into());
    }

    /// Records several violated checks.
    pub fn violations(&mut self, msgs: impl IntoIterator<Item = String>) {
        self.violations.extend(msgs);
    }

    /// Whether every check held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations recorded.
    pub fn violation_list(&self) -> &[String] {
        &self.violations
    }

    /// The summary line: key=value form, or JSON.
    pub fn line(&self, json: bool) -> String {
        let result = if self.ok() { "ok" } else { "FAIL" };
        if json {
            let mut o = Object::new()
                .str("scenario", self.scenario)
                .str("result", result)
                .int("violations", self.violations.len() as u64);
            for (k, v) in &self.fields {
                o = match v {
                    Value::Int(i) => o.int(k, *i),
                    Value::Num(n) => o.num(k, *n),
                    Value::Str(s) => o.str(k, s),
                };
            }
            if let Some(first) = self.violations.first() {
                o = o.str("first_violation", first);
            }
            return o.finish();
        }
        let mut s = format!("vsock-stress {}: result={result}", self.scenario);
        for (k, v) in &self.fields {
            let _ = match v {
                Value::Int(i) => write!(s, " {k}={i}"),
                Value::Num(n) => write!(s, " {k}={n:.3}"),
                Value::Str(v) => write!(s, " {k}={v}"),
            };
        }
        let _ = write!(s, " violations={}", self.violations.len());
        s
    }

    /// Prints the violations (stderr) and the summary line (stdout).
    pub fn print(&self, json: bool) {
        for v in self.violations.iter().take(MAX_PRINTED) {
            eprintln!("vsock-stress {}: violation: {v}", self.scenario);
        }
        if self.violations.len() > MAX_PRINTED {
            eprintln!(
                "vsock-stress {}: ... and {} more violations",
                self.scenario,
                self.violations.len() - MAX_PRINTED
            );
        }
        println!("{}", self.line(json));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let mut s = Summary::new("hold");
        s.int("connections", 1000)
            .num("seconds", 1.5)
            .str("sock", "stream");
        assert!(s.ok());
        assert_eq!(
            s.line(false),
            "vsock-stress hold: result=ok connections=1000 seconds=1.500 sock=stream violations=0"
        );
        s.violation("lost 4 bytes");
        assert!(!s.ok());
        let j = s.line(true);
        assert!(j.starts_with("{\"scenario\":\"hold\",\"result\":\"FAIL\",\"violations\":1,"));
        assert!(j.contains("\"first_violation\":\"lost 4 bytes\""));
    }
}
