//! The base OpenAPI document: info, tags and the header security schemes. Paths and schemas are
//! collected from the handlers by `utoipa-actix-web`.

use actix_web::App;
use utoipa::{
    openapi::{
        security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        },
        OpenApi as Document,
    },
    Modify, OpenApi,
};
use utoipa_actix_web::AppExt;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Audience reference server",
        description = "A persistent reference implementation of Adobe Experience Platform's audience APIs: the Segmentation Service audiences (`/data/core/ups`) and audience ingestion (`/data/core/ais`). Every route is also served without `/data` and with a trailing slash.",
        license(name = "Apache-2.0"),
    ),
    tags(
        (name = "Audiences", description = "UPS (Segmentation Service) audiences"),
        (name = "Audience ingestion", description = "AIS: meta-only audiences, external audiences, their creation operations and ingestion runs"),
        (name = "Operations", description = "Server health and documents"),
    ),
    modifiers(&HeaderSecurity),
)]
struct BaseDoc;

/// Every API call carries these four headers; they are described as security schemes so that
/// generated clients and Swagger UI send them.
struct HeaderSecurity;

pub const SECURITY_SCHEMES: [(&str, &str); 3] = [
    ("apiKey", "x-api-key"),
    ("imsOrg", "x-gw-ims-org-id"),
    ("sandboxName", "x-sandbox-name"),
];

impl Modify for HeaderSecurity {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("`Authorization: Bearer <token>`. Any non-empty token in the default `open` mode; an HS256 JWT bound to the org in `verify` mode."))
                    .build(),
            ),
        );
        for (name, header) in SECURITY_SCHEMES {
            components.add_security_scheme(
                name,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(header))),
            );
        }
        let all = SecurityRequirement::new("bearerAuth", Vec::<String>::new())
            .add("apiKey", Vec::<String>::new())
            .add("imsOrg", Vec::<String>::new())
            .add("sandboxName", Vec::<String>::new());
        doc.security = Some(vec![all]);
    }
}

/// The document of everything `api::configure` registers.
pub fn document() -> Document {
    let (_, mut doc) = App::new()
        .into_utoipa_app()
        .openapi(BaseDoc::openapi())
        .configure(api::configure)
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}
