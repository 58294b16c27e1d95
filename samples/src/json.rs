// SPDX-License-Identifier: GPL-2.0

//! A minimal JSON object writer for the tools' `--json` output (one object, one line).

use std::fmt::Write;

/// Builds one flat JSON object, keys in insertion order.
#[derive(Debug, Default)]
pub struct Object {
    out: String,
}

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object::default()
    }

    fn key(&mut self, k: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        quote(&mut self.out, k);
        self.out.push(':');
    }

    /// Adds a string.
    pub fn str(mut self, k: &str, v: &str) -> Object {
        self.key(k);
        quote(&mut self.out, v);
        self
    }

    /// Adds an integer.
    pub fn int(mut self, k: &str, v: u64) -> Object {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    /// Adds a number (non-finite ones as `null`), with up to 6 decimals.
    pub fn num(mut self, k: &str, v: f64) -> Object {
        self.key(k);
        if v.is_finite() {
            let s = format!("{v:.6}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            self.out
                .push_str(if s.is_empty() || s == "-" { "0" } else { s });
        } else {
            self.out.push_str("null");
        }
        self
    }

    /// Adds a boolean.
    pub fn bool(mut self, k: &str, v: bool) -> Object {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    /// Adds an already-serialised JSON value (an array or object built by the caller).
    pub fn raw(mut self, k: &str, json: &str) -> Object {
        self.key(k);
        self.out.push_str(json);
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string literal.
pub fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON array of already-serialised values.
pub fn array<I: IntoIterator<Item = String>>(items: I) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object() {
        let o = Object::new()
            .str("tool", "a\"b\\c\n\u{1}")
            .int("n", 42)
            .num("x", 1.5)
            .num("y", 2.0)
            .num("z", 0.0000001)
            .num("nan", f64::NAN)
            .bool("ok", true)
            .raw("a", &array(["1".to_string(), "2".to_string()]))
            .finish();
        assert_eq!(
            o,
            r#"{"tool":"a\"b\\c\n\u0001","n":42,"x":1.5,"y":2,"z":0,"nan":null,"ok":true,"a":[1,2]}"#
        );
        assert_eq!(Object::new().finish(), "{}");
    }
}
