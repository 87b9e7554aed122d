//! Data Landing Zone rules: the names a zone may hold, the storage account names that route to a
//! zone, and the SAS tokens that open one. Pure: no HTTP, no SQL, no filesystem.
//!
//! A sandbox has one zone, one Azure-style container (`dlz-user-container`, as on Adobe's
//! platform) under a storage account name of its own. A SAS token is a capability for that one
//! container: HMAC-SHA256 with the server's secret over the account, the sandbox, the credential
//! id, the permissions and the expiry. See docs/LANDING.md.

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use sha2::Sha256;
use uuid::Uuid;

/// The one container of every zone (Adobe's name).
pub const CONTAINER_NAME: &str = "dlz-user-container";
/// The only `type` the landing-zone endpoints serve.
pub const ZONE_TYPE: &str = "user_drop_zone";
/// The only `action` of the credentials POST.
pub const REFRESH_ACTION: &str = "refresh";
/// The signed version (`sv`) of the tokens this server issues (Adobe's value).
pub const SAS_VERSION: &str = "2020-04-08";
/// A token opens the container (`sr=c`).
pub const SAS_RESOURCE: &str = "c";
/// Read, add, create, write, delete, list, move: what Adobe grants on a landing zone.
pub const SAS_PERMISSIONS: &str = "racwdlm";
/// Credentials expire this long after they are issued (Adobe: 90 days).
pub const CREDENTIAL_DAYS: i64 = 90;
/// Prefix of a credential's signed identifier (`si=dlz-<uuid>`, as Adobe's tokens show).
const SIGNED_ID_PREFIX: &str = "dlz-";
/// Prefix of generated storage account names (Adobe's accounts look like `dlblobstore99hh25i3dflek`).
const ACCOUNT_PREFIX: &str = "dlblobstore";
const ACCOUNT_LEN: usize = 24;

/// Azure's bounds on blob names.
pub const MAX_NAME_CHARS: usize = 1024;
pub const MAX_SEGMENT_CHARS: usize = 255;
pub const MAX_SEGMENTS: usize = 254;

/// A fresh storage account name: `dlblobstore` and 13 random lower-case letters and digits,
/// 24 characters as Azure allows.
pub fn new_account_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut name = String::from(ACCOUNT_PREFIX);
    while name.len() < ACCOUNT_LEN {
        name.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    name
}

/// Whether `name` is shaped like a storage account name (Azure: 3 to 24 lower-case letters and
/// digits). Only such names are ever mapped to a folder.
pub fn is_account_name(name: &str) -> bool {
    (3..=ACCOUNT_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A blob name that follows Azure's and Adobe's naming rules, and therefore maps to a relative
/// path inside a zone: components joined by `/`, none empty, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobName(String);

impl BlobName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path components, in order; never empty.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The components before the last one (the folders) and the last one.
    pub fn split_last(&self) -> (Vec<&str>, &str) {
        let mut parts: Vec<&str> = self.segments().collect();
        let last = parts.pop().unwrap_or_default();
        (parts, last)
    }
}

impl std::fmt::Display for BlobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Windows device names Adobe refuses as file or folder names (compared without case).
const RESERVED_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "CLOCK$", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Characters Adobe's Data Landing Zone refuses in names (`/` separates components).
const REFUSED_CHARS: &[char] = &['"', '\\', ':', '|', '<', '>', '*', '?'];

/// Checks a (percent-decoded) blob name, or a run's `<cloudType>/<path>`, against the naming
/// rules. One trailing `/` is dropped, as Adobe does. `Err` says which rule the name breaks.
pub fn parse_blob_name(name: &str) -> Result<BlobName, String> {
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "the name has {chars} characters, at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    if name.starts_with('/') {
        return Err("the name must be relative: it must not start with '/'".into());
    }
    // An encoded dot, slash or backslash could become a traversal wherever the name is decoded
    // once more; such names are refused rather than interpreted.
    let lower = name.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e)) {
        return Err(
            "the name must not contain a percent-encoded '.', '/' or '\\' (%2E, %2F, %5C)".into(),
        );
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "the name has {} path segments, at most {MAX_SEGMENTS} are allowed",
            segments.len()
        ));
    }
    for segment in segments {
        check_segment(segment)?;
    }
    Ok(BlobName(name.to_owned()))
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("the name must not contain an empty segment ('//')".into());
    }
    if segment == "." || segment == ".." {
        return Err(format!("the segment '{segment}' is not allowed"));
    }
    let chars = segment.chars().count();
    // Filesystems bound a name in bytes: a segment must fit both.
    if chars > MAX_SEGMENT_CHARS || segment.len() > MAX_SEGMENT_CHARS {
        return Err(format!(
            "a segment may have at most {MAX_SEGMENT_CHARS} characters (and {MAX_SEGMENT_CHARS} bytes in UTF-8); one has {chars} characters, {} bytes",
            segment.len()
        ));
    }
    if let Some(c) = segment.chars().find(|c| REFUSED_CHARS.contains(c)) {
        return Err(format!(
            "the character '{c}' is not allowed (refused: \" \\ : | < > * ?)"
        ));
    }
    if let Some(c) = segment.chars().find(|c| !allowed_char(*c)) {
        return Err(format!(
            "the character U+{:04X} is not allowed (control characters, private-use code points and non-characters are refused)",
            c as u32
        ));
    }
    if RESERVED_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(segment))
    {
        return Err(format!("'{segment}' is a reserved name"));
    }
    Ok(())
}

fn allowed_char(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || (0xE000..=0xF8FF).contains(&u)
        || (0xF0000..=0x10FFFF).contains(&u)
        || (0xFDD0..=0xFDEF).contains(&u)
        || (u & 0xFFFE) == 0xFFFE)
}

/// What a request needs the token to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Delete,
    List,
}

impl Permission {
    /// Whether `sp` grants it. Writing is allowed by `w`, or by `c`/`a` (create, add) as Azure does
    /// for Put Blob and Put Block.
    fn granted_by(self, sp: &str) -> bool {
        match self {
            Permission::Read => sp.contains('r'),
            Permission::Write => sp.contains('w') || sp.contains('c') || sp.contains('a'),
            Permission::Delete => sp.contains('d'),
            Permission::List => sp.contains('l'),
        }
    }
}

/// The credential a zone currently honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub account: String,
    pub sandbox_id: Uuid,
    pub credential_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

impl Credential {
    pub fn signed_id(&self) -> String {
        format!("{SIGNED_ID_PREFIX}{}", self.credential_id)
    }

    /// The expiry as the token states it: whole seconds, UTC.
    fn signed_expiry(&self) -> String {
        self.expires_at.format(EXPIRY_FORMAT).to_string()
    }

    /// The SAS token for this credential, as a query string without `?`.
    pub fn token(&self, secret: &[u8]) -> String {
        let fields = SasFields {
            version: SAS_VERSION.into(),
            signed_id: self.signed_id(),
            resource: SAS_RESOURCE.into(),
            permissions: SAS_PERMISSIONS.into(),
            expiry: self.signed_expiry(),
            signature: String::new(),
        };
        let signature = STANDARD.encode(sign(secret, self, &fields));
        [
            ("sv", fields.version.as_str()),
            ("si", fields.signed_id.as_str()),
            ("sr", fields.resource.as_str()),
            ("sp", fields.permissions.as_str()),
            ("se", fields.expiry.as_str()),
            ("sig", signature.as_str()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect::<Vec<_>>()
        .join("&")
    }

    /// The `expiryDate` Adobe shows: the day the credential expires.
    pub fn expiry_date(&self) -> String {
        self.expires_at.format("%Y-%m-%d").to_string()
    }
}

/// The expiry of a new credential issued at `now`, in whole seconds.
pub fn credential_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    let at = now + Duration::days(CREDENTIAL_DAYS);
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

const EXPIRY_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Characters escaped in a query value (everything but unreserved ones).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The SAS fields of a request's query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SasFields {
    pub version: String,
    pub signed_id: String,
    pub resource: String,
    pub permissions: String,
    pub expiry: String,
    pub signature: String,
}

/// Why a token does not open a zone. Each is answered 403 in Azure's shape; the message never
/// says whether the account exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SasRefusal {
    /// No `sig` in the query: the request is anonymous.
    Missing,
    /// A field is absent, repeated or malformed.
    Malformed(String),
    /// The signature does not match this zone (tampered, or another zone's token).
    Mismatch,
    /// The token's expiry has passed.
    Expired,
    /// A well-signed token of this zone whose credential was rotated.
    Revoked,
    /// The token does not grant what the request needs.
    NotPermitted,
}

/// The SAS fields of a raw query string (values percent-decoded; `+` stays `+`). `None` when
/// the query carries no `sig`.
pub fn sas_fields(query: &str) -> Result<Option<SasFields>, SasRefusal> {
    let mut fields = SasFields::default();
    let mut seen_sig = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sv" => &mut fields.version,
            "si" => &mut fields.signed_id,
            "sr" => &mut fields.resource,
            "sp" => &mut fields.permissions,
            "se" => &mut fields.expiry,
            "sig" => {
                seen_sig = true;
                &mut fields.signature
            }
            _ => continue,
        };
        if !slot.is_empty() {
            return Err(SasRefusal::Malformed(format!(
                "the SAS field '{key}' is repeated"
            )));
        }
        *slot = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| SasRefusal::Malformed(format!("the SAS field '{key}' is not UTF-8")))?
            .into_owned();
    }
    Ok(seen_sig.then_some(fields))
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], credential: &Credential, fields: &SasFields) -> HmacSha256 {
    // Every signed field is on its own line; a field cannot hold a newline (it would have to be
    // sent percent-encoded, and the decoded value is what is signed), so the layout is unambiguous.
    let string_to_sign = format!(
        "dlz-sas-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        credential.account,
        credential.sandbox_id,
        fields.version,
        fields.signed_id,
        fields.resource,
        fields.permissions,
        fields.expiry
    );
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

fn sign(secret: &[u8], credential: &Credential, fields: &SasFields) -> Vec<u8> {
    mac(secret, credential, fields)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks a request's token against the zone its URL names. The signature is checked first, so a
/// token of another zone is a plain mismatch whatever its other fields say.
pub fn verify(
    fields: &SasFields,
    zone: &Credential,
    secret: &[u8],
    now: DateTime<Utc>,
    needed: Permission,
) -> Result<(), SasRefusal> {
    for (name, value) in [
        ("sv", &fields.version),
        ("si", &fields.signed_id),
        ("sr", &fields.resource),
        ("sp", &fields.permissions),
        ("se", &fields.expiry),
        ("sig", &fields.signature),
    ] {
        if value.is_empty() || value.contains('\n') {
            return Err(SasRefusal::Malformed(format!(
                "the SAS field '{name}' is missing or empty"
            )));
        }
    }
    let signature = STANDARD
        .decode(&fields.signature)
        .map_err(|_| SasRefusal::Malformed("the SAS field 'sig' is not base64".into()))?;
    mac(secret, zone, fields)
        .verify_slice(&signature)
        .map_err(|_| SasRefusal::Mismatch)?;
    let expiry = NaiveDateTime::parse_from_str(&fields.expiry, EXPIRY_FORMAT)
        .map_err(|_| SasRefusal::Malformed("the SAS field 'se' is not a UTC time".into()))?
        .and_utc();
    if now >= expiry || now >= zone.expires_at {
        return Err(SasRefusal::Expired);
    }
    if fields.signed_id != zone.signed_id() {
        return Err(SasRefusal::Revoked);
    }
    if fields.resource != SAS_RESOURCE || !needed.granted_by(&fields.permissions) {
        return Err(SasRefusal::NotPermitted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> Credential {
        Credential {
            account: "dlblobstoreabcdefghijklm".into(),
            sandbox_id: Uuid::new_v4(),
            credential_id: Uuid::new_v4(),
            expires_at: credential_expiry(Utc::now()),
        }
    }

    fn fields_of(token: &str) -> SasFields {
        sas_fields(token).unwrap().unwrap()
    }

    #[test]
    fn account_names_are_azure_shaped() {
        for _ in 0..100 {
            let name = new_account_name();
            assert_eq!(name.len(), 24);
            assert!(is_account_name(&name), "{name}");
        }
        assert!(!is_account_name("ab"));
        assert!(!is_account_name("Upper"));
        assert!(!is_account_name("dots.in.name"));
        assert!(!is_account_name(".."));
    }

    #[test]
    fn names_follow_the_rules() {
        for good in [
            "a.csv",
            "DLZ/activation/sample-source/example.csv",
            "folder/",
            "été/naïve file (1).csv",
            "x%41",
            ".hidden",
        ] {
            assert!(parse_blob_name(good).is_ok(), "{good}");
        }
        assert_eq!(parse_blob_name("folder/").unwrap().as_str(), "folder");
        for (bad, rule) in [
            ("", "empty"),
            ("/etc/passwd", "relative"),
            ("a/../b", "'..'"),
            ("..", "'..'"),
            ("a/./b", "'.'"),
            ("a//b", "empty segment"),
            ("%2e%2e/x", "percent-encoded"),
            ("a%2Fb", "percent-encoded"),
            ("a\\b", "'\\'"),
            ("a:b", "':'"),
            ("a?b", "'?'"),
            ("a\u{1}b", "U+0001"),
            ("a\u{e000}", "U+E000"),
            ("a/nul", "reserved"),
            ("COM1", "reserved"),
        ] {
            let err = parse_blob_name(bad).unwrap_err();
            assert!(err.contains(rule), "{bad:?}: {err}");
        }
        let long = "x".repeat(256);
        assert!(parse_blob_name(&long).unwrap_err().contains("255"));
        assert!(parse_blob_name(&"é".repeat(200))
            .unwrap_err()
            .contains("bytes"));
        let deep = vec!["a"; 255].join("/");
        assert!(parse_blob_name(&deep).unwrap_err().contains("254"));
        let wide = vec!["abcd"; 210].join("/");
        assert!(parse_blob_name(&wide).unwrap_err().contains("1024"));
    }

    #[test]
    fn a_token_opens_its_own_zone_only() {
        let zone = credential();
        let secret = b"secret";
        let token = zone.token(secret);
        assert!(token.starts_with("sv=2020-04-08&si=dlz-"), "{token}");
        assert!(token.contains("&sr=c&sp=racwdlm&se="), "{token}");
        let now = Utc::now();
        let fields = fields_of(&token);
        assert_eq!(
            verify(&fields, &zone, secret, now, Permission::Write),
            Ok(())
        );

        // Another zone (account, sandbox) or another secret: mismatch.
        let mut other = zone.clone();
        other.account = "dlblobstorezzzzzzzzzzzzz".into();
        assert_eq!(
            verify(&fields, &other, secret, now, Permission::Read),
            Err(SasRefusal::Mismatch)
        );
        let mut other = zone.clone();
        other.sandbox_id = Uuid::new_v4();
        assert_eq!(
            verify(&fields, &other, secret, now, Permission::Read),
            Err(SasRefusal::Mismatch)
        );
        assert_eq!(
            verify(&fields, &zone, b"other", now, Permission::Read),
            Err(SasRefusal::Mismatch)
        );

        // Tampered fields break the signature.
        for (from, to) in [("sp=racwdlm", "sp=r"), ("sr=c", "sr=b")] {
            let tampered = fields_of(&token.replace(from, to));
            assert_eq!(
                verify(&tampered, &zone, secret, now, Permission::Read),
                Err(SasRefusal::Mismatch)
            );
        }
        let mut later = fields.clone();
        later.expiry = "2999-01-01T00:00:00Z".into();
        assert_eq!(
            verify(&later, &zone, secret, now, Permission::Read),
            Err(SasRefusal::Mismatch)
        );

        // Expiry, rotation.
        let after = zone.expires_at + Duration::seconds(1);
        assert_eq!(
            verify(&fields, &zone, secret, after, Permission::Read),
            Err(SasRefusal::Expired)
        );
        let mut rotated = zone.clone();
        rotated.credential_id = Uuid::new_v4();
        assert_eq!(
            verify(&fields, &rotated, secret, now, Permission::Read),
            Err(SasRefusal::Revoked)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(sas_fields("restype=container&comp=list"), Ok(None));
        assert!(matches!(
            sas_fields("sig=a&sig=b"),
            Err(SasRefusal::Malformed(_))
        ));
        let zone = credential();
        let fields = fields_of("sv=x&sig=abc");
        assert!(matches!(
            verify(&fields, &zone, b"s", Utc::now(), Permission::Read),
            Err(SasRefusal::Malformed(_))
        ));
        let mut fields = fields_of(&zone.token(b"s"));
        fields.signature = "not base64!".into();
        assert!(matches!(
            verify(&fields, &zone, b"s", Utc::now(), Permission::Read),
            Err(SasRefusal::Malformed(_))
        ));
    }

    #[test]
    fn permissions_are_enforced() {
        assert!(Permission::Write.granted_by("c"));
        assert!(Permission::Write.granted_by("w"));
        assert!(!Permission::Write.granted_by("rl"));
        assert!(!Permission::Delete.granted_by("racwlm"));
        assert!(Permission::List.granted_by("racwdlm"));
    }
}
