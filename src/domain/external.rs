//! External audiences (AIS): the requests a client sends (a create, a PATCH, a meta-only create),
//! read into the types the OpenAPI document describes, and the rules that turn them into the
//! normalised definition ([`ExternalAudienceSpec`]). The normalised definition is the source of
//! truth: it is what `operationDetails` shows, what the store keeps, what a run reads (fields and
//! source) and what the UPS audience follows ([`ExternalAudienceSpec::copy_to_ups`]).
//!
//! Requests are read with serde: a value of the wrong type is refused naming the field by its
//! path (`fields[2].type`); the rules serde cannot say (required, non-empty, bounds, exactly one
//! identity, the landing-zone path) are checked by [`normalize`], each naming its field too.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{
    de::{self, DeserializeOwned, Unexpected, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    audience::{self, Audience, ClientFields, DEFAULT_NAMESPACE, EXTERNAL_SEGMENT, ORIGIN_NAME},
    lifecycle::Lifecycle,
    limits::{check_chars, check_strings},
    Caller,
};
use crate::{config::Limits, error::ApiError};

pub const MAX_FIELDS: usize = 41;
pub const DEFAULT_TTL_DAYS: i64 = 30;
pub const MAX_TTL_DAYS: i64 = 90;
/// The cloud type of a source that names none.
pub const DEFAULT_CLOUD_TYPE: CloudType = CloudType::Dlz;
/// The fields a PATCH may change.
pub const PATCHABLE: &[&str] = &["description", "labels", "fields", "ttlInDays"];
/// Fields a PATCH may repeat only with their current value.
pub const IMMUTABLE: &[&str] = &["name", "expressActivation"];
/// Characters of a refusal's explanation at most (serde's messages quote the value refused).
const EXPLANATION_CHARS: usize = 300;

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::ais_invalid(msg)
}

named_enum! {
    // Stored in `external_audiences.state` (CHECK).
    /// An external audience is `creating` (its name and customAudienceId reserved, invisible to
    /// the API) until the worker created its UPS audience.
    pub enum ExternalState("external audience state") {
        Creating = "creating",
        Ready = "ready",
    }
}

named_enum! {
    // Stored in `ais_operations.status` (CHECK).
    /// `PROCESSING` until the worker created the audience (`SUCCESS`) or could not (`FAILED`).
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum OperationStatus("operation status") {
        Processing = "PROCESSING",
        Success = "SUCCESS",
        Failed = "FAILED",
    }
}

named_enum! {
    /// The type a declared column's values must fit.
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum FieldType("field type") {
        String = "string",
        Number = "number",
        Long = "long",
        Integer = "integer",
        Date = "date",
        DateTime = "datetime",
        Boolean = "boolean",
    }
}

named_enum! {
    /// Where a source's files are: S3, DLZ, GCS, SFTP or Azure; a run reads the blob
    /// `<cloudType>/<path>` of its own sandbox's landing zone.
    #[derive(Serialize, Deserialize, ToSchema)]
    pub enum CloudType("cloud type") {
        S3 = "S3",
        #[serde(rename = "DLZ")]
        Dlz = "DLZ",
        #[serde(rename = "GCS")]
        Gcs = "GCS",
        #[serde(rename = "SFTP")]
        Sftp = "SFTP",
        Azure = "Azure",
    }
}

impl CloudType {
    /// Whether a source of this cloud type needs a `baseConnectionId`.
    pub fn needs_connection(self) -> bool {
        matches!(self, CloudType::S3 | CloudType::Gcs | CloudType::Sftp)
    }
}

/// `file` (the default) or `folder` (every `.csv` directly in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Folder,
}

/// `Cloud Storage`, the one source type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SourceType {
    #[serde(rename = "Cloud Storage")]
    CloudStorage,
}

/// `people`, the one audience type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalAudienceType {
    People,
}

/// `CUSTOM_UPLOAD`, the one origin of an external audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OriginName {
    CustomUpload,
}

impl FieldType {
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

// ---------------------------------------------------------------------------------------------
// Reading request bodies

/// Reads a request body into `T`. A value of the wrong type is a 400 that names the field by its
/// path and says what was expected.
pub(crate) fn from_body<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    read_body(body, |path| path.to_owned())
}

/// [`from_body`], with the path of a refused field shown as `show_path` says.
fn read_body<T: DeserializeOwned>(
    body: Value,
    show_path: impl Fn(&str) -> String,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let explanation = e.inner().to_string();
        let explanation: String = match explanation.char_indices().nth(EXPLANATION_CHARS) {
            Some((end, _)) => format!("{}…", &explanation[..end]),
            None => explanation,
        };
        invalid(format!(
            "Field '{}': {explanation}.",
            show_path(&e.path().to_string())
        ))
    })
}

/// `ttlInDays` as a client may send it: a whole number of days from 1 to 90, or the same as a
/// numeric string (`"40"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlDays(pub i64);

impl<'de> Deserialize<'de> for TtlDays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TtlVisitor)
    }
}

struct TtlVisitor;

impl TtlVisitor {
    fn days<E: de::Error>(&self, n: Option<i64>, got: Unexpected<'_>) -> Result<TtlDays, E> {
        match n {
            Some(n) if (1..=MAX_TTL_DAYS).contains(&n) => Ok(TtlDays(n)),
            _ => Err(E::invalid_value(got, self)),
        }
    }
}

impl Visitor<'_> for TtlVisitor {
    type Value = TtlDays;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a whole number of days from 1 to {MAX_TTL_DAYS} (a number or a numeric string)"
        )
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<TtlDays, E> {
        self.days(Some(n), Unexpected::Signed(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<TtlDays, E> {
        self.days(i64::try_from(n).ok(), Unexpected::Unsigned(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<TtlDays, E> {
        self.days(s.trim().parse().ok(), Unexpected::Str(s))
    }
}

/// A field of a PATCH: left out, sent as `null` (removed, or back to its default), or sent with a
/// value.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Change<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map_or(Change::Clear, Change::Set))
    }
}

impl<T> Change<T> {
    fn apply(self, current: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *current = None,
            Change::Set(v) => *current = Some(v),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The create request and the normalised definition

/// The create request of an external audience, as a client sends it. Unknown fields are dropped.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct ExternalAudienceRequest {
    #[schema(value_type = String, required)]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Unique in the sandbox when given.
    pub custom_audience_id: Option<String>,
    /// 1 to 41 fields; exactly one carries `identityNs`.
    #[schema(value_type = Vec<FieldRequest>, required)]
    pub fields: Option<Vec<FieldRequest>>,
    /// `{"params": {...}}`; a flat object of the same fields (the older form) is accepted too.
    #[schema(value_type = SourceSpecRequest, required)]
    pub source_spec: Option<SourceSpecRequest>,
    /// 1..90, default 30; a numeric string such as `"40"` is accepted.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 90)]
    pub ttl_in_days: Option<TtlDays>,
    /// `people` (the default).
    pub audience_type: Option<ExternalAudienceType>,
    #[schema(value_type = OriginName, required)]
    pub origin_name: Option<OriginName>,
    /// Default `CustomerAudienceUpload`.
    pub namespace: Option<String>,
    pub labels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// Default false; immutable.
    pub express_activation: Option<bool>,
}

/// A declared column of the source file, as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "an object {name, type, identityNs?, labels?}"
)]
pub struct FieldRequest {
    #[schema(value_type = String, required)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = FieldType, required)]
    pub field_type: Option<FieldType>,
    /// Exactly one field carries it: the identity column.
    pub identity_ns: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// A create request's `sourceSpec`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(expecting = "an object")]
pub struct SourceSpecRequest {
    #[schema(value_type = SourceParamsRequest, required)]
    pub params: Option<SourceParamsRequest>,
    /// Sent in the flat form (the fields beside `params`'s place): refusals name
    /// `sourceSpec.<field>`.
    #[serde(skip)]
    pub flat: bool,
}

/// `sourceSpec.params` as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct SourceParamsRequest {
    /// A name in the sandbox's landing zone, relative to `<cloudType or DLZ>/`: Adobe's and
    /// Azure's naming rules (no `..`, `.`, `\`, absolute path or encoded traversal), no spaces.
    #[schema(value_type = String, required)]
    pub path: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<SourceKind>,
    pub source_type: Option<SourceType>,
    pub cloud_type: Option<CloudType>,
    /// Required for S3, GCS and SFTP.
    pub base_connection_id: Option<String>,
}

impl ExternalAudienceRequest {
    /// Reads a create request. The flat form of `sourceSpec` is read as the `params` form.
    pub fn from_body(mut body: Value) -> Result<Self, ApiError> {
        let Value::Object(doc) = &mut body else {
            return Err(invalid("The request body must be a JSON object."));
        };
        let flat = match doc.get_mut("sourceSpec") {
            Some(Value::Object(spec)) if !spec.contains_key("params") => {
                let params = std::mem::take(spec);
                spec.insert("params".into(), Value::Object(params));
                true
            }
            _ => false,
        };
        let mut request: Self =
            read_body(body, |path| match path.strip_prefix("sourceSpec.params") {
                Some(rest) if flat => format!("sourceSpec{rest}"),
                _ => path.to_owned(),
            })?;
        if let Some(source) = &mut request.source_spec {
            source.flat = flat;
        }
        Ok(request)
    }
}

/// An external audience as defined: the create request normalised (defaults filled in,
/// `ttlInDays` a number, `sourceSpec` in the `params` form), checked and bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAudienceSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_audience_id: Option<String>,
    pub fields: Vec<Field>,
    pub source_spec: SourceSpec,
    #[schema(minimum = 1, maximum = 90)]
    pub ttl_in_days: i64,
    pub audience_type: ExternalAudienceType,
    pub origin_name: OriginName,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    pub express_activation: bool,
}

/// A declared column of the source file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Exactly one field carries it: the identity column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_ns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceSpec {
    pub params: SourceParams,
}

/// Where a run reads: the blob `<cloudType or DLZ>/<path>` of its own sandbox's landing zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceParams {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: SourceKind,
    pub source_type: SourceType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_type: Option<CloudType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_connection_id: Option<String>,
}

impl SourceParams {
    /// The folder of the landing zone's container the path is in: the cloud type, DLZ by default.
    pub fn cloud_dir(&self) -> &'static str {
        self.cloud_type.unwrap_or(DEFAULT_CLOUD_TYPE).as_str()
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

/// Checks a create request (or the result of a PATCH) and returns its normalised form. Every kept
/// string and list is checked against `limits`.
pub fn normalize(
    request: ExternalAudienceRequest,
    limits: &Limits,
) -> Result<ExternalAudienceSpec, ApiError> {
    let name = match non_empty(request.name, "name")? {
        Some(n) => n,
        None => return Err(invalid("Field 'name' is required.")),
    };
    let custom_audience_id = non_empty(request.custom_audience_id, "customAudienceId")?;
    let fields = normalize_fields(request.fields, limits)?;
    let source_spec = normalize_source(request.source_spec, limits)?;
    let Some(origin_name) = request.origin_name else {
        return Err(invalid("Field 'originName' is required."));
    };
    let namespace =
        non_empty(request.namespace, "namespace")?.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let spec = ExternalAudienceSpec {
        name,
        description: request.description,
        custom_audience_id,
        fields,
        source_spec,
        ttl_in_days: request.ttl_in_days.map_or(DEFAULT_TTL_DAYS, |t| t.0),
        audience_type: request
            .audience_type
            .unwrap_or(ExternalAudienceType::People),
        origin_name,
        namespace,
        labels: request.labels,
        tags: request.tags,
        express_activation: request.express_activation.unwrap_or(false),
    };
    spec.check_top_level_bounds(limits)?;
    Ok(spec)
}

fn normalize_fields(
    fields: Option<Vec<FieldRequest>>,
    limits: &Limits,
) -> Result<Vec<Field>, ApiError> {
    let Some(items) = fields else {
        return Err(invalid("Field 'fields' is required."));
    };
    if items.is_empty() || items.len() > MAX_FIELDS {
        return Err(invalid(format!(
            "Field 'fields' must hold 1 to {MAX_FIELDS} fields; it holds {}.",
            items.len()
        )));
    }
    let mut out: Vec<Field> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let name = match item.name {
            Some(s) if !s.trim().is_empty() => s,
            _ => {
                return Err(invalid(format!(
                    "Field 'fields[{i}].name' is required and must be a non-empty string."
                )))
            }
        };
        bounded(&format!("fields[{i}].name"), &name, limits.max_id_chars)?;
        if out.iter().any(|f| f.name == name) {
            return Err(invalid(format!(
                "Field 'fields[{i}].name': '{name}' is declared twice."
            )));
        }
        let Some(field_type) = item.field_type else {
            let names: Vec<&str> = FieldType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(invalid(format!(
                "Field 'fields[{i}].type' must be one of {}.",
                names.join(", ")
            )));
        };
        let identity_ns = match item.identity_ns {
            Some(ns) if ns.trim().is_empty() => {
                return Err(invalid(format!(
                    "Field 'fields[{i}].identityNs' must be a non-empty string."
                )))
            }
            Some(ns) => {
                bounded(&format!("fields[{i}].identityNs"), &ns, limits.max_id_chars)?;
                Some(ns)
            }
            None => None,
        };
        if let Some(labels) = &item.labels {
            check_strings(
                &format!("fields[{i}].labels"),
                labels,
                limits.max_labels,
                limits.max_id_chars,
            )
            .map_err(invalid)?;
        }
        out.push(Field {
            name,
            field_type,
            identity_ns,
            labels: item.labels,
        });
    }
    let identities = out.iter().filter(|f| f.identity_ns.is_some()).count();
    if identities != 1 {
        return Err(invalid(format!(
            "Field 'fields' must have exactly one field with 'identityNs'; it has {identities}."
        )));
    }
    Ok(out)
}

/// `sourceSpec.params` (or the flat `sourceSpec`) checked, with its defaults.
fn normalize_source(
    spec: Option<SourceSpecRequest>,
    limits: &Limits,
) -> Result<SourceSpec, ApiError> {
    let Some(spec) = spec else {
        return Err(invalid("Field 'sourceSpec' is required."));
    };
    let Some(params) = spec.params else {
        return Err(invalid("Field 'sourceSpec.params' must be an object."));
    };
    let prefix = if spec.flat {
        "sourceSpec"
    } else {
        "sourceSpec.params"
    };
    let path = params.path.unwrap_or_default();
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
    let connection = params.base_connection_id.filter(|c| !c.trim().is_empty());
    if let Some(c) = &connection {
        bounded(
            &format!("{prefix}.baseConnectionId"),
            c,
            limits.max_id_chars,
        )?;
    }
    if let Some(c) = params.cloud_type {
        if c.needs_connection() && connection.is_none() {
            return Err(invalid(format!(
                "Field '{prefix}.baseConnectionId' is required when cloudType is {c}."
            )));
        }
    }
    Ok(SourceSpec {
        params: SourceParams {
            path,
            kind: params.kind.unwrap_or(SourceKind::File),
            source_type: params.source_type.unwrap_or(SourceType::CloudStorage),
            cloud_type: params.cloud_type,
            base_connection_id: connection,
        },
    })
}

impl ExternalAudienceSpec {
    /// The bounds on the top-level strings and lists (the fields and the source are bounded as
    /// they are normalised).
    fn check_top_level_bounds(&self, limits: &Limits) -> Result<(), ApiError> {
        for (key, value, max) in [
            ("name", Some(&self.name), limits.max_name_chars),
            (
                "description",
                self.description.as_ref(),
                limits.max_description_chars,
            ),
            (
                "customAudienceId",
                self.custom_audience_id.as_ref(),
                limits.max_id_chars,
            ),
            ("namespace", Some(&self.namespace), limits.max_id_chars),
        ] {
            if let Some(v) = value {
                bounded(key, v, max)?;
            }
        }
        for (key, list) in [("labels", &self.labels), ("tags", &self.tags)] {
            if let Some(items) = list {
                check_strings(key, items, limits.max_labels, limits.max_id_chars)
                    .map_err(invalid)?;
            }
        }
        Ok(())
    }

    /// The identity column: the one field with `identityNs`.
    pub fn identity(&self) -> &Field {
        self.fields
            .iter()
            .find(|f| f.identity_ns.is_some())
            .unwrap_or(&self.fields[0])
    }

    /// When data ingested at `now` expires.
    pub fn data_expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + Duration::days(self.ttl_in_days)
    }

    /// The fields the UPS audience takes from its external audience: `description`, `labels`
    /// and `ttlInDays`, written at creation and again after every PATCH (a field the definition
    /// no longer has is removed).
    pub fn copy_to_ups(&self, doc: &mut Map<String, Value>) {
        let mut follow = |key: &str, value: Option<Value>| match value {
            Some(v) => {
                doc.insert(key.into(), v);
            }
            None => {
                doc.remove(key);
            }
        };
        follow("description", self.description.as_ref().map(|d| json!(d)));
        follow("labels", self.labels.as_ref().map(|l| json!(l)));
        follow("ttlInDays", Some(json!(self.ttl_in_days)));
    }

    /// A UPS audience's client fields after this definition (see [`Self::copy_to_ups`]).
    pub fn ups_fields(&self, current: &ClientFields) -> ClientFields {
        let mut fields = current.clone();
        self.copy_to_ups(&mut fields.doc);
        fields
    }
}

impl From<ExternalAudienceSpec> for ExternalAudienceRequest {
    fn from(spec: ExternalAudienceSpec) -> Self {
        let params = spec.source_spec.params;
        ExternalAudienceRequest {
            name: Some(spec.name),
            description: spec.description,
            custom_audience_id: spec.custom_audience_id,
            fields: Some(spec.fields.into_iter().map(FieldRequest::from).collect()),
            source_spec: Some(SourceSpecRequest {
                params: Some(SourceParamsRequest {
                    path: Some(params.path),
                    kind: Some(params.kind),
                    source_type: Some(params.source_type),
                    cloud_type: params.cloud_type,
                    base_connection_id: params.base_connection_id,
                }),
                flat: false,
            }),
            ttl_in_days: Some(TtlDays(spec.ttl_in_days)),
            audience_type: Some(spec.audience_type),
            origin_name: Some(spec.origin_name),
            namespace: Some(spec.namespace),
            labels: spec.labels,
            tags: spec.tags,
            express_activation: Some(spec.express_activation),
        }
    }
}

impl From<Field> for FieldRequest {
    fn from(f: Field) -> Self {
        FieldRequest {
            name: Some(f.name),
            field_type: Some(f.field_type),
            identity_ns: f.identity_ns,
            labels: f.labels,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PATCH

/// PATCH body: a plain partial object. `null` removes `description` or `labels` and gives
/// `ttlInDays` its default. `name` and `expressActivation` may only repeat their current value;
/// any other field is refused.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct ExternalAudiencePatch {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub description: Change<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub labels: Change<Vec<String>>,
    /// Merged by name: a field of the same name is replaced, a new one appended.
    #[serde(default)]
    #[schema(value_type = Option<Vec<FieldRequest>>)]
    pub fields: Change<Vec<FieldRequest>>,
    /// 1..90; a numeric string is accepted.
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 90)]
    pub ttl_in_days: Change<TtlDays>,
    /// Immutable: only its current value.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub name: Change<String>,
    /// Immutable: only its current value.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub express_activation: Change<bool>,
}

impl ExternalAudiencePatch {
    /// Reads a PATCH body: an object of at least one field, each one a PATCH may name.
    pub fn from_body(body: Value) -> Result<Self, ApiError> {
        let Value::Object(fields) = &body else {
            return Err(invalid(
                "The request body must be a JSON object of the fields to change.",
            ));
        };
        if fields.is_empty() {
            return Err(invalid(format!(
                "The request body must change at least one of {}.",
                PATCHABLE.join(", ")
            )));
        }
        if let Some(key) = fields
            .keys()
            .find(|k| !PATCHABLE.contains(&k.as_str()) && !IMMUTABLE.contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "Field '{key}' cannot be changed; a PATCH may change {}.",
                PATCHABLE.join(", ")
            )));
        }
        from_body(body)
    }
}

/// An immutable field may be sent with its current value only.
fn unchanged<T: PartialEq>(key: &str, sent: Change<T>, current: &T) -> Result<(), ApiError> {
    match sent {
        Change::Keep => Ok(()),
        Change::Set(v) if v == *current => Ok(()),
        _ => Err(invalid(format!(
            "Field '{key}' is immutable and cannot be changed."
        ))),
    }
}

impl ExternalAudienceSpec {
    /// This definition after a PATCH, checked as a whole as a create is.
    pub fn patched(
        &self,
        patch: ExternalAudiencePatch,
        limits: &Limits,
    ) -> Result<ExternalAudienceSpec, ApiError> {
        unchanged("name", patch.name, &self.name)?;
        unchanged(
            "expressActivation",
            patch.express_activation,
            &self.express_activation,
        )?;
        let mut request = ExternalAudienceRequest::from(self.clone());
        patch.description.apply(&mut request.description);
        patch.labels.apply(&mut request.labels);
        patch.ttl_in_days.apply(&mut request.ttl_in_days);
        match patch.fields {
            Change::Keep => {}
            Change::Clear => return Err(invalid("Field 'fields' must be an array.")),
            Change::Set(items) => {
                let merged = request.fields.get_or_insert_with(Vec::new);
                for item in items {
                    let slot = item
                        .name
                        .as_ref()
                        .and_then(|name| merged.iter_mut().find(|f| f.name.as_ref() == Some(name)));
                    match slot {
                        Some(slot) => *slot = item,
                        None => merged.push(item),
                    }
                }
            }
        }
        normalize(request, limits)
    }
}

// ---------------------------------------------------------------------------------------------
// Meta-only create

/// Body of the meta-only create. Other fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", expecting = "an object")]
#[schema(example = json!({"name": "Sample audience name", "description": "A sample description for the audience.", "namespace": "agora", "originName": "Agora_Collaboration"}))]
pub struct MetaOnlyRequest {
    #[schema(value_type = String, required)]
    pub name: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = String, required)]
    pub namespace: Option<String>,
    #[schema(value_type = String, required)]
    pub origin_name: Option<String>,
    /// Generated when absent.
    pub audience_id: Option<String>,
}

impl MetaOnlyRequest {
    pub fn from_body(body: Value) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(invalid("The request body must be a JSON object."));
        }
        from_body(body)
    }

    /// The UPS document of the audience: the request's fields (an empty `description` is
    /// dropped), `ExternalSegment`, published.
    pub fn ups_document(self) -> Result<Value, ApiError> {
        let mut doc = Map::new();
        for (key, value, required) in [
            ("name", self.name, true),
            ("description", self.description, false),
            ("namespace", self.namespace, true),
            ("originName", self.origin_name, true),
            ("audienceId", self.audience_id, false),
        ] {
            match value {
                Some(s) if !s.trim().is_empty() => {
                    doc.insert(key.into(), json!(s));
                }
                Some(_) if key == "description" => {}
                Some(_) => {
                    return Err(invalid(format!(
                        "Field '{key}' must be a non-empty string."
                    )))
                }
                None if required => return Err(invalid(format!("Field '{key}' is required."))),
                None => {}
            }
        }
        doc.insert("type".into(), json!(EXTERNAL_SEGMENT));
        doc.insert(
            "lifecycleState".into(),
            json!(Lifecycle::Published.as_str()),
        );
        Ok(Value::Object(doc))
    }
}

// ---------------------------------------------------------------------------------------------
// Stored external audiences and operations

/// An external audience as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAudience {
    /// Also the `id` of its UPS audience.
    pub id: Uuid,
    pub name: String,
    pub custom_audience_id: Option<String>,
    pub state: ExternalState,
    pub spec: ExternalAudienceSpec,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
    /// Runs started, TTL extensions included (they number the runs' names).
    pub run_count: i32,
    pub last_success_run_id: Option<Uuid>,
    pub profile_count: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired: bool,
}

impl ExternalAudience {
    /// The UPS audience of an external audience: the same id, `ExternalSegment`, `CUSTOM_UPLOAD`,
    /// published, the definition's namespace and the fields it shares
    /// ([`ExternalAudienceSpec::copy_to_ups`]); its UPS `audienceId` is the `customAudienceId`
    /// when given, else the id; its profile count 0.
    pub fn ups_audience(&self, now: DateTime<Utc>) -> Result<Audience, ApiError> {
        let mut doc = Map::new();
        doc.insert("name".into(), json!(self.name));
        self.spec.copy_to_ups(&mut doc);
        doc.insert("namespace".into(), json!(self.spec.namespace));
        doc.insert("type".into(), json!(EXTERNAL_SEGMENT));
        doc.insert("originName".into(), json!(ORIGIN_NAME));
        doc.insert(
            "lifecycleState".into(),
            json!(Lifecycle::Published.as_str()),
        );
        let ups_audience_id = self
            .custom_audience_id
            .clone()
            .unwrap_or_else(|| self.id.to_string());
        doc.insert("audienceId".into(), json!(ups_audience_id));
        doc.insert("metrics".into(), profile_metrics(0, false, now));
        let fields = audience::new_fields(Value::Object(doc), self.id)?;
        let creator = Caller {
            user_id: self.created_by.clone(),
        };
        Ok(Audience::create(self.id, fields, &creator, Vec::new(), now))
    }
}

/// The UPS audience's `metrics` field: where the profile count shows through UPS.
pub fn profile_metrics(profiles: i64, expired: bool, now: DateTime<Utc>) -> Value {
    json!({
        "type": "profileCount",
        "data": { "totalProfiles": profiles, "dataExpired": expired },
        "updateTime": now.timestamp_millis(),
    })
}

/// A UPS audience with a new profile count: a write by the server, through the audience's update
/// rule (new `_etag` and update time; the last modifier stays).
pub fn with_profile_count(
    ups: &Audience,
    profiles: i64,
    expired: bool,
    now: DateTime<Utc>,
) -> Audience {
    let mut fields = ups.fields.clone();
    fields
        .doc
        .insert("metrics".into(), profile_metrics(profiles, expired, now));
    ups.rewritten(fields, now)
}

/// The creation operation of an external audience, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: Uuid,
    pub audience_id: Uuid,
    pub audience_name: String,
    pub status: OperationStatus,
    /// The normalised request.
    pub details: ExternalAudienceSpec,
    /// Why it failed.
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// Why an operation failed when its external audience was deleted while it was queued.
pub const DELETED_BEFORE_CREATED: &str = "The external audience was deleted before it was created.";

/// What a tenant reads when a creation's job was given up (the cause stays in the log).
pub fn gave_up_creating_reason(attempts: i32, job_id: Uuid) -> String {
    format!(
        "Gave up after {attempts} attempts: the audience could not be created (job {job_id}; the cause is in the server log)."
    )
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

    fn normalized(body: Value, limits: &Limits) -> Result<ExternalAudienceSpec, ApiError> {
        normalize(ExternalAudienceRequest::from_body(body)?, limits)
    }

    #[test]
    fn seed_request_normalises() {
        let spec = normalized(seed(), &Limits::default()).unwrap();
        assert_eq!(spec.ttl_in_days, 40);
        assert_eq!(spec.namespace, DEFAULT_NAMESPACE);
        assert!(!spec.express_activation);
        assert_eq!(spec.identity().name, "ppid");
        assert_eq!(spec.source_spec.params.cloud_dir(), "DLZ");
        assert_eq!(spec.source_spec.params.kind, SourceKind::File);
        // The document as stored and shown: the order of the fields, defaults filled in.
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            text,
            r#"{"name":"Sample external audience","description":"A sample version of an external audience","fields":[{"name":"ppid","type":"string","identityNs":"email"},{"name":"list_id","type":"string","labels":["core/C2","custom/deep"]},{"name":"delete","type":"number"},{"name":"process_consent","type":"string"}],"sourceSpec":{"params":{"path":"activation/sample-source/example.csv","type":"file","sourceType":"Cloud Storage","baseConnectionId":"1d1d4bc5-b527-46a3-9863-530246a61b2b"}},"ttlInDays":40,"audienceType":"people","originName":"CUSTOM_UPLOAD","namespace":"CustomerAudienceUpload","labels":["core/C1"],"expressActivation":false}"#
        );
        let back: ExternalAudienceSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn flat_source_spec_is_accepted() {
        let mut body = seed();
        body["sourceSpec"] = json!({"path": "a/b.csv", "cloudType": "DLZ"});
        let spec = normalized(body, &Limits::default()).unwrap();
        assert_eq!(spec.source_spec.params.path, "a/b.csv");
        let mut body = seed();
        body["sourceSpec"] = json!({"path": 5});
        let err = normalized(body, &Limits::default()).unwrap_err();
        assert!(
            err.message
                .starts_with("Field 'sourceSpec.path': invalid type"),
            "{}",
            err.message
        );
    }

    #[test]
    fn violations_name_the_field() {
        type Edit = fn(&mut Value);
        let cases: Vec<(Edit, &str)> = vec![
            (|b| b["name"] = json!(""), "'name'"),
            (|b| b["name"] = json!(5), "'name'"),
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
                    b["fields"][0].as_object_mut().unwrap().remove("identityNs");
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
            (|b| b["ttlInDays"] = json!(40.5), "'ttlInDays'"),
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
            let err = normalized(body, &Limits::default()).unwrap_err();
            assert_eq!(err.code, crate::error::Code::AisValidation);
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
        let too_many: Vec<Value> = (0..42)
            .map(|i| json!({"name": format!("f{i}"), "type": "string", "identityNs": if i == 0 { json!("email") } else { Value::Null }}))
            .collect();
        let mut body = seed();
        body["fields"] = json!(too_many);
        assert!(normalized(body, &Limits::default())
            .unwrap_err()
            .message
            .contains("1 to 41"));
    }

    #[test]
    fn a_refused_value_is_quoted_clipped() {
        let mut body = seed();
        body["audienceType"] = json!("x".repeat(10_000));
        let message = normalized(body, &Limits::default()).unwrap_err().message;
        assert!(message.starts_with("Field 'audienceType': unknown variant `xxx"));
        assert!(
            message.chars().count() < EXPLANATION_CHARS + 40,
            "{message}"
        );
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
        type Edit = fn(&mut Value);
        let cases: Vec<(Edit, &str)> = vec![
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
        assert!(normalized(within(), &l).is_ok());
        for (change, message) in cases {
            let mut body = within();
            change(&mut body);
            let err = normalized(body, &l).unwrap_err();
            assert_eq!(err.code, crate::error::Code::AisValidation);
            assert_eq!(err.message, message);
        }
    }

    #[test]
    fn patch_merges_fields_and_guards_immutables() {
        let spec = normalized(seed(), &Limits::default()).unwrap();
        let limits = Limits::default();
        let patched =
            |patch: Value| spec.patched(ExternalAudiencePatch::from_body(patch)?, &limits);
        let out = patched(
            json!({"fields": [{"name": "delete", "type": "long"}, {"name": "extra", "type": "date"}], "ttlInDays": 10}),
        )
        .unwrap();
        assert_eq!(out.fields.len(), 5);
        assert_eq!(
            serde_json::to_value(&out.fields[2]).unwrap(),
            json!({"name": "delete", "type": "long"})
        );
        assert_eq!(out.ttl_in_days, 10);
        // null removes a field, or gives it its default.
        let out = patched(json!({"description": null, "ttlInDays": null})).unwrap();
        assert_eq!((out.description, out.ttl_in_days), (None, DEFAULT_TTL_DAYS));
        for (patch, needle) in [
            (json!({"name": "other"}), "'name' is immutable"),
            (json!({"name": null}), "'name' is immutable"),
            (json!({"expressActivation": true}), "'expressActivation'"),
            (json!({"sourceSpec": {}}), "'sourceSpec'"),
            (json!({"fields": null}), "'fields'"),
            (json!({}), "at least one"),
            (json!([]), "JSON object"),
        ] {
            let err = patched(patch).unwrap_err();
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
        assert!(patched(json!({"name": "Sample external audience", "description": "d"})).is_ok());
    }

    #[test]
    fn the_ups_audience_follows_the_definition() {
        let spec = normalized(seed(), &Limits::default()).unwrap();
        let now = Utc::now();
        let ext = ExternalAudience {
            id: Uuid::new_v4(),
            name: spec.name.clone(),
            custom_audience_id: None,
            state: ExternalState::Creating,
            spec: spec.clone(),
            created_by: "creator".into(),
            created_at: now,
            updated_by: "creator".into(),
            updated_at: now,
            run_count: 0,
            last_success_run_id: None,
            profile_count: 0,
            expires_at: None,
            expired: false,
        };
        let ups = ext.ups_audience(now).unwrap();
        let keys: Vec<&str> = ups.fields.doc.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "name",
                "description",
                "labels",
                "ttlInDays",
                "namespace",
                "type",
                "originName",
                "lifecycleState",
                "audienceId",
                "metrics"
            ]
        );
        assert_eq!(ups.fields.audience_id(), ext.id.to_string());
        assert_eq!(ups.creation_time, now.timestamp_millis());
        let patched = spec
            .patched(
                ExternalAudiencePatch::from_body(json!({"description": null, "ttlInDays": 9}))
                    .unwrap(),
                &Limits::default(),
            )
            .unwrap();
        let fields = patched.ups_fields(&ups.fields);
        assert!(fields.doc.get("description").is_none());
        assert_eq!(fields.doc["ttlInDays"], 9);
        let later = now + Duration::seconds(5);
        let counted = with_profile_count(&ups, 3, false, later);
        assert_eq!(counted.fields.doc["metrics"]["data"]["totalProfiles"], 3);
        assert_eq!(counted.update_time, later.timestamp_millis());
        assert_ne!(counted.etag, ups.etag);
        assert_eq!(counted.last_modified_by, ups.last_modified_by);
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
    fn meta_only_requests_are_checked_field_by_field() {
        let doc = |body: Value| MetaOnlyRequest::from_body(body)?.ups_document();
        let ok = doc(json!({"name": "n", "description": "", "namespace": "ns", "originName": "o"}))
            .unwrap();
        assert_eq!(
            ok,
            json!({"name": "n", "namespace": "ns", "originName": "o", "type": "ExternalSegment", "lifecycleState": "published"})
        );
        for (body, needle) in [
            (
                json!({"namespace": "n", "originName": "o"}),
                "'name' is required",
            ),
            (
                json!({"name": 5, "namespace": "n", "originName": "o"}),
                "'name'",
            ),
            (
                json!({"name": "n", "namespace": " ", "originName": "o"}),
                "'namespace'",
            ),
            (json!("text"), "JSON object"),
        ] {
            let err = doc(body).unwrap_err();
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
    }
}
