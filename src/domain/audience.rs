//! The UPS audience: which fields a client owns, their rules, the defaults a new audience gets,
//! and how an audience is rendered.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{lifecycle::Lifecycle, Caller, Tenant};
use crate::error::ApiError;

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
pub const PROFILE_SCHEMA: &str = "_xdm.context.profile";
pub const DEFAULT_EXTERNAL_NAMESPACE: &str = "CustomerAudienceUpload";

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

/// Checks the type of every known client field and normalises the lenient forms (a bare schema
/// string, `active`). `name` is required. Unknown fields are kept as given.
fn check_fields(mut doc: Map<String, Value>) -> Result<CheckedFields, ApiError> {
    strip_system_fields(&mut doc);
    let name = match doc.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::bad_body("Field 'name' must not be empty."))
        }
        Some(_) => return Err(ApiError::bad_body("Field 'name' must be a string.")),
        None => return Err(ApiError::bad_body("Field 'name' is required.")),
    };
    for key in [
        "description",
        "namespace",
        "audienceId",
        "originName",
        "mergePolicyId",
        "datasetId",
        "profileInstanceId",
    ] {
        match doc.get(key) {
            None | Some(Value::String(_)) => {}
            Some(Value::Null) if key == "description" => {}
            Some(_) => {
                return Err(ApiError::bad_body(format!(
                    "Field '{key}' must be a string."
                )))
            }
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
    for key in [
        "evaluationInfo",
        "dataGovernancePolicy",
        "linkedAudienceRef",
        "audienceMeta",
    ] {
        match doc.get(key) {
            None | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(ApiError::bad_body(format!(
                    "Field '{key}' must be an object."
                )))
            }
        }
    }
    if let Some(v) = doc.get("overridePerformanceWarnings") {
        if !v.is_boolean() {
            return Err(ApiError::bad_body(
                "Field 'overridePerformanceWarnings' must be a boolean.",
            ));
        }
    }
    if let Some(v) = doc.get("type") {
        match v.as_str() {
            Some(SEGMENT_DEFINITION | EXTERNAL_SEGMENT) => {}
            _ => {
                return Err(ApiError::invalid(
                    "Field 'type' must be 'SegmentDefinition' or 'ExternalSegment'.",
                ))
            }
        }
    }
    if let Some(v) = doc.get("labels") {
        let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(ApiError::bad_body(
                "Field 'labels' must be an array of strings.",
            ));
        }
    }
    if let Some(v) = doc.get("ttlInDays") {
        match v.as_i64() {
            Some(n) if n >= 1 => {}
            _ => {
                return Err(ApiError::bad_body(
                    "Field 'ttlInDays' must be a positive integer.",
                ))
            }
        }
    }
    if let Some(v) = doc.get("expression") {
        let Some(expr) = v.as_object() else {
            return Err(ApiError::bad_body(
                "Field 'expression' must be an object {type, format, value}.",
            ));
        };
        for key in ["type", "format", "value"] {
            match expr.get(key) {
                Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(ApiError::bad_body(format!(
                        "Field 'expression.{key}' must be a string."
                    )))
                }
                None => {
                    return Err(ApiError::bad_body(format!(
                        "Field 'expression.{key}' is required."
                    )))
                }
            }
        }
    }
    // A bare schema name is accepted and stored as {name}.
    match doc.get("schema").cloned() {
        None => {}
        Some(Value::String(s)) => {
            doc.insert("schema".into(), json!({ "name": s }));
        }
        Some(Value::Object(o)) if o.get("name").is_some_and(Value::is_string) => {}
        Some(_) => {
            return Err(ApiError::bad_body(
                "Field 'schema' must be an object with a string 'name' (or a bare name).",
            ))
        }
    }
    let lifecycle = match doc.get("lifecycleState") {
        None => None,
        Some(Value::String(s)) => Some(Lifecycle::parse(s)?),
        Some(_) => {
            return Err(ApiError::invalid(
                "Field 'lifecycleState' must be a string.",
            ))
        }
    };
    Ok((doc, name, lifecycle))
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
        default("namespace", json!(DEFAULT_EXTERNAL_NAMESPACE));
        default("originName", json!("CUSTOM_UPLOAD"));
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
pub fn replaced_fields(current: &Audience, body: Value) -> Result<ClientFields, ApiError> {
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
    Ok(finish(doc, name, lifecycle))
}

/// Applies an RFC 6902 patch to the audience as a client sees it and validates the result as a
/// whole. `test` may read any field; other operations may not touch system or immutable fields.
pub fn patched_fields(
    current: &Audience,
    tenant: &Tenant,
    ops: Value,
) -> Result<ClientFields, ApiError> {
    let Value::Array(raw_ops) = &ops else {
        return Err(ApiError::bad_body(
            "The request body must be a JSON Patch array of operations.",
        ));
    };
    for (index, op) in raw_ops.iter().enumerate() {
        check_patch_operation(index, op)?;
    }
    let patch: json_patch::Patch = serde_json::from_value(ops)
        .map_err(|e| ApiError::bad_body(format!("The JSON Patch is malformed: {e}")))?;
    let mut doc = current.to_body(tenant);
    json_patch::patch(&mut doc, &patch).map_err(|e| {
        let what = match e.kind {
            json_patch::PatchErrorKind::TestFailed => "the test failed".to_owned(),
            ref other => other.to_string(),
        };
        ApiError::invalid(format!(
            "JSON Patch operation {} failed: {what}",
            e.operation
        ))
    })?;
    let (doc, name, lifecycle) = check_fields(expect_object(doc, "an audience")?)?;
    let lifecycle = lifecycle.unwrap_or(current.fields.lifecycle);
    current.fields.lifecycle.check_transition(lifecycle)?;
    Ok(finish(doc, name, lifecycle))
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
    let mut found: Vec<String> = Vec::new();
    let mut rest = expression;
    while let Some(pos) = rest.find("inSegment(") {
        rest = &rest[pos + "inSegment(".len()..];
        let trimmed = rest.trim_start();
        let Some(quote) = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let inner = &trimmed[1..];
        if let Some(end) = inner.find(quote) {
            let id = inner[..end].trim().to_owned();
            if !id.is_empty() && !found.contains(&id) {
                found.push(id);
            }
            rest = &inner[end + 1..];
        }
    }
    found
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

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn profile_union() -> Value {
    json!([{
        "meta:resourceType": "unions",
        "meta:containerId": "tenant",
        "$ref": "https://ns.adobe.com/xdm/context/profile__union"
    }])
}

impl Audience {
    pub fn create(
        id: Uuid,
        fields: ClientFields,
        caller: &Caller,
        dependencies: Vec<Uuid>,
    ) -> Self {
        let now = now_ms();
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

    /// The same audience with new client fields, stamped as a new write by `caller`.
    pub fn updated(&self, fields: ClientFields, caller: &Caller, dependencies: Vec<Uuid>) -> Self {
        let now = now_ms().max(self.update_time);
        Audience {
            fields,
            last_modified_by: Some(caller.user_id.clone()),
            update_time: now,
            etag: new_etag(now),
            dependencies,
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
        let lifecycle = map
            .get("lifecycleState")
            .and_then(Value::as_str)
            .map(Lifecycle::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("stored lifecycle: {e}"))?
            .unwrap_or(Lifecycle::Published);
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
        let a = Audience::create(id, f, &caller(), vec![]);
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
        );
        let err = replaced_fields(&a, json!({"name": "m", "namespace": "other"})).unwrap_err();
        assert!(err.message.contains("'namespace' is immutable"));
        let f = replaced_fields(&a, json!({"name": "m"})).unwrap();
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
        );
        for path in ["/id", "/_etag", "/namespace", "/audienceId/x", "/type", ""] {
            let err = patched_fields(
                &a,
                &tenant(),
                json!([{"op": "replace", "path": path, "value": "v"}]),
            )
            .unwrap_err();
            assert_eq!(err.code, crate::error::Code::AudienceInvalid, "{path}");
        }
        let ok = patched_fields(&a, &tenant(), json!([{"op": "test", "path": "/id", "value": id}, {"op": "add", "path": "/description", "value": "d"}])).unwrap();
        assert_eq!(ok.description(), Some("d"));
        let failed = patched_fields(
            &a,
            &tenant(),
            json!([{"op": "test", "path": "/name", "value": "other"}]),
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
    fn etag_is_quoted_and_changes() {
        let a = new_etag(1_650_374_573_000);
        assert!(a.starts_with('"') && a.ends_with("625eb7ad0000\""), "{a}");
        assert_ne!(a, new_etag(1_650_374_573_000));
    }
}
