//! The API's own documentation: Swagger UI at `/docs/` and the OpenAPI document at
//! `/openapi.json`. The Swagger UI assets are vendored under `swagger/` (see the README there)
//! and compiled in: no CDN, no network at run time. The page's title is the document's.
//!
//! Invariants: the routes added here are exactly those [`crate::auth::is_public`] lets through
//! without a token; the document served is the one the API's router was built with, rendered
//! once at start-up.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("swagger/index.html");
const INIT_JS: &str = include_str!("swagger/init.js");
const SWAGGER_CSS: &str = include_str!("swagger/swagger-ui.css");
const SWAGGER_JS: &str = include_str!("swagger/swagger-ui-bundle.js");

/// Adds `/openapi.json` (`doc`, pretty-printed) and Swagger UI under `/docs` to `api`.
pub fn with_docs<S>(api: Router<S>, doc: &utoipa::openapi::OpenApi) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let json = Bytes::from(doc.to_pretty_json().expect("the OpenAPI document serialises"));
    let page = Bytes::from(index_html(&doc.info.title));
    api.route("/openapi.json", get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }))
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(move || asset("text/html; charset=utf-8", page.clone())))
        .route("/docs/init.js", get(|| asset("text/javascript", Bytes::from_static(INIT_JS.as_bytes()))))
        .route("/docs/swagger-ui.css", get(|| asset("text/css", Bytes::from_static(SWAGGER_CSS.as_bytes()))))
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| asset("text/javascript", Bytes::from_static(SWAGGER_JS.as_bytes()))),
        )
}

/// `doc` as the file committed under `openapi/`: what `/openapi.json` serves, and a line feed.
pub fn document_file(doc: &utoipa::openapi::OpenApi) -> String {
    let mut text = doc.to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// The Swagger UI page, titled `title`.
fn index_html(title: &str) -> String {
    let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    INDEX_HTML.replace("{title}", &title)
}

async fn asset(content_type: &'static str, body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder};

    async fn get_path(app: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Bytes) {
        let response = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, to_bytes(body, usize::MAX).await.unwrap())
    }

    #[tokio::test]
    async fn docs_and_document_are_served() {
        let doc = OpenApiBuilder::new().info(InfoBuilder::new().title("fabriq <test> API").version("1")).build();
        let app = with_docs(Router::new(), &doc);

        let (status, headers, body) = get_path(&app, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(format!("{}\n", String::from_utf8(body.to_vec()).unwrap()), document_file(&doc));

        let (status, headers, _) = get_path(&app, "/docs").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/docs/");

        let (status, headers, body) = get_path(&app, "/docs/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=3600");
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(page.contains("<title>fabriq &lt;test&gt; API</title>") && page.contains("swagger-ui-bundle.js"));

        for (path, kind, len) in [
            ("/docs/init.js", "text/javascript", INIT_JS.len()),
            ("/docs/swagger-ui.css", "text/css", SWAGGER_CSS.len()),
            ("/docs/swagger-ui-bundle.js", "text/javascript", SWAGGER_JS.len()),
        ] {
            let (status, headers, body) = get_path(&app, path).await;
            assert_eq!(
                (status, headers[header::CONTENT_TYPE].to_str().unwrap(), body.len()),
                (StatusCode::OK, kind, len)
            );
        }
    }

    /// The page each API served from a copy of its own before the page was shared.
    #[test]
    fn the_page_is_what_each_api_served() {
        for title in ["fabriq-target node API", "fabriq provisioner API"] {
            let page = format!(
                "<!doctype html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>{title}</title>\n  \
                 <link rel=\"stylesheet\" href=\"/docs/swagger-ui.css\">\n</head>\n<body>\n  <div id=\"swagger-ui\"></div>\n  \
                 <script src=\"/docs/swagger-ui-bundle.js\"></script>\n  <script src=\"/docs/init.js\"></script>\n</body>\n</html>\n"
            );
            assert_eq!(index_html(title), page);
        }
    }
}
