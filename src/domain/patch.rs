//! RFC 6902 JSON Patch under the server's bounds. A patch is a program: a few `copy` operations
//! can double a document again and again, so a small request could build gigabytes. Operations
//! are applied one at a time, and each is refused *before* it runs when the document would then
//! pass the size or the depth bound, or when it copies or moves a value into itself.

use json_patch::{jsonptr::Pointer, PatchOperation};
use serde_json::Value;

use super::limits::{depth, json_bytes};
use crate::{config::Limits, error::ApiError};

/// Applies `ops` to `doc`. On error `doc` is left half patched: callers patch a copy.
///
/// The document's size is tracked from operation to operation as an upper bound of its compact
/// JSON length (what an operation adds is counted exactly; what it removes is subtracted only for
/// the values it overwrites or removes, not for their keys), so checking an operation costs the
/// size of the values it touches, not of the whole document.
pub fn apply_bounded(
    doc: &mut Value,
    ops: &[PatchOperation],
    limits: &Limits,
) -> Result<(), ApiError> {
    let mut size = json_bytes(doc);
    // The patched audience must end within MAX_AUDIENCE_BYTES of client fields, so no operation
    // needs to grow it by more than that: a tighter bound than the body's keeps the work a
    // hostile patch can ask for (every copy is a clone) small.
    let bound = size
        .saturating_add(limits.max_audience_bytes)
        .min(limits.max_body_bytes);
    for (index, op) in ops.iter().enumerate() {
        size = size_after(doc, op, size, index, limits)?;
        if size > bound {
            return Err(ApiError::limit(format!(
                "JSON Patch operation {index} would make the audience at least {size} bytes of JSON; at most {bound} are allowed (its size before the patch plus MAX_AUDIENCE_BYTES, and at most MAX_BODY_BYTES)."
            )));
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| {
            let what = match e.kind {
                json_patch::PatchErrorKind::TestFailed => "the test failed".to_owned(),
                ref other => other.to_string(),
            };
            ApiError::invalid(format!("JSON Patch operation {index} failed: {what}"))
        })?;
    }
    Ok(())
}

/// The document's size bound once `op` has run, after checking the operation's depth and that it
/// does not copy or move a value into itself.
fn size_after(
    doc: &Value,
    op: &PatchOperation,
    size: usize,
    index: usize,
    limits: &Limits,
) -> Result<usize, ApiError> {
    let added = |path: &Pointer, value: &Value| -> Result<usize, ApiError> {
        check_depth(path, value, index, limits.max_json_depth)?;
        Ok(json_bytes(value) + slot_bytes(doc, path))
    };
    let grown = match op {
        PatchOperation::Test(_) => size,
        PatchOperation::Remove(r) => size.saturating_sub(bytes_at(doc, &r.path)),
        PatchOperation::Add(a) => {
            size.saturating_sub(overwritten(doc, &a.path)) + added(&a.path, &a.value)?
        }
        PatchOperation::Replace(r) => {
            size.saturating_sub(bytes_at(doc, &r.path)) + added(&r.path, &r.value)?
        }
        PatchOperation::Copy(c) => {
            refuse_into_itself("copy", &c.from, &c.path, index)?;
            match doc.pointer(c.from.as_str()) {
                Some(source) => {
                    size.saturating_sub(overwritten(doc, &c.path)) + added(&c.path, source)?
                }
                // The operation fails when it runs.
                None => size,
            }
        }
        PatchOperation::Move(m) => {
            refuse_into_itself("move", &m.from, &m.path, index)?;
            match doc.pointer(m.from.as_str()) {
                // The value only changes place: at most its new key is added.
                Some(source) => {
                    check_depth(&m.path, source, index, limits.max_json_depth)?;
                    size + slot_bytes(doc, &m.path)
                }
                None => size,
            }
        }
    };
    Ok(grown)
}

fn refuse_into_itself(
    kind: &str,
    from: &Pointer,
    path: &Pointer,
    index: usize,
) -> Result<(), ApiError> {
    if path.starts_with(from) && path.count() > from.count() {
        return Err(ApiError::limit(format!(
            "JSON Patch operation {index}: a '{kind}' from '{}' into '{}', inside the value it takes, is not allowed.",
            from.as_str(),
            path.as_str()
        )));
    }
    Ok(())
}

/// A value placed at `path` sits inside one container per token of the path.
fn check_depth(path: &Pointer, value: &Value, index: usize, max: usize) -> Result<(), ApiError> {
    let levels = path.count() + depth(value);
    if levels <= max {
        return Ok(());
    }
    Err(ApiError::limit(format!(
        "JSON Patch operation {index} would nest the audience's arrays and objects {levels} levels deep; at most {max} are allowed."
    )))
}

fn bytes_at(doc: &Value, path: &Pointer) -> usize {
    doc.pointer(path.as_str()).map(json_bytes).unwrap_or(0)
}

/// The bytes of the value an `add` at `path` replaces: the member of that name in an object;
/// nothing in an array, where `add` inserts.
fn overwritten(doc: &Value, path: &Pointer) -> usize {
    match path.parent().and_then(|p| doc.pointer(p.as_str())) {
        Some(Value::Object(_)) => bytes_at(doc, path),
        _ => 0,
    }
}

/// The bytes a new slot at `path` costs besides its value: `"key":` and a comma in an object
/// (none when the key exists), a comma in an array.
fn slot_bytes(doc: &Value, path: &Pointer) -> usize {
    let Some((parent, last)) = path.split_back() else {
        return 0;
    };
    match doc.pointer(parent.as_str()) {
        Some(Value::Object(map)) => {
            let key = last.decoded();
            if map.contains_key(key.as_ref()) {
                0
            } else {
                json_bytes(key.as_ref()) + 2
            }
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::Code;

    fn ops(v: Value) -> Vec<PatchOperation> {
        serde_json::from_value(v).unwrap()
    }

    fn limits(max_body_bytes: usize, max_json_depth: usize) -> Limits {
        Limits {
            max_body_bytes,
            max_json_depth,
            ..Limits::default()
        }
    }

    #[test]
    fn the_size_bound_is_never_below_the_real_size() {
        let mut doc = json!({"a": {"b": [1, 2]}, "s": "x"});
        let patch = ops(json!([
            {"op": "add", "path": "/c", "value": [1, {"d": "é"}]},
            {"op": "copy", "from": "/a", "path": "/c/-"},
            {"op": "replace", "path": "/s", "value": "longer"},
            {"op": "move", "from": "/a/b", "path": "/moved"},
            {"op": "remove", "path": "/c/0"},
            {"op": "add", "path": "/a/new~1key", "value": null},
            {"op": "test", "path": "/s", "value": "longer"},
        ]));
        let big = limits(1 << 20, 32);
        let mut size = json_bytes(&doc);
        for (i, op) in patch.iter().enumerate() {
            size = size_after(&doc, op, size, i, &big).unwrap();
            json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).unwrap();
            assert!(
                size >= json_bytes(&doc),
                "op {i}: {size} < {}",
                json_bytes(&doc)
            );
        }
    }

    #[test]
    fn copying_into_itself_is_refused_before_it_runs() {
        // The attack: 22 copies of /x into /x/- made a 16 MB audience.
        let mut patch = vec![json!({"op": "add", "path": "/x", "value": [1]})];
        patch.extend((0..22).map(|_| json!({"op": "copy", "from": "/x", "path": "/x/-"})));
        let mut doc = json!({"name": "n"});
        let err = apply_bounded(&mut doc, &ops(json!(patch)), &Limits::default()).unwrap_err();
        assert_eq!(err.code, Code::LimitExceeded);
        assert_eq!(
            err.message,
            "JSON Patch operation 1: a 'copy' from '/x' into '/x/-', inside the value it takes, is not allowed."
        );
        let err = apply_bounded(
            &mut json!({"x": {"y": 1}}),
            &ops(json!([{"op": "move", "from": "/x", "path": "/x/y/z"}])),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            err.message.contains("a 'move' from '/x'"),
            "{}",
            err.message
        );
        // A sibling with a longer name is not inside.
        let mut doc = json!({"x": 1});
        apply_bounded(
            &mut doc,
            &ops(json!([{"op": "copy", "from": "/x", "path": "/xy"}])),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(doc, json!({"x": 1, "xy": 1}));
    }

    #[test]
    fn doubling_through_two_names_stops_at_the_size_bound() {
        // x = [s]; then y := x, x += [y] doubles x every two operations.
        let s = "s".repeat(1000);
        let mut patch = vec![json!({"op": "add", "path": "/x", "value": [s]})];
        for _ in 0..20 {
            patch.push(json!({"op": "copy", "from": "/x", "path": "/y"}));
            patch.push(json!({"op": "copy", "from": "/y", "path": "/x/-"}));
        }
        let mut doc = json!({});
        let err = apply_bounded(&mut doc, &ops(json!(patch)), &limits(64 * 1024, 64)).unwrap_err();
        assert_eq!(err.code, Code::LimitExceeded);
        assert!(
            err.message
                .starts_with("JSON Patch operation 12 would make the audience at least")
                && err.message.contains("; at most 65536 are allowed"),
            "{}",
            err.message
        );
        // The document was refused before it grew past the bound.
        assert!(json_bytes(&doc) <= 64 * 1024);
    }

    #[test]
    fn depth_is_checked_where_the_value_lands() {
        let l = limits(1 << 20, 4);
        let mut doc = json!({"a": {"b": {}}});
        // /a/b/c holds [[1]]: 3 tokens + 2 levels = 5 > 4.
        let err = apply_bounded(
            &mut doc,
            &ops(json!([{"op": "add", "path": "/a/b/c", "value": [[1]]}])),
            &l,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "JSON Patch operation 0 would nest the audience's arrays and objects 5 levels deep; at most 4 are allowed."
        );
        apply_bounded(
            &mut doc,
            &ops(json!([{"op": "add", "path": "/a/b/c", "value": [1]}])),
            &l,
        )
        .unwrap();
        // Copying a deep value under another deep one is caught the same way.
        let mut doc = json!({"a": {"b": {"c": [1]}}, "z": {"y": {}}});
        let err = apply_bounded(
            &mut doc,
            &ops(json!([{"op": "copy", "from": "/a", "path": "/z/y/w"}])),
            &l,
        )
        .unwrap_err();
        assert!(err.message.contains("levels deep"), "{}", err.message);
    }

    #[test]
    fn failures_name_the_operation() {
        let err = apply_bounded(
            &mut json!({"a": 1}),
            &ops(json!([{"op": "test", "path": "/a", "value": 1}, {"op": "test", "path": "/a", "value": 2}])),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, Code::AudienceInvalid);
        assert_eq!(
            err.message,
            "JSON Patch operation 1 failed: the test failed"
        );
    }
}
