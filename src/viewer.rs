//! The web viewer's static files (`viewer/dist`, built by Vite), served at
//! `/` with a single-page-app fallback to `index.html`.

use std::path::Path;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

/// A router that serves `dir` at `/`; unknown paths get `index.html` so
/// client-side routes (e.g. `/study/1.2.3`) survive a reload. When `dir`
/// has no `index.html` the viewer is not built and every path answers 404
/// with a short explanation.
pub(crate) fn routes<S>(dir: &Path) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let index = dir.join("index.html");
    if !index.is_file() {
        let msg = not_built_message(dir);
        return Router::new().fallback(get(move || {
            let msg = msg.clone();
            async move { (StatusCode::NOT_FOUND, msg) }
        }));
    }
    let serve = ServeDir::new(dir).fallback(ServeFile::new(index));
    Router::new().fallback_service(serve)
}

fn not_built_message(dir: &Path) -> String {
    format!(
        "The Phim viewer is not built (no {}).\n\
         Build it with `cd viewer && npm ci && npm run build`, or point --viewer-dir at a build.\n\
         DICOMweb is at /dicomweb.\n",
        dir.join("index.html").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `routes(dir)` on a free port and answers one GET (status, body).
    async fn get(dir: &Path, path: &str) -> (u16, String) {
        let app: Router = routes(dir);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        server.abort();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap();
        (status, body)
    }

    #[tokio::test]
    async fn missing_build_answers_404_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let (status, body) = get(&dir.path().join("dist"), "/").await;
        assert_eq!(status, 404);
        assert!(body.contains("viewer is not built"), "{body}");
    }

    #[tokio::test]
    async fn serves_files_and_falls_back_to_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<main id=app></main>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app.js"), "console.log(1)").unwrap();
        assert_eq!(
            get(dir.path(), "/").await,
            (200, "<main id=app></main>".into())
        );
        assert_eq!(
            get(dir.path(), "/assets/app.js").await,
            (200, "console.log(1)".into())
        );
        // Client-side routes get index.html so a reload works.
        assert_eq!(
            get(dir.path(), "/study/1.2.3").await,
            (200, "<main id=app></main>".into())
        );
    }
}
