//! The browsable API: Swagger UI at `/docs/`, served from assets compiled into the binary (no CDN),
//! reading the document the server serves at `/openapi.json`.

use actix_web::{http::header, HttpResponse};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where Swagger UI lives; `/docs` redirects here.
pub const DOCS_PATH: &str = "/docs/";
/// The document Swagger UI reads (served by `startup`).
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Swagger UI's pages and assets under `/docs/`. It only points at `/openapi.json`; it does not
/// serve a second copy of the document.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").config(
        Config::new([OPENAPI_PATH])
            .display_operation_id(true)
            .persist_authorization(true)
            .try_it_out_enabled(false)
            .filter(true),
    )
}

/// `/docs` without the slash: the page's assets are relative, so send the browser to `/docs/`.
pub async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, DOCS_PATH))
        .finish()
}
