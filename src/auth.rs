//! Bearer tokens: who the caller is, and, in `verify` mode, whether the token may act for the org.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    config::{AuthMode, Settings},
    domain::Caller,
    error::{ApiError, Code},
};

pub struct AuthConfig {
    verify: Option<(DecodingKey, Validation)>,
}

impl AuthConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        let verify = match (settings.auth_mode, &settings.jwt_secret) {
            (AuthMode::Verify, Some(secret)) => Some((
                DecodingKey::from_secret(secret.0.as_bytes()),
                validation(settings),
            )),
            _ => None,
        };
        AuthConfig { verify }
    }
}

/// What a verified token must satisfy: HS256, `exp` in the future and `nbf` (when present) in
/// the past, each with a minute of leeway for clock skew; `iss` and `aud` when configured.
fn validation(settings: &Settings) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp"];
    validation.validate_nbf = true;
    validation.validate_aud = false;
    if let Some(issuer) = &settings.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if let Some(audience) = &settings.jwt_audience {
        validation.set_audience(&[audience]);
        validation.validate_aud = true;
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

#[derive(Debug, Default, Deserialize)]
struct Claims {
    user_id: Option<String>,
    sub: Option<String>,
    /// The orgs a verified token may act for: `orgs` (a list) or `org` (one).
    #[serde(default)]
    orgs: Vec<String>,
    org: Option<String>,
}

impl Claims {
    fn user(&self) -> Option<&str> {
        self.user_id
            .as_deref()
            .or(self.sub.as_deref())
            .filter(|u| !u.is_empty())
    }
}

/// The caller a token stands for. In `open` mode any non-empty token is accepted; in `verify` mode
/// the signature and expiry are checked and the org must be one the token names.
pub fn authenticate(config: &AuthConfig, token: &str, org: &str) -> Result<Caller, ApiError> {
    let claims = match &config.verify {
        None => unverified_claims(token),
        Some((key, validation)) => {
            let data = jsonwebtoken::decode::<Claims>(token.as_bytes(), key, validation)
                .map_err(|_| ApiError::new(Code::TokenInvalid, "Oauth token is not valid"))?;
            let claims = data.claims;
            let allowed =
                claims.orgs.iter().any(|o| o == org) || claims.org.as_deref() == Some(org);
            if !allowed {
                return Err(ApiError::new(Code::ProfileNotValid, "Profile is not valid"));
            }
            Some(claims)
        }
    };
    let user_id = match claims.as_ref().and_then(Claims::user) {
        Some(user) => user.to_owned(),
        None => derived_user_id(token),
    };
    Ok(Caller { user_id })
}

/// The claims of a JWT read without checking its signature; `None` when the token is not one.
fn unverified_claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A stable id for an opaque token: the same token always acts as the same user.
fn derived_user_id(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("{}@AdobeID", &hex::encode(digest)[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> AuthConfig {
        AuthConfig { verify: None }
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn user_comes_from_user_id_then_sub_then_the_token() {
        let a = jwt(serde_json::json!({"user_id": "u1", "sub": "s"}), "k");
        let b = jwt(serde_json::json!({"sub": "s2"}), "k");
        assert_eq!(authenticate(&open(), &a, "o").unwrap().user_id, "u1");
        assert_eq!(authenticate(&open(), &b, "o").unwrap().user_id, "s2");
        let opaque = authenticate(&open(), "abc", "o").unwrap().user_id;
        assert_eq!(opaque, authenticate(&open(), "abc", "o").unwrap().user_id);
        assert_ne!(opaque, authenticate(&open(), "abd", "o").unwrap().user_id);
    }

    const SECRET: &str = "a-secret-of-at-least-32-bytes-000";

    fn verifying(tweak: impl FnOnce(&mut Settings)) -> AuthConfig {
        let mut settings = Settings::for_database("postgres://x");
        settings.auth_mode = AuthMode::Verify;
        settings.jwt_secret = Some(crate::config::Secret(SECRET.into()));
        tweak(&mut settings);
        AuthConfig::from_settings(&settings)
    }

    #[test]
    fn verify_mode_checks_not_before_issuer_and_audience() {
        let now = chrono::Utc::now().timestamp();
        let claims = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"sub": "u", "exp": now + 3600, "org": "A@AdobeOrg"});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            jwt(c, SECRET)
        };
        let code = |config: &AuthConfig, token: &str| {
            authenticate(config, token, "A@AdobeOrg")
                .map(|c| c.user_id)
                .map_err(|e| e.code)
        };
        let plain = verifying(|_| {});
        assert_eq!(
            code(&plain, &claims(serde_json::json!({"nbf": now - 10}))),
            Ok("u".into())
        );
        assert_eq!(
            code(&plain, &claims(serde_json::json!({"nbf": now + 3600}))),
            Err(Code::TokenInvalid)
        );
        // Without JWT_ISSUER / JWT_AUDIENCE any iss and aud pass.
        assert!(code(&plain, &claims(serde_json::json!({"iss": "x", "aud": "y"}))).is_ok());
        let strict = verifying(|s| {
            s.jwt_issuer = Some("https://ims.example".into());
            s.jwt_audience = Some("audience-server".into());
        });
        let good =
            serde_json::json!({"iss": "https://ims.example", "aud": ["other", "audience-server"]});
        assert_eq!(code(&strict, &claims(good)), Ok("u".into()));
        for bad in [
            serde_json::json!({"iss": "https://evil.example", "aud": "audience-server"}),
            serde_json::json!({"iss": "https://ims.example", "aud": "other"}),
            serde_json::json!({"aud": "audience-server"}),
            serde_json::json!({"iss": "https://ims.example"}),
        ] {
            assert_eq!(
                code(&strict, &claims(bad.clone())),
                Err(Code::TokenInvalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn verify_mode_checks_signature_expiry_and_org() {
        let config = verifying(|_| {});
        let exp = chrono::Utc::now().timestamp() + 3600;
        let good = jwt(
            serde_json::json!({"sub": "u", "exp": exp, "orgs": ["A@AdobeOrg"]}),
            SECRET,
        );
        assert_eq!(
            authenticate(&config, &good, "A@AdobeOrg").unwrap().user_id,
            "u"
        );
        assert_eq!(
            authenticate(&config, &good, "B@AdobeOrg").unwrap_err().code,
            Code::ProfileNotValid
        );
        let forged = jwt(
            serde_json::json!({"sub": "u", "exp": exp, "org": "A@AdobeOrg"}),
            "other",
        );
        assert_eq!(
            authenticate(&config, &forged, "A@AdobeOrg")
                .unwrap_err()
                .code,
            Code::TokenInvalid
        );
        let expired = jwt(
            serde_json::json!({"sub": "u", "exp": exp - 7200, "org": "A@AdobeOrg"}),
            SECRET,
        );
        assert_eq!(
            authenticate(&config, &expired, "A@AdobeOrg")
                .unwrap_err()
                .code,
            Code::TokenInvalid
        );
        assert_eq!(
            authenticate(&config, "opaque", "A@AdobeOrg")
                .unwrap_err()
                .code,
            Code::TokenInvalid
        );
    }
}
