//! The audience list query: parameters, their rules, and the whitelists of sortable and filterable
//! fields. Storage turns a [`ListQuery`] into SQL; each field here maps to one column there
//! (`storage::audiences`), so only these fields can reach a statement.

use super::limits::check_chars;
use crate::{config::Limits, error::ApiError};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    Name,
    CreationTime,
    UpdateTime,
    CreateEpoch,
    UpdateEpoch,
    LifecycleState,
    AudienceId,
    Namespace,
}

impl SortField {
    const ALL: [SortField; 8] = [
        SortField::Name,
        SortField::CreationTime,
        SortField::UpdateTime,
        SortField::CreateEpoch,
        SortField::UpdateEpoch,
        SortField::LifecycleState,
        SortField::AudienceId,
        SortField::Namespace,
    ];

    pub fn api_name(self) -> &'static str {
        match self {
            SortField::Name => "name",
            SortField::CreationTime => "creationTime",
            SortField::UpdateTime => "updateTime",
            SortField::CreateEpoch => "createEpoch",
            SortField::UpdateEpoch => "updateEpoch",
            SortField::LifecycleState => "lifecycleState",
            SortField::AudienceId => "audienceId",
            SortField::Namespace => "namespace",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.api_name() == s)
    }

    /// Whether the field's values are integers (the times); the others are text.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            SortField::CreationTime
                | SortField::UpdateTime
                | SortField::CreateEpoch
                | SortField::UpdateEpoch
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyField {
    Id,
    AudienceId,
    Name,
    Namespace,
    Type,
    OriginName,
    LifecycleState,
    DatasetId,
    CreatedBy,
}

impl PropertyField {
    const ALL: [PropertyField; 9] = [
        PropertyField::Id,
        PropertyField::AudienceId,
        PropertyField::Name,
        PropertyField::Namespace,
        PropertyField::Type,
        PropertyField::OriginName,
        PropertyField::LifecycleState,
        PropertyField::DatasetId,
        PropertyField::CreatedBy,
    ];

    pub fn api_name(self) -> &'static str {
        match self {
            PropertyField::Id => "id",
            PropertyField::AudienceId => "audienceId",
            PropertyField::Name => "name",
            PropertyField::Namespace => "namespace",
            PropertyField::Type => "type",
            PropertyField::OriginName => "originName",
            PropertyField::LifecycleState => "lifecycleState",
            PropertyField::DatasetId => "datasetId",
            PropertyField::CreatedBy => "createdBy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.api_name() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyFilter {
    pub field: PropertyField,
    pub equals: bool,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub start: i64,
    pub limit: i64,
    pub sort: SortField,
    pub descending: bool,
    pub properties: Vec<PropertyFilter>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub entity_type: Option<String>,
    /// The caller's parameters other than paging, kept to build `_links.next`.
    pub passthrough: Vec<(String, String)>,
    /// The keyset cursor of a `_links.next.href`, as sent (checked by the use case, which holds
    /// the key; see `domain::cursor`).
    pub cursor: Option<String>,
    /// The page ends before the audience that would take its JSON past this many bytes
    /// (`MAX_LIST_PAGE_BYTES`); it always holds at least one audience.
    pub page_bytes: usize,
}

impl ListQuery {
    /// Parses a form-encoded query string (`+` is a space). Every bad parameter is a 400 naming it,
    /// and so is one past a bound: more `property` filters than `MAX_LIST_FILTERS`, or a filter
    /// value longer than the field it is compared with may be.
    pub fn parse(query: &str, limits: &Limits) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            start: 0,
            limit: DEFAULT_LIMIT,
            sort: SortField::UpdateTime,
            descending: true,
            properties: Vec::new(),
            name: None,
            description: None,
            entity_type: None,
            passthrough: Vec::new(),
            cursor: None,
            page_bytes: limits.max_list_page_bytes,
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let (key, value) = (key.into_owned(), value.into_owned());
            check_value(&key, &value, limits)?;
            if q.read_parameter(&key, &value, limits)? == Link::Keep {
                q.passthrough.push((key, value));
            }
        }
        Ok(q)
    }

    /// Applies one parameter, and says whether `_links` repeat it. Unknown parameters are ignored,
    /// as the real service does (Adobe's own links carry `totalCount`), and not repeated; the
    /// paging ones are written anew for each link.
    fn read_parameter(
        &mut self,
        key: &str,
        value: &str,
        limits: &Limits,
    ) -> Result<Link, ApiError> {
        match key {
            "start" => self.start = parse_start(value)?,
            "cursor" => self.cursor = Some(value.to_owned()),
            "limit" => self.limit = parse_limit(value)?,
            "sort" => {
                (self.sort, self.descending) = parse_sort(value)?;
                return Ok(Link::Keep);
            }
            "property" => {
                if self.properties.len() == limits.max_list_filters {
                    return Err(ApiError::limit(format!(
                        "Query parameter 'property' is repeated more than {0} times; at most {0} filters are allowed.",
                        limits.max_list_filters
                    )));
                }
                self.properties.push(parse_property(value)?);
                return Ok(Link::Keep);
            }
            "name" => {
                self.name = Some(value.to_owned());
                return Ok(Link::Keep);
            }
            "description" => {
                self.description = Some(value.to_owned());
                return Ok(Link::Keep);
            }
            "entityType" => {
                if value.is_empty() {
                    return Err(ApiError::bad_param("entityType", "must not be empty"));
                }
                self.entity_type = Some(value.to_owned());
                return Ok(Link::Keep);
            }
            _ => {}
        }
        Ok(Link::Drop)
    }

    /// Whether anything beyond the default "hide inactive" narrows the list.
    pub fn has_filters(&self) -> bool {
        !self.properties.is_empty()
            || self.name.is_some()
            || self.description.is_some()
            || self.entity_type.is_some()
    }

    /// `inactive` audiences are listed only when the caller filters by property.
    pub fn hides_inactive(&self) -> bool {
        self.properties.is_empty()
    }

    /// What a cursor is bound to: the sandbox, the sort and every filter, so that a cursor is
    /// read back only by the listing it was made for.
    pub fn cursor_scope(&self, sandbox: &str) -> String {
        let mut filters = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.passthrough.iter().filter(|(k, _)| k != "sort") {
            filters.append_pair(k, v);
        }
        format!(
            "{sandbox}|{}:{}|{}",
            self.sort.api_name(),
            self.direction(),
            filters.finish()
        )
    }

    /// The query string of the page that starts at `start`, with the caller's filters.
    pub fn link_query(&self, start: i64) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        out.append_pair("start", &start.to_string());
        out.append_pair("limit", &self.limit.to_string());
        let has_sort = self.passthrough.iter().any(|(k, _)| k == "sort");
        if !has_sort {
            out.append_pair(
                "sort",
                &format!("{}:{}", self.sort.api_name(), self.direction()),
            );
        }
        for (k, v) in &self.passthrough {
            out.append_pair(k, v);
        }
        // Keep `:` readable in the sort pair, as Adobe's own links show it.
        out.finish().replace("%3A", ":")
    }

    pub fn direction(&self) -> &'static str {
        if self.descending {
            "desc"
        } else {
            "asc"
        }
    }
}

/// Whether a parameter is repeated in the `_links` of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Keep,
    Drop,
}

/// The parameters this query reads.
const KNOWN: [&str; 8] = [
    "start",
    "cursor",
    "limit",
    "sort",
    "property",
    "name",
    "description",
    "entityType",
];

/// What every value of a known parameter must be, whatever the parameter: free of U+0000, which
/// PostgreSQL text cannot hold (refused here rather than failing in the query), and within its
/// length bound.
fn check_value(key: &str, value: &str, limits: &Limits) -> Result<(), ApiError> {
    if value.contains('\0') && KNOWN.contains(&key) {
        return Err(ApiError::bad_param(
            key,
            "must not contain the character U+0000",
        ));
    }
    check_value_length(key, value, limits)
}

fn parse_start(value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_param("start", "must be an integer >= 0"))
}

fn parse_limit(value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ApiError::bad_param("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
        })
}

/// `field:asc` or `field:desc` (`field` alone is ascending); whether it is descending.
fn parse_sort(value: &str) -> Result<(SortField, bool), ApiError> {
    let (field, dir) = value.split_once(':').unwrap_or((value, "asc"));
    let sort = SortField::parse(field).ok_or_else(|| {
        ApiError::bad_param(
            "sort",
            format!(
                "unknown field '{field}'; sortable fields are {}",
                SortField::ALL.map(SortField::api_name).join(", ")
            ),
        )
    })?;
    let descending = match dir {
        "asc" => false,
        "desc" => true,
        _ => {
            return Err(ApiError::bad_param(
                "sort",
                format!("direction '{dir}' must be asc or desc"),
            ))
        }
    };
    Ok((sort, descending))
}

/// A filter value longer than the field it matches can hold is refused: it could match nothing,
/// and long patterns only cost time. `property` carries its field name, so it gets the longer
/// of the two bounds it may meet.
fn check_value_length(key: &str, value: &str, limits: &Limits) -> Result<(), ApiError> {
    let max = match key {
        "name" => limits.max_name_chars,
        "description" => limits.max_description_chars,
        "entityType" | "sort" | "start" | "limit" => limits.max_id_chars,
        "cursor" => max_cursor_chars(limits),
        "property" => limits.max_name_chars.max(limits.max_id_chars) + "audienceId==".len(),
        _ => return Ok(()),
    };
    check_chars(key, value, max).map_err(|_| {
        ApiError::limit(format!(
            "Query parameter '{key}' is {} characters long; at most {max} are allowed.",
            value.chars().count()
        ))
    })
}

/// The longest cursor this server makes: its fixed part (version, start, id, MAC: 42 bytes) and a
/// sort key of at most the longest name or id, 4 bytes a character, in base64 (4 characters for
/// every 3 bytes).
pub fn max_cursor_chars(limits: &Limits) -> usize {
    let bytes = 42 + 4 * limits.max_name_chars.max(limits.max_id_chars);
    bytes.div_ceil(3) * 4
}

fn parse_property(value: &str) -> Result<PropertyFilter, ApiError> {
    let (field, equals, rest) = if let Some((f, v)) = value.split_once("==") {
        (f, true, v)
    } else if let Some((f, v)) = value.split_once("!=") {
        (f, false, v)
    } else {
        return Err(ApiError::bad_param(
            "property",
            format!("'{value}' must be written field==value or field!=value"),
        ));
    };
    let field = PropertyField::parse(field.trim()).ok_or_else(|| {
        ApiError::bad_param(
            "property",
            format!(
                "unknown field '{field}'; filterable fields are {}",
                PropertyField::ALL.map(PropertyField::api_name).join(", ")
            ),
        )
    })?;
    let mut value = rest.to_owned();
    if field == PropertyField::LifecycleState && value == "active" {
        value = "published".into();
    }
    Ok(PropertyFilter {
        field,
        equals,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let q = ListQuery::parse("", &Limits::default()).unwrap();
        assert_eq!(
            (q.start, q.limit, q.sort, q.descending),
            (0, 20, SortField::UpdateTime, true)
        );
        assert!(q.hides_inactive());
    }

    #[test]
    fn form_encoding_and_property_operators() {
        let q = ListQuery::parse(
            "property=name%3D%3DMy+audience&property=lifecycleState!=draft&name=a+b",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            q.properties[0],
            PropertyFilter {
                field: PropertyField::Name,
                equals: true,
                value: "My audience".into()
            }
        );
        assert!(!q.properties[1].equals);
        assert_eq!(q.name.as_deref(), Some("a b"));
        assert!(!q.hides_inactive());
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, name) in [
            ("start=-1", "'start'"),
            ("start=x", "'start'"),
            ("limit=0", "'limit'"),
            ("limit=1001", "'limit'"),
            ("sort=color:asc", "'sort'"),
            ("sort=name:up", "'sort'"),
            ("property=name~x", "'property'"),
            ("property=color==x", "'property'"),
        ] {
            let err = ListQuery::parse(query, &Limits::default()).unwrap_err();
            assert!(err.message.contains(name), "{query}: {}", err.message);
        }
    }

    #[test]
    fn filters_are_bounded_in_number_and_length() {
        let limits = Limits {
            max_list_filters: 2,
            max_name_chars: 5,
            ..Limits::default()
        };
        let three = "property=name==a&property=name==b&property=name==c";
        let err = ListQuery::parse(three, &limits).unwrap_err();
        assert_eq!(err.code, crate::error::Code::LimitExceeded);
        assert_eq!(
            err.message,
            "Query parameter 'property' is repeated more than 2 times; at most 2 filters are allowed."
        );
        assert!(ListQuery::parse("property=name==a&property=name==b", &limits).is_ok());
        let err = ListQuery::parse("name=abcdef", &limits).unwrap_err();
        assert_eq!(
            err.message,
            "Query parameter 'name' is 6 characters long; at most 5 are allowed."
        );
        assert!(ListQuery::parse("name=abcde", &limits).is_ok());
    }

    #[test]
    fn next_link_keeps_filters() {
        let q = ListQuery::parse(
            "limit=2&name=x+y&property=namespace==aam&totalCount=5",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            q.link_query(2),
            "start=2&limit=2&sort=updateTime:desc&name=x+y&property=namespace%3D%3Daam"
        );
    }
}
