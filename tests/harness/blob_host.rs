//! Static HTTP server rooted at a registry's filesystem storage dir: the target of the registry's
//! `redirect` storage middleware (a stand-in CDN). It serves
//! `/docker/registry/v2/blobs/sha256/<xx>/<hex>/data`, counts requests and records whether an
//! `Authorization` header ever arrived (a client must not forward registry credentials to it).

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{http_response, serve_http, BgServer, HttpHandler};

struct State {
    root: PathBuf,
    requests: AtomicUsize,
    saw_authorization: AtomicBool,
    paths: Mutex<Vec<String>>,
}

pub struct BlobHost {
    state: Arc<State>,
    server: BgServer,
}

impl BlobHost {
    /// Serves files under `root` (typically `registry.storage_dir()`) on 127.0.0.1:random.
    pub fn start(root: &Path) -> BlobHost {
        let state = Arc::new(State {
            root: root.to_path_buf(),
            requests: AtomicUsize::new(0),
            saw_authorization: AtomicBool::new(false),
            paths: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let handler: HttpHandler = Arc::new(move |req| {
            st.requests.fetch_add(1, Ordering::SeqCst);
            if req.headers().contains_key(http::header::AUTHORIZATION) {
                st.saw_authorization.store(true, Ordering::SeqCst);
            }
            let path = req.uri().path().to_string();
            st.paths.lock().expect("lock").push(path.clone());
            let rel = Path::new(path.trim_start_matches('/'));
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return http_response(400, &[], "bad path");
            }
            let is_head = req.method() == http::Method::HEAD;
            if req.method() != http::Method::GET && !is_head {
                return http_response(405, &[], "");
            }
            match std::fs::read(st.root.join(rel)) {
                Ok(data) => {
                    let len = data.len().to_string();
                    let body = if is_head { Vec::new() } else { data };
                    let mut resp =
                        http_response(200, &[("Content-Type", "application/octet-stream")], body);
                    // hyper would otherwise send Content-Length: 0 for HEAD.
                    resp.headers_mut().insert(
                        http::header::CONTENT_LENGTH,
                        http::HeaderValue::from_str(&len).expect("len header"),
                    );
                    resp
                }
                Err(_) => http_response(404, &[], "not found"),
            }
        });
        let server = BgServer::start("127.0.0.1:0".parse().expect("addr"), move |l| {
            serve_http(l, None, handler)
        });
        BlobHost { state, server }
    }

    /// `http://127.0.0.1:PORT/` — use as the redirect middleware `baseurl`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.server.addr().port())
    }
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// True if any request carried an `Authorization` header.
    pub fn saw_authorization(&self) -> bool {
        self.state.saw_authorization.load(Ordering::SeqCst)
    }
    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().expect("lock").clone()
    }
}

/// A base URL where nothing listens (bind-then-release), for the "blob host down" case.
pub fn blob_host_down_url() -> String {
    format!("http://127.0.0.1:{}/", super::free_port())
}
