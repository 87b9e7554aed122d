//! Pure checks of the server's bounds (`config::Limits`): lengths, counts, nesting depth and size
//! of JSON. Each returns the message of its refusal, naming the field and the bound; the caller
//! wraps it in its family's error (`ApiError::limit` for UPS, `ApiError::ais_invalid` for AIS).

use std::io;

use serde::Serialize;
use serde_json::Value;

/// `value` holds at most `max` characters (Unicode scalar values).
pub fn check_chars(field: &str, value: &str, max: usize) -> Result<(), String> {
    // A string of at most `max` bytes has at most `max` characters: no need to count them.
    if value.len() <= max {
        return Ok(());
    }
    let chars = value.chars().count();
    if chars <= max {
        return Ok(());
    }
    Err(format!(
        "Field '{field}' is {chars} characters long; at most {max} are allowed."
    ))
}

/// A list holds at most `max` entries.
pub fn check_count(field: &str, count: usize, max: usize) -> Result<(), String> {
    if count <= max {
        return Ok(());
    }
    Err(format!(
        "Field '{field}' holds {count} entries; at most {max} are allowed."
    ))
}

/// Each string of a list holds at most `max_chars` characters, and the list at most `max_len`
/// entries. Entries that are not strings are left to the type checks.
pub fn check_string_list(
    field: &str,
    items: &[Value],
    max_len: usize,
    max_chars: usize,
) -> Result<(), String> {
    check_count(field, items.len(), max_len)?;
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = item.as_str() {
            check_chars(&format!("{field}[{i}]"), s, max_chars)?;
        }
    }
    Ok(())
}

/// [`check_string_list`] of a list already known to hold strings.
pub fn check_strings<S: AsRef<str>>(
    field: &str,
    items: &[S],
    max_len: usize,
    max_chars: usize,
) -> Result<(), String> {
    check_count(field, items.len(), max_len)?;
    for (i, item) in items.iter().enumerate() {
        check_chars(&format!("{field}[{i}]"), item.as_ref(), max_chars)?;
    }
    Ok(())
}

/// How deeply arrays and objects nest in `value`: 0 for a scalar, 1 for `{}` or `[1]`,
/// 2 for `{"a": [1]}`.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// How deeply arrays and objects nest in JSON text, read in one pass without parsing it (so a
/// body nested past what the parser allows is still measured): [`depth`] of the parsed value.
pub fn text_depth(json: &[u8]) -> usize {
    let (mut levels, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                levels += 1;
                deepest = deepest.max(levels);
            }
            b']' | b'}' => levels = levels.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A body (JSON text) nests at most `max` levels.
pub fn check_body_depth(json: &[u8], max: usize) -> Result<(), String> {
    let levels = text_depth(json);
    if levels <= max {
        return Ok(());
    }
    Err(format!(
        "The request body nests arrays and objects {levels} levels deep; at most {max} are allowed."
    ))
}

/// The length of `value` written as compact JSON, counted without building the text.
pub fn json_bytes<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    // Writing to a counter cannot fail, and JSON values and maps always serialise.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lengths_are_counted_in_characters() {
        assert!(check_chars("name", "abc", 3).is_ok());
        // Four characters, twelve bytes.
        assert!(check_chars("name", "日本語!", 4).is_ok());
        assert_eq!(
            check_chars("name", "日本語!", 3).unwrap_err(),
            "Field 'name' is 4 characters long; at most 3 are allowed."
        );
    }

    #[test]
    fn lists_are_bounded_in_length_and_in_their_strings() {
        let items = vec![json!("a"), json!("bbbb"), json!(3)];
        assert!(check_string_list("labels", &items, 3, 4).is_ok());
        assert_eq!(
            check_string_list("labels", &items, 2, 4).unwrap_err(),
            "Field 'labels' holds 3 entries; at most 2 are allowed."
        );
        assert_eq!(
            check_string_list("labels", &items, 3, 3).unwrap_err(),
            "Field 'labels[1]' is 4 characters long; at most 3 are allowed."
        );
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        assert!(check_body_depth(b"[[[]]]", 3).is_ok());
        assert_eq!(
            check_body_depth(b"[[[[]]]]", 3).unwrap_err(),
            "The request body nests arrays and objects 4 levels deep; at most 3 are allowed."
        );
    }

    #[test]
    fn text_depth_agrees_with_the_parsed_depth_and_skips_strings() {
        for text in [
            r#"{"a": [1, {"b": []}], "c": "[[[{{{", "d": "\"]]"}"#,
            r#"[]"#,
            r#"1"#,
            r#"{"k\\": [[["x\\\"["]]]}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(text_depth(text.as_bytes()), depth(&value), "{text}");
        }
        // Deeper than serde_json parses (128) is still measured.
        let deep = "[".repeat(500) + &"]".repeat(500);
        assert_eq!(text_depth(deep.as_bytes()), 500);
    }

    #[test]
    fn json_bytes_is_the_compact_length() {
        for v in [
            json!({"a": [1, "x\"y", null], "b": {"c": true}}),
            json!("日本"),
            json!([]),
        ] {
            assert_eq!(json_bytes(&v), serde_json::to_string(&v).unwrap().len());
        }
    }
}
