//! External audiences (AIS): the rules of a create request, of a PATCH, of a run request, and of
//! the values an ingested file may hold. The normalised request document is the source of truth:
//! it is what `operationDetails` shows and what the store keeps.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::{json, Map, Value};

use super::limits::{check_chars, check_string_list};
use crate::{config::Limits, error::ApiError};

pub const MAX_FIELDS: usize = 41;
pub const DEFAULT_TTL_DAYS: i64 = 30;
pub const MAX_TTL_DAYS: i64 = 90;
pub const DEFAULT_NAMESPACE: &str = "CustomerAudienceUpload";
pub const ORIGIN_NAME: &str = "CUSTOM_UPLOAD";
pub const CLOUD_TYPES: &[&str] = &["S3", "DLZ", "GCS", "SFTP", "Azure"];
/// Cloud types whose source needs a `baseConnectionId`.
const CONNECTED_CLOUD_TYPES: &[&str] = &["S3", "GCS", "SFTP"];
pub const DEFAULT_CLOUD_TYPE: &str = "DLZ";
/// The fields a PATCH may change.
pub const PATCHABLE: &[&str] = &["description", "labels", "fields", "ttlInDays"];
/// Fields a PATCH may repeat only with their current value.
pub const IMMUTABLE: &[&str] = &["name", "expressActivation"];

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::ais_invalid(msg)
}

/// The type a declared field's values must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Long,
    Integer,
    Date,
    DateTime,
    Boolean,
}

impl FieldType {
    pub const NAMES: &'static [&'static str] = &[
        "string", "number", "long", "integer", "date", "datetime", "boolean",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => FieldType::String,
            "number" => FieldType::Number,
            "long" => FieldType::Long,
            "integer" => FieldType::Integer,
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "boolean" => FieldType::Boolean,
            _ => return None,
        })
    }

    /// Whether a CSV value fits the type. An empty value is an absent value and always fits
    /// (the identity column has its own rule). On failure, the reason.
    pub fn check(self, value: &str) -> Result<(), &'static str> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(());
        }
        let ok = match self {
            FieldType::String => true,
            FieldType::Number => v.parse::<f64>().is_ok_and(f64::is_finite),
            FieldType::Long => v.parse::<i64>().is_ok(),
            FieldType::Integer => v.parse::<i32>().is_ok(),
            FieldType::Date => NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok(),
            FieldType::DateTime => {
                DateTime::parse_from_rfc3339(v).is_ok()
                    || NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                    || NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f").is_ok()
            }
            FieldType::Boolean => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                FieldType::String => "not a string",
                FieldType::Number => "not a number",
                FieldType::Long => "not a long (64-bit integer)",
                FieldType::Integer => "not an integer (32-bit)",
                FieldType::Date => "not a date (YYYY-MM-DD)",
                FieldType::DateTime => "not a datetime (ISO 8601)",
                FieldType::Boolean => "not a boolean (true or false)",
            })
        }
    }
}

/// One declared column of the source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub field_type: FieldType,
    pub identity_ns: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Folder,
}

/// Where a run reads: `<landing>/<cloud_dir>/<path>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: String,
    pub kind: SourceKind,
    pub cloud_dir: String,
}

/// What the worker needs of a stored external audience.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSpec {
    pub fields: Vec<Field>,
    pub source: Source,
    pub ttl_in_days: i64,
}

impl IngestSpec {
    /// Reads a document written by [`normalize`]; a malformed one is a fault of the store.
    pub fn from_doc(doc: &Map<String, Value>) -> anyhow::Result<Self> {
        let fields = doc
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow::anyhow!("stored spec has no fields"))?
            .iter()
            .map(|f| {
                let name = f["name"].as_str().unwrap_or_default().to_owned();
                let field_type = FieldType::parse(f["type"].as_str().unwrap_or_default())
                    .ok_or_else(|| anyhow::anyhow!("stored field {name} has a bad type"))?;
                Ok(Field {
                    name,
                    field_type,
                    identity_ns: f.get("identityNs").and_then(Value::as_str).map(Into::into),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let params = &doc["sourceSpec"]["params"];
        let kind = if params["type"] == "folder" {
            SourceKind::Folder
        } else {
            SourceKind::File
        };
        Ok(IngestSpec {
            fields,
            source: Source {
                path: params["path"].as_str().unwrap_or_default().to_owned(),
                kind,
                cloud_dir: params["cloudType"]
                    .as_str()
                    .unwrap_or(DEFAULT_CLOUD_TYPE)
                    .to_owned(),
            },
            ttl_in_days: doc["ttlInDays"].as_i64().unwrap_or(DEFAULT_TTL_DAYS),
        })
    }

    pub fn identity(&self) -> &Field {
        self.fields
            .iter()
            .find(|f| f.identity_ns.is_some())
            .unwrap_or(&self.fields[0])
    }
}

fn opt_string(doc: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("Field '{key}' must be a string."))),
    }
}

fn string_array(value: &Value, what: &str) -> Result<Value, ApiError> {
    match value {
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
        _ => Err(invalid(format!(
            "Field '{what}' must be an array of strings."
        ))),
    }
}

fn non_empty(value: Option<String>, key: &str) -> Result<Option<String>, ApiError> {
    match value {
        Some(s) if s.trim().is_empty() => Err(invalid(format!("Field '{key}' must not be empty."))),
        other => Ok(other),
    }
}

/// A string field holds at most `max` characters.
fn bounded(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    check_chars(field, value, max).map_err(invalid)
}

/// Validates a create request (or the result of a PATCH) and returns its normalised form:
/// defaults filled in, `ttlInDays` a number, `sourceSpec` in the `params` form. Unknown top-level
/// fields are not kept. Every kept string and list is checked against `limits`.
pub fn normalize(body: Value, limits: &Limits) -> Result<Map<String, Value>, ApiError> {
    let out = normalize_shape(body, limits)?;
    check_top_level_bounds(&out, limits)?;
    Ok(out)
}

/// The bounds on the top-level strings and lists of a normalised document (the fields and the
/// source are bounded as they are normalised).
fn check_top_level_bounds(doc: &Map<String, Value>, limits: &Limits) -> Result<(), ApiError> {
    let text = |key: &str| doc.get(key).and_then(Value::as_str);
    for (key, max) in [
        ("name", limits.max_name_chars),
        ("description", limits.max_description_chars),
        ("customAudienceId", limits.max_id_chars),
        ("namespace", limits.max_id_chars),
    ] {
        if let Some(v) = text(key) {
            bounded(key, v, max)?;
        }
    }
    for key in ["labels", "tags"] {
        if let Some(Value::Array(items)) = doc.get(key) {
            check_string_list(key, items, limits.max_labels, limits.max_id_chars)
                .map_err(invalid)?;
        }
    }
    Ok(())
}

/// The normalised document; the fields and the source are bounded here, the top level by
/// [`check_top_level_bounds`].
fn normalize_shape(body: Value, limits: &Limits) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(doc) = body else {
        return Err(invalid("The request body must be a JSON object."));
    };
    let mut out = Map::new();
    let name = match non_empty(opt_string(&doc, "name")?, "name")? {
        Some(n) => n,
        None => return Err(invalid("Field 'name' is required.")),
    };
    out.insert("name".into(), json!(name));
    if let Some(d) = opt_string(&doc, "description")? {
        out.insert("description".into(), json!(d));
    }
    if let Some(c) = non_empty(opt_string(&doc, "customAudienceId")?, "customAudienceId")? {
        out.insert("customAudienceId".into(), json!(c));
    }
    out.insert(
        "fields".into(),
        normalize_fields(doc.get("fields"), limits)?,
    );
    out.insert(
        "sourceSpec".into(),
        normalize_source(doc.get("sourceSpec"), limits)?,
    );
    out.insert("ttlInDays".into(), json!(ttl(doc.get("ttlInDays"))?));
    match doc.get("audienceType") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "people" => {}
        Some(_) => return Err(invalid("Field 'audienceType' must be 'people'.")),
    }
    out.insert("audienceType".into(), json!("people"));
    match doc.get("originName") {
        Some(Value::String(s)) if s == ORIGIN_NAME => {}
        None | Some(Value::Null) => return Err(invalid("Field 'originName' is required.")),
        Some(_) => {
            return Err(invalid(format!(
                "Field 'originName' must be '{ORIGIN_NAME}'."
            )))
        }
    }
    out.insert("originName".into(), json!(ORIGIN_NAME));
    let namespace = non_empty(opt_string(&doc, "namespace")?, "namespace")?
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    out.insert("namespace".into(), json!(namespace));
    for key in ["labels", "tags"] {
        if let Some(v) = doc.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), string_array(v, key)?);
        }
    }
    let express = match doc.get("expressActivation") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("Field 'expressActivation' must be a boolean.")),
    };
    out.insert("expressActivation".into(), json!(express));
    Ok(out)
}

fn ttl(value: Option<&Value>) -> Result<i64, ApiError> {
    let n = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_TTL_DAYS),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if (1..=MAX_TTL_DAYS).contains(&n) => Ok(n),
        _ => Err(invalid(format!(
            "Field 'ttlInDays' must be a whole number of days from 1 to {MAX_TTL_DAYS} (a number or a numeric string)."
        ))),
    }
}

fn normalize_fields(value: Option<&Value>, limits: &Limits) -> Result<Value, ApiError> {
    let Some(Value::Array(items)) = value else {
        return Err(invalid(match value {
            None | Some(Value::Null) => "Field 'fields' is required.",
            Some(_) => "Field 'fields' must be an array of {name, type, identityNs?, labels?}.",
        }));
    };
    if items.is_empty() || items.len() > MAX_FIELDS {
        return Err(invalid(format!(
            "Field 'fields' must hold 1 to {MAX_FIELDS} fields; it holds {}.",
            items.len()
        )));
    }
    let mut names: Vec<&str> = Vec::with_capacity(items.len());
    let mut identities = 0;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(f) = item.as_object() else {
            return Err(invalid(format!("Field 'fields[{i}]' must be an object.")));
        };
        let name = match f.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
            _ => {
                return Err(invalid(format!(
                    "Field 'fields[{i}].name' is required and must be a non-empty string."
                )))
            }
        };
        bounded(&format!("fields[{i}].name"), name, limits.max_id_chars)?;
        if names.contains(&name) {
            return Err(invalid(format!(
                "Field 'fields[{i}].name': '{name}' is declared twice."
            )));
        }
        names.push(name);
        let ty = f.get("type").and_then(Value::as_str).unwrap_or_default();
        if FieldType::parse(ty).is_none() {
            return Err(invalid(format!(
                "Field 'fields[{i}].type' must be one of {}.",
                FieldType::NAMES.join(", ")
            )));
        }
        let mut field = Map::new();
        field.insert("name".into(), json!(name));
        field.insert("type".into(), json!(ty));
        match f.get("identityNs") {
            None | Some(Value::Null) => {}
            Some(Value::String(ns)) if !ns.trim().is_empty() => {
                bounded(&format!("fields[{i}].identityNs"), ns, limits.max_id_chars)?;
                identities += 1;
                field.insert("identityNs".into(), json!(ns));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "Field 'fields[{i}].identityNs' must be a non-empty string."
                )))
            }
        }
        if let Some(labels) = f.get("labels").filter(|v| !v.is_null()) {
            let what = format!("fields[{i}].labels");
            let labels = string_array(labels, &what)?;
            if let Value::Array(items) = &labels {
                check_string_list(&what, items, limits.max_labels, limits.max_id_chars)
                    .map_err(invalid)?;
            }
            field.insert("labels".into(), labels);
        }
        out.push(Value::Object(field));
    }
    if identities != 1 {
        return Err(invalid(format!(
            "Field 'fields' must have exactly one field with 'identityNs'; it has {identities}."
        )));
    }
    Ok(Value::Array(out))
}

/// `sourceSpec.params`, or a flat `sourceSpec` (the older form), in the `params` form.
fn normalize_source(value: Option<&Value>, limits: &Limits) -> Result<Value, ApiError> {
    let Some(Value::Object(spec)) = value else {
        return Err(invalid(match value {
            None | Some(Value::Null) => "Field 'sourceSpec' is required.",
            Some(_) => "Field 'sourceSpec' must be an object.",
        }));
    };
    let (params, prefix) = match spec.get("params") {
        Some(Value::Object(p)) => (p, "sourceSpec.params"),
        Some(_) => return Err(invalid("Field 'sourceSpec.params' must be an object.")),
        None => (spec, "sourceSpec"),
    };
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("Field '{prefix}.{key}' must be a string."))),
        }
    };
    let path = text("path")?.unwrap_or_default();
    if path.trim().is_empty() {
        return Err(invalid(format!("Field '{prefix}.path' is required.")));
    }
    bounded(&format!("{prefix}.path"), &path, limits.max_path_chars)?;
    if path.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "Field '{prefix}.path' must not contain spaces."
        )));
    }
    // The path names a file in the sandbox's landing zone: the zone's naming rules apply, which
    // refuse absolute paths, '..', '\' and encoded traversal.
    if let Err(rule) = super::landing::parse_blob_name(&path) {
        return Err(invalid(format!(
            "Field '{prefix}.path' must be a valid name relative to the landing zone: {rule}."
        )));
    }
    let kind = text("type")?.unwrap_or_else(|| "file".into());
    if kind != "file" && kind != "folder" {
        return Err(invalid(format!(
            "Field '{prefix}.type' must be 'file' or 'folder'."
        )));
    }
    let source_type = text("sourceType")?.unwrap_or_else(|| "Cloud Storage".into());
    if source_type != "Cloud Storage" {
        return Err(invalid(format!(
            "Field '{prefix}.sourceType' must be 'Cloud Storage'."
        )));
    }
    let cloud_type = text("cloudType")?;
    if let Some(c) = &cloud_type {
        if !CLOUD_TYPES.contains(&c.as_str()) {
            return Err(invalid(format!(
                "Field '{prefix}.cloudType' must be one of {}.",
                CLOUD_TYPES.join(", ")
            )));
        }
    }
    let connection = text("baseConnectionId")?.filter(|c| !c.trim().is_empty());
    if let Some(c) = &connection {
        bounded(
            &format!("{prefix}.baseConnectionId"),
            c,
            limits.max_id_chars,
        )?;
    }
    if let Some(c) = &cloud_type {
        if CONNECTED_CLOUD_TYPES.contains(&c.as_str()) && connection.is_none() {
            return Err(invalid(format!(
                "Field '{prefix}.baseConnectionId' is required when cloudType is {c}."
            )));
        }
    }
    let mut out = Map::new();
    out.insert("path".into(), json!(path));
    out.insert("type".into(), json!(kind));
    out.insert("sourceType".into(), json!(source_type));
    if let Some(c) = cloud_type {
        out.insert("cloudType".into(), json!(c));
    }
    if let Some(c) = connection {
        out.insert("baseConnectionId".into(), json!(c));
    }
    Ok(json!({ "params": out }))
}

/// Applies a PATCH (a plain partial object) to a normalised document and validates the result.
/// `fields` are merged by name: a field of the same name is replaced, a new one appended.
pub fn patched(
    current: &Map<String, Value>,
    patch: Value,
    limits: &Limits,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(invalid(
            "The request body must be a JSON object of the fields to change.",
        ));
    };
    if patch.is_empty() {
        return Err(invalid(format!(
            "The request body must change at least one of {}.",
            PATCHABLE.join(", ")
        )));
    }
    let mut doc = current.clone();
    for (key, value) in patch {
        if IMMUTABLE.contains(&key.as_str()) {
            if doc.get(&key) != Some(&value) {
                return Err(invalid(format!(
                    "Field '{key}' is immutable and cannot be changed."
                )));
            }
            continue;
        }
        if !PATCHABLE.contains(&key.as_str()) {
            return Err(invalid(format!(
                "Field '{key}' cannot be changed; a PATCH may change {}.",
                PATCHABLE.join(", ")
            )));
        }
        if key == "fields" {
            let Value::Array(items) = value else {
                return Err(invalid("Field 'fields' must be an array."));
            };
            let mut merged = doc
                .get("fields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                let name = item.get("name").and_then(Value::as_str).map(str::to_owned);
                match merged.iter_mut().find(|f| {
                    name.is_some() && f.get("name").and_then(Value::as_str) == name.as_deref()
                }) {
                    Some(slot) => *slot = item,
                    None => merged.push(item),
                }
            }
            doc.insert(key, Value::Array(merged));
        } else {
            doc.insert(key, value);
        }
    }
    normalize(Value::Object(doc), limits)
}

/// The body of a run request: `dataFilterStartTime` required, `dataFilterEndTime` optional, both
/// epoch seconds, start <= end.
pub fn run_window(body: &Value, now_s: i64) -> Result<(i64, i64), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("The request body must be a JSON object."));
    };
    let read = |key: &str| -> Result<Option<i64>, ApiError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if n >= 0 => Ok(Some(n)),
                _ => Err(invalid(format!(
                    "Field '{key}' must be a non-negative integer (epoch seconds)."
                ))),
            },
        }
    };
    let Some(start) = read("dataFilterStartTime")? else {
        return Err(invalid("Field 'dataFilterStartTime' is required."));
    };
    let end = read("dataFilterEndTime")?.unwrap_or(now_s.max(start));
    if end < start {
        return Err(invalid(
            "Field 'dataFilterEndTime' must not be before 'dataFilterStartTime'.",
        ));
    }
    Ok((start, end))
}

/// The sort orders of the run list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSort {
    CreatedAsc,
    CreatedDesc,
    NameAsc,
    NameDesc,
}

/// `limit` (1..40, default 20) and `sortBy` of the run list.
pub fn run_list_params(
    limit: Option<&str>,
    sort_by: Option<&str>,
) -> Result<(i64, RunSort), ApiError> {
    let limit = match limit {
        None => 20,
        Some(l) => match l.trim().parse::<i64>() {
            Ok(n) if (1..=40).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "Query parameter 'limit' must be an integer from 1 to 40.",
                ))
            }
        },
    };
    let sort = match sort_by.unwrap_or("-createdAt") {
        "createdAt" => RunSort::CreatedAsc,
        "-createdAt" => RunSort::CreatedDesc,
        "name" => RunSort::NameAsc,
        "-name" => RunSort::NameDesc,
        _ => {
            return Err(invalid(
                "Query parameter 'sortBy' must be one of createdAt, -createdAt, name, -name.",
            ))
        }
    };
    Ok((limit, sort))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Value {
        json!({
            "name": "Sample external audience",
            "description": "A sample version of an external audience",
            "fields": [
                {"name": "ppid", "type": "string", "identityNs": "email"},
                {"name": "list_id", "type": "string", "labels": ["core/C2", "custom/deep"]},
                {"name": "delete", "type": "number"},
                {"name": "process_consent", "type": "string"}
            ],
            "sourceSpec": {"params": {
                "path": "activation/sample-source/example.csv", "type": "file",
                "sourceType": "Cloud Storage", "baseConnectionId": "1d1d4bc5-b527-46a3-9863-530246a61b2b"}},
            "ttlInDays": "40",
            "labels": ["core/C1"],
            "audienceType": "people",
            "originName": "CUSTOM_UPLOAD"
        })
    }

    #[test]
    fn seed_request_normalises() {
        let doc = normalize(seed(), &Limits::default()).unwrap();
        assert_eq!(doc["ttlInDays"], json!(40));
        assert_eq!(doc["namespace"], json!(DEFAULT_NAMESPACE));
        assert_eq!(doc["expressActivation"], json!(false));
        let spec = IngestSpec::from_doc(&doc).unwrap();
        assert_eq!(spec.identity().name, "ppid");
        assert_eq!(spec.source.cloud_dir, "DLZ");
        assert_eq!(spec.source.kind, SourceKind::File);
    }

    #[test]
    fn flat_source_spec_is_accepted() {
        let mut body = seed();
        body["sourceSpec"] = json!({"path": "a/b.csv", "cloudType": "DLZ"});
        let doc = normalize(body, &Limits::default()).unwrap();
        assert_eq!(doc["sourceSpec"]["params"]["path"], "a/b.csv");
    }

    #[test]
    fn violations_name_the_field() {
        type Change = fn(&mut Value);
        let cases: Vec<(Change, &str)> = vec![
            (|b| b["name"] = json!(""), "'name'"),
            (|b| b["fields"] = json!([]), "'fields'"),
            (
                |b| b["fields"][0]["type"] = json!("text"),
                "'fields[0].type'",
            ),
            (
                |b| b["fields"][1]["identityNs"] = json!("crm"),
                "exactly one",
            ),
            (
                |b| {
                    b["fields"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("identityNs")
                        .map(|_| ())
                        .unwrap()
                },
                "exactly one",
            ),
            (
                |b| b["sourceSpec"]["params"]["path"] = json!("a b.csv"),
                "spaces",
            ),
            (
                |b| b["sourceSpec"]["params"]["path"] = json!("../etc/passwd"),
                "'..'",
            ),
            (
                |b| b["sourceSpec"]["params"]["type"] = json!("dir"),
                "'sourceSpec.params.type'",
            ),
            (
                |b| b["sourceSpec"]["params"]["cloudType"] = json!("S4"),
                "'sourceSpec.params.cloudType'",
            ),
            (
                |b| {
                    b["sourceSpec"]["params"]["cloudType"] = json!("S3");
                    b["sourceSpec"]["params"]
                        .as_object_mut()
                        .unwrap()
                        .remove("baseConnectionId");
                },
                "'sourceSpec.params.baseConnectionId'",
            ),
            (|b| b["ttlInDays"] = json!(91), "'ttlInDays'"),
            (|b| b["ttlInDays"] = json!("forty"), "'ttlInDays'"),
            (|b| b["audienceType"] = json!("accounts"), "'audienceType'"),
            (|b| b["originName"] = json!("OTHER"), "'originName'"),
            (|b| b["labels"] = json!("core/C1"), "'labels'"),
            (
                |b| b["expressActivation"] = json!("yes"),
                "'expressActivation'",
            ),
        ];
        for (change, needle) in cases {
            let mut body = seed();
            change(&mut body);
            let err = normalize(body, &Limits::default()).unwrap_err();
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
        let too_many: Vec<Value> = (0..42)
            .map(|i| json!({"name": format!("f{i}"), "type": "string", "identityNs": if i == 0 { json!("email") } else { Value::Null }}))
            .collect();
        let mut body = seed();
        body["fields"] = json!(too_many);
        assert!(normalize(body, &Limits::default())
            .unwrap_err()
            .message
            .contains("1 to 41"));
    }

    #[test]
    fn every_kept_string_and_list_is_bounded() {
        let l = Limits {
            max_name_chars: 30,
            max_description_chars: 50,
            max_id_chars: 10,
            max_path_chars: 40,
            max_labels: 2,
            ..Limits::default()
        };
        type Change = fn(&mut Value);
        let cases: Vec<(Change, &str)> = vec![
            (|b| b["name"] = json!("n".repeat(31)), "Field 'name' is 31 characters long; at most 30 are allowed."),
            (|b| b["description"] = json!("d".repeat(51)), "Field 'description' is 51 characters long; at most 50 are allowed."),
            (|b| b["customAudienceId"] = json!("abcdefghijk"), "Field 'customAudienceId' is 11 characters long; at most 10 are allowed."),
            (|b| b["namespace"] = json!("abcdefghijk"), "Field 'namespace' is 11 characters long; at most 10 are allowed."),
            (|b| b["labels"] = json!(["a", "b", "c"]), "Field 'labels' holds 3 entries; at most 2 are allowed."),
            (|b| b["tags"] = json!(["a", "abcdefghijk"]), "Field 'tags[1]' is 11 characters long; at most 10 are allowed."),
            (|b| b["fields"][1]["name"] = json!("abcdefghijk"), "Field 'fields[1].name' is 11 characters long; at most 10 are allowed."),
            (|b| b["fields"][0]["identityNs"] = json!("abcdefghijk"), "Field 'fields[0].identityNs' is 11 characters long; at most 10 are allowed."),
            (|b| b["fields"][1]["labels"] = json!(["a", "b", "c"]), "Field 'fields[1].labels' holds 3 entries; at most 2 are allowed."),
            (|b| b["sourceSpec"]["params"]["path"] = json!("p/".repeat(21)), "Field 'sourceSpec.params.path' is 42 characters long; at most 40 are allowed."),
            (|b| b["sourceSpec"]["params"]["baseConnectionId"] = json!("abcdefghijk"), "Field 'sourceSpec.params.baseConnectionId' is 11 characters long; at most 10 are allowed."),
        ];
        let within = || {
            let mut body = seed();
            body["namespace"] = json!("ns");
            body["fields"][1]["labels"] = json!(["core/C2"]);
            body["fields"][3]["name"] = json!("consent");
            body["sourceSpec"]["params"]["baseConnectionId"] = json!("conn-1");
            body
        };
        assert!(normalize(within(), &l).is_ok());
        for (change, message) in cases {
            let mut body = within();
            change(&mut body);
            let err = normalize(body, &l).unwrap_err();
            assert_eq!(err.code, crate::error::Code::AisValidation);
            assert_eq!(err.message, message);
        }
    }

    #[test]
    fn patch_merges_fields_and_guards_immutables() {
        let doc = normalize(seed(), &Limits::default()).unwrap();
        let limits = Limits::default();
        let patched = |doc: &Map<String, Value>, patch: Value| patched(doc, patch, &limits);
        let out = patched(
            &doc,
            json!({"fields": [{"name": "delete", "type": "long"}, {"name": "extra", "type": "date"}], "ttlInDays": 10}),
        )
        .unwrap();
        let fields = out["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[2], json!({"name": "delete", "type": "long"}));
        assert_eq!(out["ttlInDays"], json!(10));
        assert!(patched(&doc, json!({"name": "other"}))
            .unwrap_err()
            .message
            .contains("'name' is immutable"));
        assert!(patched(&doc, json!({"expressActivation": true}))
            .unwrap_err()
            .message
            .contains("'expressActivation'"));
        assert!(patched(&doc, json!({"sourceSpec": {}}))
            .unwrap_err()
            .message
            .contains("'sourceSpec'"));
        assert!(patched(
            &doc,
            json!({"name": "Sample external audience", "description": "d"})
        )
        .is_ok());
    }

    #[test]
    fn values_are_checked_against_their_types() {
        assert!(FieldType::Number.check("1.5e3").is_ok());
        assert!(FieldType::Number.check("abc").is_err());
        assert!(FieldType::Integer.check("3000000000").is_err());
        assert!(FieldType::Long.check("3000000000").is_ok());
        assert!(FieldType::Date.check("2024-02-30").is_err());
        assert!(FieldType::Date.check("2024-02-29").is_ok());
        assert!(FieldType::DateTime.check("2024-02-29T10:00:00Z").is_ok());
        assert!(FieldType::DateTime.check("yesterday").is_err());
        assert!(FieldType::Boolean.check("TRUE").is_ok());
        assert!(FieldType::Boolean.check("yes").is_err());
        assert!(FieldType::Long.check("").is_ok());
    }

    #[test]
    fn run_window_rules() {
        assert_eq!(
            run_window(&json!({"dataFilterStartTime": 764245635}), 2_000_000_000).unwrap(),
            (764245635, 2_000_000_000)
        );
        assert!(run_window(&json!({}), 10)
            .unwrap_err()
            .message
            .contains("'dataFilterStartTime' is required"));
        assert!(run_window(
            &json!({"dataFilterStartTime": 10, "dataFilterEndTime": 5}),
            10
        )
        .is_err());
        assert!(run_window(&json!({"dataFilterStartTime": "x"}), 10).is_err());
        assert_eq!(
            run_list_params(None, None).unwrap(),
            (20, RunSort::CreatedDesc)
        );
        assert!(run_list_params(Some("41"), None).is_err());
        assert!(run_list_params(None, Some("updatedAt")).is_err());
    }
}
