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

use crate::api::{self, gate, links, schemas};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Audience reference server",
        description = "A persistent reference implementation of Adobe Experience Platform's audience APIs: the Segmentation Service audiences (`/data/core/ups`) and audience ingestion (`/data/core/ais`), and the Data Landing Zone endpoints runs read their files from (`/data/foundation/connectors/landingzone`). Every route is also served without `/data` and with a trailing slash.\n\nEvery API call carries four headers, checked in this order before anything else: `Authorization: Bearer <token>`, `x-api-key`, `x-gw-ims-org-id` and `x-sandbox-name` (they are the security schemes below). Every resource belongs to one (organisation, sandbox): another tenant's resource answers 404. Every response carries `x-request-id`, and every body is JSON, errors included: header errors in the gateway's shape (`GatewayError`), all others in the service's shape (`ErrorBody`). A wrong method on a known path answers 405 and an unknown path 404, both in the service's shape.\n\nThe landing zones' blob API (`<PUBLIC_URL>/<storageAccountName>/dlz-user-container/...`, authenticated by the SAS token of the credentials endpoint) speaks Azure Blob Storage's REST protocol and XML, and is not described here: see the project's docs/LANDING.md.\n\nThis document is generated from the handlers; the browsable version is at `/docs`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "The server that serves this document")),
    components(schemas(schemas::GatewayError, schemas::BadRequestBody, schemas::ErrorBody)),
    tags(
        (name = "Audiences", description = "UPS (Segmentation Service) audiences"),
        (name = "Audience ingestion", description = "AIS: meta-only audiences, external audiences, their creation operations and ingestion runs"),
        (name = "Data Landing Zone", description = "Each sandbox's Data Landing Zone container and its SAS credentials (Adobe's Connectors API). Files are uploaded to the container with Azure Blob clients; ingestion runs read them."),
        (name = "Operations", description = "Server health and documents"),
        (name = "Test control", description = "Not part of Adobe's API: endpoints for client test suites under `/_local` (reset a sandbox, run its jobs now, move its clock), scoped by the usual headers. Served only with `CONTROL_API` on (the default in `open` auth mode); with `CONTROL_TOKEN` set they need `Authorization: Bearer <CONTROL_TOKEN>`. See docs/CONTROL.md."),
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
    gate::openapi::document(&mut doc);
    links::document(&mut doc);
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
