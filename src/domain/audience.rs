//! The UPS audience: which fields a client owns, their rules, the defaults a new audience gets,
//! and how an audience is rendered.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    lifecycle::Lifecycle,
    limits::{check_chars, check_string_list, json_bytes},
    patch, Caller, Tenant,
};
use crate::{config::Limits, error::ApiError};

/// Fields the server sets. A client may send them back (a PUT of the object just read works);
/// they are ignored.
pub const SYSTEM_FIELDS: &[&str] = &[
    "id",
    "imsOrgId",
    "sandbox",
    "creationTime",
    "updateTime",
    "createEpoch",
    "updateEpoch",
    "_etag",
    "createdBy",
    "lastModifiedBy",
    "dependents",
    "dependencies",
    "definedOn",
    "isSystem",
];

/// Client fields that are fixed once the audience exists.
pub const IMMUTABLE_FIELDS: &[&str] = &["namespace", "audienceId", "type"];

pub const SEGMENT_DEFINITION: &str = "SegmentDefinition";
pub const EXTERNAL_SEGMENT: &str = "ExternalSegment";
/// The namespace of an `ExternalSegment` audience (and of an external audience) by default. It
/// lives here, not in `external`, because the UPS defaults need it and `external` builds on this
/// module.
pub const DEFAULT_NAMESPACE: &str = "CustomerAudienceUpload";
/// The `originName` of every external audience (and of an `ExternalSegment` audience by default).
pub const ORIGIN_NAME: &str = "CUSTOM_UPLOAD";
pub const PROFILE_SCHEMA: &str = "_xdm.context.profile";

/// Client fields that must be strings when present.
const STRING_FIELDS: &[&str] = &[
    "description",
    "namespace",
    "audienceId",
    "originName",
    "mergePolicyId",
    "datasetId",
    "profileInstanceId",
];
/// The string fields bounded by `MAX_ID_CHARS` (identifiers, namespaces, names of things).
const ID_FIELDS: &[&str] = &[
    "namespace",
    "audienceId",
    "originName",
    "mergePolicyId",
    "datasetId",
    "profileInstanceId",
];
/// Client fields that must be objects when present; kept as given.
const OBJECT_FIELDS: &[&str] = &[
    "evaluationInfo",
    "dataGovernancePolicy",
    "linkedAudienceRef",
    "audienceMeta",
];
const EXPRESSION_PARTS: [&str; 3] = ["type", "format", "value"];

/// An audience as stored and served: the client's fields (validated, defaults applied) and the
/// system fields. [`Audience::to_body`] renders it; [`Audience::from_body`] reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Audience {
    pub id: Uuid,
    pub fields: ClientFields,
    pub created_by: String,
    pub last_modified_by: Option<String>,
    pub creation_time: i64,
    pub update_time: i64,
    pub etag: String,
    pub dependencies: Vec<Uuid>,
    pub dependents: Vec<Uuid>,
}

/// The client-owned part of an audience after validation. `doc` holds every client field,
/// known or not, in the order given; the typed copies are what rules and indexes need.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFields {
    pub doc: Map<String, Value>,
    pub name: String,
    pub lifecycle: Lifecycle,
}

impl ClientFields {
    fn str_field(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Value::as_str)
    }
    pub fn audience_id(&self) -> &str {
        self.str_field("audienceId").unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.str_field("namespace").unwrap_or_default()
    }
    pub fn audience_type(&self) -> &str {
        self.str_field("type").unwrap_or(SEGMENT_DEFINITION)
    }
    pub fn description(&self) -> Option<&str> {
        self.str_field("description")
    }
    pub fn origin_name(&self) -> Option<&str> {
        self.str_field("originName")
    }
    pub fn dataset_id(&self) -> Option<&str> {
        self.str_field("datasetId")
    }
    /// `schema.name`; an audience without a schema is a profile audience.
    pub fn schema_name(&self) -> &str {
        self.doc
            .get("schema")
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(PROFILE_SCHEMA)
    }
    /// Whether the expression references other audiences (`inSegment`).
    pub fn has_references(&self) -> bool {
        self.expression_value()
            .is_some_and(|e| !referenced_audiences(e).is_empty())
    }

    /// Checks the server's bounds on validated fields: the length of every stored or indexed
    /// string, the number of labels and of referenced audiences, and the size of the whole.
    pub fn check_bounds(&self, limits: &Limits) -> Result<(), ApiError> {
        self.check_string_bounds(limits).map_err(ApiError::limit)?;
        if let Some(expression) = self.expression_value() {
            referenced_audiences_within(expression, limits.max_expression_references)?;
        }
        let bytes = json_bytes(&self.doc);
        if bytes > limits.max_audience_bytes {
            return Err(ApiError::limit(format!(
                "The audience is {bytes} bytes of JSON; at most {} are allowed.",
                limits.max_audience_bytes
            )));
        }
        Ok(())
    }

    fn check_string_bounds(&self, limits: &Limits) -> Result<(), String> {
        check_chars("name", &self.name, limits.max_name_chars)?;
        if let Some(d) = self.description() {
            check_chars("description", d, limits.max_description_chars)?;
        }
        for key in ID_FIELDS {
            if let Some(v) = self.str_field(key) {
                check_chars(key, v, limits.max_id_chars)?;
            }
        }
        if let Some(Value::String(s)) = self.doc.get("schema").and_then(|s| s.get("name")) {
            check_chars("schema.name", s, limits.max_id_chars)?;
        }
        if let Some(Value::Object(expression)) = self.doc.get("expression") {
            for key in EXPRESSION_PARTS {
                if let Some(Value::String(s)) = expression.get(key) {
                    let max = if key == "value" {
                        limits.max_expression_chars
                    } else {
                        limits.max_id_chars
                    };
                    check_chars(&format!("expression.{key}"), s, max)?;
                }
            }
        }
        if let Some(Value::Array(labels)) = self.doc.get("labels") {
            check_string_list("labels", labels, limits.max_labels, limits.max_id_chars)?;
        }
        Ok(())
    }

    pub fn expression_value(&self) -> Option<&str> {
        self.doc
            .get("expression")
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
    }
}

/// Removes the system fields from a client document.
pub fn strip_system_fields(doc: &mut Map<String, Value>) {
    for key in SYSTEM_FIELDS {
        doc.remove(*key);
    }
}

fn expect_object(value: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_body(format!(
            "The request body must be a JSON object ({what})."
        ))),
    }
}

/// A client document after [`check_fields`]: the fields, the name, the lifecycle if one was sent.
type CheckedFields = (Map<String, Value>, String, Option<Lifecycle>);

fn must_be(key: &str, what: &str) -> ApiError {
    ApiError::bad_body(format!("Field '{key}' must be {what}."))
}

/// Checks the type of every known client field and normalises the lenient forms (a bare schema
/// string, `active`). `name` is required. Unknown fields are kept as given. The checks run field
/// family by field family, so the first problem in this order is the one reported.
fn check_fields(mut doc: Map<String, Value>) -> Result<CheckedFields, ApiError> {
    strip_system_fields(&mut doc);
    let name = check_name(&doc)?;
    check_string_fields(&doc)?;
    check_kept_fields(&doc)?;
    check_type(&doc)?;
    check_labels_and_ttl(&doc)?;
    check_expression(&doc)?;
    normalize_schema(&mut doc)?;
    let lifecycle = check_lifecycle(&doc)?;
    Ok((doc, name, lifecycle))
}

fn check_name(doc: &Map<String, Value>) -> Result<String, ApiError> {
    match doc.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::bad_body("Field 'name' must not be empty.")),
        Some(_) => Err(must_be("name", "a string")),
        None => Err(ApiError::bad_body("Field 'name' is required.")),
    }
}

/// The string fields; `description` may be null, the identity fields may not be blank.
fn check_string_fields(doc: &Map<String, Value>) -> Result<(), ApiError> {
    for key in STRING_FIELDS {
        match doc.get(*key) {
            None | Some(Value::String(_)) => {}
            Some(Value::Null) if *key == "description" => {}
            Some(_) => return Err(must_be(key, "a string")),
        }
    }
    for key in ["namespace", "audienceId"] {
        if let Some(Value::String(s)) = doc.get(key) {
            if s.trim().is_empty() {
                return Err(ApiError::bad_body(format!(
                    "Field '{key}' must not be empty."
                )));
            }
        }
    }
    Ok(())
}

/// The fields kept as given once their type is right: objects, and one boolean.
fn check_kept_fields(doc: &Map<String, Value>) -> Result<(), ApiError> {
    for key in OBJECT_FIELDS {
        if doc.get(*key).is_some_and(|v| !v.is_object()) {
            return Err(must_be(key, "an object"));
        }
    }
    if doc
        .get("overridePerformanceWarnings")
        .is_some_and(|v| !v.is_boolean())
    {
        return Err(must_be("overridePerformanceWarnings", "a boolean"));
    }
    Ok(())
}

fn check_type(doc: &Map<String, Value>) -> Result<(), ApiError> {
    match doc.get("type") {
        Some(v) if !matches!(v.as_str(), Some(SEGMENT_DEFINITION | EXTERNAL_SEGMENT)) => Err(
            ApiError::invalid("Field 'type' must be 'SegmentDefinition' or 'ExternalSegment'."),
        ),
        _ => Ok(()),
    }
}

fn check_labels_and_ttl(doc: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(v) = doc.get("labels") {
        if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            return Err(must_be("labels", "an array of strings"));
        }
    }
    if let Some(v) = doc.get("ttlInDays") {
        if v.as_i64().is_none_or(|n| n < 1) {
            return Err(must_be("ttlInDays", "a positive integer"));
        }
    }
    Ok(())
}

/// The lifecycle the client sent, if any (`active` reads as `published`).
fn check_lifecycle(doc: &Map<String, Value>) -> Result<Option<Lifecycle>, ApiError> {
    match doc.get("lifecycleState") {
        None => Ok(None),
        Some(Value::String(s)) => Lifecycle::parse(s).map(Some),
        Some(_) => Err(ApiError::invalid(
            "Field 'lifecycleState' must be a string.",
        )),
    }
}

fn check_expression(doc: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(v) = doc.get("expression") else {
        return Ok(());
    };
    let Some(expr) = v.as_object() else {
        return Err(must_be("expression", "an object {type, format, value}"));
    };
    for key in EXPRESSION_PARTS {
        match expr.get(key) {
            Some(Value::String(_)) => {}
            Some(_) => return Err(must_be(&format!("expression.{key}"), "a string")),
            None => {
                return Err(ApiError::bad_body(format!(
                    "Field 'expression.{key}' is required."
                )))
            }
        }
    }
    Ok(())
}

/// A bare schema name is accepted and stored as {name}.
fn normalize_schema(doc: &mut Map<String, Value>) -> Result<(), ApiError> {
    match doc.get("schema") {
        None => Ok(()),
        Some(Value::String(s)) => {
            let schema = json!({ "name": s });
            doc.insert("schema".into(), schema);
            Ok(())
        }
        Some(Value::Object(o)) if o.get("name").is_some_and(Value::is_string) => Ok(()),
        Some(_) => Err(must_be(
            "schema",
            "an object with a string 'name' (or a bare name)",
        )),
    }
}

/// The defaults of each audience type, applied to fields the client left out.
fn apply_defaults(doc: &mut Map<String, Value>, id: Uuid) {
    let audience_type = doc
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(SEGMENT_DEFINITION)
        .to_owned();
    let mut default = |key: &str, value: Value| {
        if !doc.contains_key(key) {
            doc.insert(key.to_owned(), value);
        }
    };
    if audience_type == EXTERNAL_SEGMENT {
        default("audienceId", json!(Uuid::new_v4().to_string()));
        default("namespace", json!(DEFAULT_NAMESPACE));
        default("originName", json!(ORIGIN_NAME));
    } else {
        default("audienceId", json!(id.to_string()));
        default("namespace", json!("AEPSegments"));
        default("originName", json!("REAL_TIME_CUSTOMER_PROFILE"));
        default("schema", json!({ "name": PROFILE_SCHEMA }));
        default(
            "evaluationInfo",
            json!({
                "batch": {"enabled": true},
                "continuous": {"enabled": false},
                "synchronous": {"enabled": false}
            }),
        );
    }
}

/// The type a new audience gets when the client does not say: an `audienceId` or `datasetId`
/// without an expression marks an externally generated audience.
fn infer_type(doc: &Map<String, Value>) -> &'static str {
    let external_hint = doc.contains_key("audienceId") || doc.contains_key("datasetId");
    if external_hint && !doc.contains_key("expression") {
        EXTERNAL_SEGMENT
    } else {
        SEGMENT_DEFINITION
    }
}

fn finish(mut doc: Map<String, Value>, name: String, lifecycle: Lifecycle) -> ClientFields {
    doc.insert("lifecycleState".into(), json!(lifecycle.as_str()));
    ClientFields {
        doc,
        name,
        lifecycle,
    }
}

/// Validates the body of a create and fills in the defaults.
pub fn new_fields(body: Value, id: Uuid) -> Result<ClientFields, ApiError> {
    let (mut doc, name, lifecycle) = check_fields(expect_object(body, "an audience")?)?;
    if !doc.contains_key("type") {
        let inferred = infer_type(&doc);
        doc.insert("type".into(), json!(inferred));
    }
    apply_defaults(&mut doc, id);
    Ok(finish(doc, name, lifecycle.unwrap_or(Lifecycle::Published)))
}

/// Validates a full replacement of an audience's client fields. Immutable fields may be sent only
/// with their current value and are kept when left out; the lifecycle stays when left out and
/// otherwise must follow an allowed transition.
pub fn replaced_fields(
    current: &Audience,
    body: Value,
    limits: &Limits,
) -> Result<ClientFields, ApiError> {
    let (mut doc, name, lifecycle) = check_fields(expect_object(body, "an audience")?)?;
    for key in IMMUTABLE_FIELDS {
        let existing = current.fields.doc.get(*key);
        match doc.get(*key) {
            None => {
                if let Some(v) = existing {
                    doc.insert((*key).to_owned(), v.clone());
                }
            }
            Some(sent) if Some(sent) == existing => {}
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "Field '{key}' is immutable and cannot be changed."
                )))
            }
        }
    }
    apply_defaults(&mut doc, current.id);
    let lifecycle = lifecycle.unwrap_or(current.fields.lifecycle);
    current.fields.lifecycle.check_transition(lifecycle)?;
    let fields = finish(doc, name, lifecycle);
    fields.check_bounds(limits)?;
    Ok(fields)
}

/// Applies an RFC 6902 patch to the audience as a client sees it and validates the result as a
/// whole. `test` may read any field; other operations may not touch system or immutable fields.
/// The patch runs under the bounds of [`patch::apply_bounded`].
pub fn patched_fields(
    current: &Audience,
    tenant: &Tenant,
    ops: Value,
    limits: &Limits,
) -> Result<ClientFields, ApiError> {
    let Value::Array(raw_ops) = &ops else {
        return Err(ApiError::bad_body(
            "The request body must be a JSON Patch array of operations.",
        ));
    };
    if raw_ops.len() > limits.max_patch_operations {
        return Err(ApiError::limit(format!(
            "The JSON Patch holds {} operations; at most {} are allowed.",
            raw_ops.len(),
            limits.max_patch_operations
        )));
    }
    for (index, op) in raw_ops.iter().enumerate() {
        check_patch_operation(index, op)?;
    }
    let patch: json_patch::Patch = serde_json::from_value(ops)
        .map_err(|e| ApiError::bad_body(format!("The JSON Patch is malformed: {e}")))?;
    let mut doc = current.to_body(tenant);
    patch::apply_bounded(&mut doc, &patch, limits)?;
    let (doc, name, lifecycle) = check_fields(expect_object(doc, "an audience")?)?;
    let lifecycle = lifecycle.unwrap_or(current.fields.lifecycle);
    current.fields.lifecycle.check_transition(lifecycle)?;
    let fields = finish(doc, name, lifecycle);
    fields.check_bounds(limits)?;
    Ok(fields)
}

fn check_patch_operation(index: usize, op: &Value) -> Result<(), ApiError> {
    let Some(obj) = op.as_object() else {
        return Err(ApiError::bad_body(format!(
            "JSON Patch operation {index} must be an object."
        )));
    };
    let kind = obj.get("op").and_then(Value::as_str).unwrap_or_default();
    if kind == "test" {
        return Ok(());
    }
    let mut touched = vec![obj.get("path")];
    if kind == "move" {
        touched.push(obj.get("from"));
    }
    for path in touched.into_iter().flatten().filter_map(Value::as_str) {
        let top = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .replace("~1", "/")
            .replace("~0", "~");
        if path.is_empty() {
            return Err(ApiError::invalid(format!(
                "JSON Patch operation {index} cannot replace the whole audience; patch its fields."
            )));
        }
        if SYSTEM_FIELDS.contains(&top.as_str()) {
            return Err(ApiError::invalid(format!(
                "JSON Patch operation {index}: field '{top}' is set by the server and cannot be changed."
            )));
        }
        if IMMUTABLE_FIELDS.contains(&top.as_str()) {
            return Err(ApiError::invalid(format!(
                "JSON Patch operation {index}: field '{top}' is immutable and cannot be changed."
            )));
        }
    }
    Ok(())
}

/// Audience ids named by `inSegment("<id>")` in a PQL expression, in order, without repeats.
pub fn referenced_audiences(expression: &str) -> Vec<String> {
    scan_references(expression, usize::MAX).unwrap_or_default()
}

/// [`referenced_audiences`], refused once more than `max` distinct audiences are named.
pub fn referenced_audiences_within(expression: &str, max: usize) -> Result<Vec<String>, ApiError> {
    scan_references(expression, max).ok_or_else(|| {
        ApiError::limit(format!(
            "Field 'expression.value' references more than {max} distinct audiences with inSegment(...); at most {max} are allowed."
        ))
    })
}

/// One pass over the expression, with the ids seen kept in a set, so its cost is linear in its
/// length whatever it holds. `None` as soon as more than `max` distinct ids are found.
fn scan_references(expression: &str, max: usize) -> Option<Vec<String>> {
    const CALL: &str = "inSegment(";
    let mut found: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut rest = expression;
    while let Some(pos) = rest.find(CALL) {
        rest = &rest[pos + CALL.len()..];
        let trimmed = rest.trim_start();
        let Some(quote) = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let inner = &trimmed[1..];
        // Unclosed: no quote of this kind follows, so this happens once per kind at most.
        let Some(end) = inner.find(quote) else {
            continue;
        };
        let id = inner[..end].trim();
        if !id.is_empty() && seen.insert(id) {
            if found.len() == max {
                return None;
            }
            found.push(id.to_owned());
        }
        rest = &inner[end + 1..];
    }
    Some(found)
}

/// A fresh `_etag` value, quoted as the real service quotes it. The last group carries the epoch
/// second of the write, as Adobe's do.
pub fn new_etag(now_ms: i64) -> String {
    let random = Uuid::new_v4().simple().to_string();
    format!(
        "\"{}-0000-0200-0000-{:08x}0000\"",
        &random[..8],
        now_ms / 1000
    )
}

fn profile_union() -> Value {
    json!([{
        "meta:resourceType": "unions",
        "meta:containerId": "tenant",
        "$ref": "https://ns.adobe.com/xdm/context/profile__union"
    }])
}

impl Audience {
    /// A new audience, created by `caller` at `now` (the clock's time).
    pub fn create(
        id: Uuid,
        fields: ClientFields,
        caller: &Caller,
        dependencies: Vec<Uuid>,
        now: DateTime<Utc>,
    ) -> Self {
        let now = now.timestamp_millis();
        Audience {
            id,
            fields,
            created_by: caller.user_id.clone(),
            last_modified_by: None,
            creation_time: now,
            update_time: now,
            etag: new_etag(now),
            dependencies,
            dependents: Vec::new(),
        }
    }

    /// The same audience with new client fields, stamped as a new write by `caller` at `now`.
    pub fn updated(
        &self,
        fields: ClientFields,
        caller: &Caller,
        dependencies: Vec<Uuid>,
        now: DateTime<Utc>,
    ) -> Self {
        Audience {
            last_modified_by: Some(caller.user_id.clone()),
            dependencies,
            ..self.rewritten(fields, now)
        }
    }

    /// The same audience with new client fields, written at `now` by the server itself (its last
    /// modifier stays): a new `_etag`, and an update time that never goes back.
    pub fn rewritten(&self, fields: ClientFields, now: DateTime<Utc>) -> Self {
        let update_time = now.timestamp_millis().max(self.update_time);
        Audience {
            fields,
            update_time,
            etag: new_etag(update_time),
            ..self.clone()
        }
    }

    /// The audience as the API shows it: identity first, then the client's fields, then the
    /// system fields.
    pub fn to_body(&self, tenant: &Tenant) -> Value {
        let mut out = Map::with_capacity(self.fields.doc.len() + 16);
        out.insert("id".into(), json!(self.id));
        out.insert("imsOrgId".into(), json!(tenant.org_id()));
        out.insert("sandbox".into(), tenant.sandbox().to_json());
        for (k, v) in &self.fields.doc {
            out.insert(k.clone(), v.clone());
        }
        out.insert("isSystem".into(), json!(false));
        if self.fields.audience_type() == SEGMENT_DEFINITION {
            out.insert("definedOn".into(), profile_union());
        }
        out.insert("dependencies".into(), json!(self.dependencies));
        out.insert("dependents".into(), json!(self.dependents));
        out.insert("createdBy".into(), json!(self.created_by));
        if let Some(by) = &self.last_modified_by {
            out.insert("lastModifiedBy".into(), json!(by));
        }
        out.insert("creationTime".into(), json!(self.creation_time));
        out.insert("updateTime".into(), json!(self.update_time));
        out.insert("createEpoch".into(), json!(self.creation_time / 1000));
        out.insert("updateEpoch".into(), json!(self.update_time / 1000));
        out.insert("_etag".into(), json!(self.etag));
        Value::Object(out)
    }

    /// Reads back a stored body. The body was written by [`Audience::to_body`], so a malformed
    /// one is a fault of the store, not of the client.
    pub fn from_body(body: Value) -> anyhow::Result<Self> {
        let Value::Object(mut map) = body else {
            anyhow::bail!("stored audience is not an object");
        };
        let id: Uuid = serde_json::from_value(map.remove("id").unwrap_or_default())?;
        let uuids = |v: Option<Value>| -> anyhow::Result<Vec<Uuid>> {
            Ok(serde_json::from_value(v.unwrap_or_else(|| json!([])))?)
        };
        let dependencies = uuids(map.remove("dependencies"))?;
        let dependents = uuids(map.remove("dependents"))?;
        let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_owned));
        let created_by = text(map.remove("createdBy")).unwrap_or_default();
        let last_modified_by = text(map.remove("lastModifiedBy"));
        let etag = text(map.remove("_etag")).unwrap_or_default();
        let int = |v: Option<Value>| v.and_then(|v| v.as_i64()).unwrap_or_default();
        let creation_time = int(map.remove("creationTime"));
        let update_time = int(map.remove("updateTime"));
        strip_system_fields(&mut map);
        let name = text(map.get("name").cloned()).unwrap_or_default();
        let lifecycle = match map.get("lifecycleState").and_then(Value::as_str) {
            None => Lifecycle::Published,
            Some(name) => Lifecycle::from_name(name)
                .ok_or_else(|| anyhow::anyhow!("stored lifecycleState '{name}' is not a state"))?,
        };
        Ok(Audience {
            id,
            fields: ClientFields {
                doc: map,
                name,
                lifecycle,
            },
            created_by,
            last_modified_by,
            creation_time,
            update_time,
            etag,
            dependencies,
            dependents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sandbox;

    fn tenant() -> Tenant {
        Tenant::new(
            "ORG@AdobeOrg".into(),
            Sandbox {
                sandbox_id: Uuid::nil(),
                name: "prod".into(),
                sandbox_type: "production".into(),
                is_default: true,
            },
        )
    }

    fn limits() -> Limits {
        Limits::default()
    }

    fn caller() -> Caller {
        Caller {
            user_id: "user@AdobeID".into(),
        }
    }

    #[test]
    fn platform_audience_gets_its_defaults() {
        let id = Uuid::new_v4();
        let f = new_fields(
            json!({"name": "n", "expression": {"type":"PQL","format":"pql/text","value":"x"}}),
            id,
        )
        .unwrap();
        assert_eq!(f.audience_type(), SEGMENT_DEFINITION);
        assert_eq!(f.audience_id(), id.to_string());
        assert_eq!(f.namespace(), "AEPSegments");
        assert_eq!(f.origin_name(), Some("REAL_TIME_CUSTOMER_PROFILE"));
        assert_eq!(f.schema_name(), PROFILE_SCHEMA);
        assert_eq!(f.lifecycle, Lifecycle::Published);
        assert_eq!(f.doc["evaluationInfo"]["batch"]["enabled"], json!(true));
    }

    #[test]
    fn external_audience_is_inferred_and_keeps_its_id() {
        let f = new_fields(
            json!({"name": "n", "audienceId": "ext-1", "namespace": "aam"}),
            Uuid::new_v4(),
        )
        .unwrap();
        assert_eq!(f.audience_type(), EXTERNAL_SEGMENT);
        assert_eq!(f.audience_id(), "ext-1");
        assert_eq!(f.origin_name(), Some("CUSTOM_UPLOAD"));
        assert!(!f.doc.contains_key("schema"));
    }

    #[test]
    fn bare_schema_string_becomes_an_object_and_active_is_published() {
        let f = new_fields(json!({"name": "n", "schema": "_xdm.context.experienceevent", "lifecycleState": "active"}), Uuid::new_v4()).unwrap();
        assert_eq!(
            f.doc["schema"],
            json!({"name": "_xdm.context.experienceevent"})
        );
        assert_eq!(f.doc["lifecycleState"], json!("published"));
    }

    #[test]
    fn bad_fields_name_the_field() {
        let cases = [
            (json!({}), "'name' is required"),
            (json!({"name": 3}), "'name' must be a string"),
            (json!({"name": "n", "labels": [1]}), "'labels'"),
            (json!({"name": "n", "ttlInDays": 0}), "'ttlInDays'"),
            (
                json!({"name": "n", "expression": {"type": "PQL"}}),
                "'expression.format'",
            ),
            (json!({"name": "n", "type": "Other"}), "'type'"),
            (
                json!({"name": "n", "lifecycleState": "deleted"}),
                "'lifecycleState'",
            ),
            (json!([1]), "JSON object"),
        ];
        for (body, needle) in cases {
            let err = new_fields(body.clone(), Uuid::new_v4()).unwrap_err();
            assert!(err.message.contains(needle), "{body}: {}", err.message);
        }
    }

    #[test]
    fn system_fields_sent_by_a_client_are_ignored_and_unknown_fields_kept() {
        let f = new_fields(
            json!({"name": "n", "id": "x", "_etag": "y", "creationTime": 1, "custom": {"a": 1}}),
            Uuid::new_v4(),
        )
        .unwrap();
        assert!(!f.doc.contains_key("id") && !f.doc.contains_key("_etag"));
        assert_eq!(f.doc["custom"], json!({"a": 1}));
    }

    #[test]
    fn body_round_trips() {
        let id = Uuid::new_v4();
        let f = new_fields(json!({"name": "n", "labels": ["core/C1"]}), id).unwrap();
        let a = Audience::create(id, f, &caller(), vec![], chrono::Utc::now());
        let back = Audience::from_body(a.to_body(&tenant())).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn put_refuses_changed_immutables_and_keeps_them_when_absent() {
        let id = Uuid::new_v4();
        let a = Audience::create(
            id,
            new_fields(
                json!({"name": "n", "audienceId": "e", "namespace": "aam"}),
                id,
            )
            .unwrap(),
            &caller(),
            vec![],
            chrono::Utc::now(),
        );
        let err =
            replaced_fields(&a, json!({"name": "m", "namespace": "other"}), &limits()).unwrap_err();
        assert!(err.message.contains("'namespace' is immutable"));
        let f = replaced_fields(&a, json!({"name": "m"}), &limits()).unwrap();
        assert_eq!(
            (f.namespace(), f.audience_id(), f.audience_type()),
            ("aam", "e", EXTERNAL_SEGMENT)
        );
    }

    #[test]
    fn patch_refuses_system_and_immutable_paths_but_allows_test() {
        let id = Uuid::new_v4();
        let a = Audience::create(
            id,
            new_fields(json!({"name": "n"}), id).unwrap(),
            &caller(),
            vec![],
            chrono::Utc::now(),
        );
        for path in ["/id", "/_etag", "/namespace", "/audienceId/x", "/type", ""] {
            let err = patched_fields(
                &a,
                &tenant(),
                json!([{"op": "replace", "path": path, "value": "v"}]),
                &limits(),
            )
            .unwrap_err();
            assert_eq!(err.code, crate::error::Code::AudienceInvalid, "{path}");
        }
        let ok = patched_fields(&a, &tenant(), json!([{"op": "test", "path": "/id", "value": id}, {"op": "add", "path": "/description", "value": "d"}]), &limits()).unwrap();
        assert_eq!(ok.description(), Some("d"));
        let failed = patched_fields(
            &a,
            &tenant(),
            json!([{"op": "test", "path": "/name", "value": "other"}]),
            &limits(),
        )
        .unwrap_err();
        assert!(failed.message.contains("test failed"));
    }

    #[test]
    fn in_segment_references_are_found_once_each() {
        let refs = referenced_audiences(r#"inSegment("a") and inSegment( 'b' ) or inSegment("a")"#);
        assert_eq!(refs, vec!["a".to_owned(), "b".to_owned()]);
        assert!(referenced_audiences("workAddress.country = \"US\"").is_empty());
    }

    #[test]
    fn every_stored_string_is_bounded_and_named() {
        let l = Limits {
            max_name_chars: 5,
            max_description_chars: 6,
            max_id_chars: 4,
            max_expression_chars: 10,
            max_labels: 2,
            ..Limits::default()
        };
        let expr = |key: &str, v: &str| {
            let mut e = json!({"type": "PQL", "format": "pql", "value": "x"});
            e[key] = json!(v);
            json!({"name": "n", "expression": e})
        };
        let cases = [
            (
                json!({"name": "abcdef"}),
                "Field 'name' is 6 characters long; at most 5 are allowed.",
            ),
            (
                json!({"name": "n", "description": "abcdefg"}),
                "Field 'description' is 7 characters long; at most 6 are allowed.",
            ),
            (
                json!({"name": "n", "namespace": "abcde"}),
                "Field 'namespace' is 5 characters long; at most 4 are allowed.",
            ),
            (
                json!({"name": "n", "audienceId": "abcde"}),
                "Field 'audienceId' is 5 characters long; at most 4 are allowed.",
            ),
            (
                json!({"name": "n", "originName": "abcde"}),
                "Field 'originName' is 5 characters long; at most 4 are allowed.",
            ),
            (
                json!({"name": "n", "mergePolicyId": "abcde"}),
                "Field 'mergePolicyId' is 5 characters long; at most 4 are allowed.",
            ),
            (
                json!({"name": "n", "datasetId": "abcde"}),
                "Field 'datasetId' is 5 characters long; at most 4 are allowed.",
            ),
            (
                json!({"name": "n", "profileInstanceId": "abcde"}),
                "Field 'profileInstanceId' is 5 characters long; at most 4 are allowed.",
            ),
            (
                json!({"name": "n", "schema": "abcde"}),
                "Field 'schema.name' is 5 characters long; at most 4 are allowed.",
            ),
            (
                expr("type", "abcde"),
                "Field 'expression.type' is 5 characters long; at most 4 are allowed.",
            ),
            (
                expr("format", "abcde"),
                "Field 'expression.format' is 5 characters long; at most 4 are allowed.",
            ),
            (
                expr("value", "abcdefghijk"),
                "Field 'expression.value' is 11 characters long; at most 10 are allowed.",
            ),
            (
                json!({"name": "n", "labels": ["a", "b", "c"]}),
                "Field 'labels' holds 3 entries; at most 2 are allowed.",
            ),
            (
                json!({"name": "n", "labels": ["a", "abcde"]}),
                "Field 'labels[1]' is 5 characters long; at most 4 are allowed.",
            ),
        ];
        for (body, message) in cases {
            let mut f = new_fields(body.clone(), Uuid::new_v4()).unwrap();
            // The defaults are long ids; only the field under test is bounded here.
            for key in ["namespace", "audienceId", "originName", "schema"] {
                if body.get(key).is_none() {
                    f.doc.remove(key);
                }
            }
            let err = f.check_bounds(&l).unwrap_err();
            assert_eq!(err.code, crate::error::Code::LimitExceeded, "{body}");
            assert_eq!(err.message, message, "{body}");
        }
    }

    #[test]
    fn the_whole_audience_is_bounded_in_bytes() {
        let l = Limits {
            max_audience_bytes: 1000,
            ..Limits::default()
        };
        let f = new_fields(
            json!({"name": "n", "custom": "x".repeat(1000)}),
            Uuid::new_v4(),
        )
        .unwrap();
        let err = f.check_bounds(&l).unwrap_err();
        assert!(
            err.message.starts_with("The audience is ")
                && err
                    .message
                    .ends_with(" bytes of JSON; at most 1000 are allowed."),
            "{}",
            err.message
        );
        let f = new_fields(
            json!({"name": "n", "custom": "x".repeat(100)}),
            Uuid::new_v4(),
        )
        .unwrap();
        assert!(f.check_bounds(&l).is_ok());
    }

    #[test]
    fn references_are_counted_in_one_pass_and_bounded() {
        // The issue's attack: ~100k distinct references (quadratic before).
        let expression: String = (0..100_000)
            .map(|i| format!("inSegment(\"{i}\") or "))
            .collect();
        let err = referenced_audiences_within(&expression, 100).unwrap_err();
        assert_eq!(err.code, crate::error::Code::LimitExceeded);
        assert_eq!(
            err.message,
            "Field 'expression.value' references more than 100 distinct audiences with inSegment(...); at most 100 are allowed."
        );
        assert_eq!(referenced_audiences(&expression).len(), 100_000);
        // Repeats count once; exactly the bound passes.
        let hundred: String = (0..200)
            .map(|i| format!("inSegment('{}')", i % 100))
            .collect();
        assert_eq!(
            referenced_audiences_within(&hundred, 100).unwrap().len(),
            100
        );
        // A quote that never closes names nothing; references after it still count.
        assert_eq!(
            referenced_audiences(r#"inSegment('a') and inSegment("b and inSegment('c')"#),
            vec!["a".to_owned(), "c".to_owned()]
        );
    }

    #[test]
    fn etag_is_quoted_and_changes() {
        let a = new_etag(1_650_374_573_000);
        assert!(a.starts_with('"') && a.ends_with("625eb7ad0000\""), "{a}");
        assert_ne!(a, new_etag(1_650_374_573_000));
    }
}
