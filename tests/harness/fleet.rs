//! Many SCRIPTED servers at once — one port per "registry host" — on one thread and runtime: a
//! hostile registry that answers on 50 host names costs one thread, not 50 (see scripted.rs for
//! when a scripted server is allowed). The handler learns which port a request came to.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::scripted::{serve_conn, Handler, Reply, Request};

pub struct ScriptedFleet {
    ports: Vec<u16>,
    logs: BTreeMap<u16, Arc<Mutex<Vec<Request>>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedFleet {
    /// `n` plain-HTTP servers on 127.0.0.1; `handler(port, request)` decides every answer.
    pub fn start(
        n: usize,
        handler: impl Fn(u16, &Request) -> Reply + Send + Sync + 'static,
    ) -> ScriptedFleet {
        let handler = Arc::new(handler);
        let listeners: Vec<StdListener> = (0..n)
            .map(|_| {
                let l = StdListener::bind("127.0.0.1:0").expect("bind fleet server");
                l.set_nonblocking(true).expect("nonblocking");
                l
            })
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        let logs: BTreeMap<u16, Arc<Mutex<Vec<Request>>>> =
            ports.iter().map(|p| (*p, Arc::default())).collect();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = logs.clone();
        let thread = std::thread::Builder::new()
            .name("harness-fleet".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    for l in listeners {
                        let port = l.local_addr().expect("addr").port();
                        let h = handler.clone();
                        let per_port: Handler = Arc::new(move |r: &Request| h(port, r));
                        let log = served[&port].clone();
                        tokio::spawn(accept_loop(l, per_port, log));
                    }
                    let _ = rx.await;
                });
                rt.shutdown_background();
            })
            .expect("spawn fleet thread");
        ScriptedFleet {
            ports,
            logs,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `127.0.0.1:PORT` of every server.
    pub fn host_ports(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// How many servers got at least one request.
    pub fn ports_hit(&self) -> usize {
        self.logs
            .values()
            .filter(|l| !l.lock().expect("lock").is_empty())
            .count()
    }

    /// Requests to all servers so far.
    pub fn request_count(&self) -> usize {
        self.logs
            .values()
            .map(|l| l.lock().expect("lock").len())
            .sum()
    }
}

async fn accept_loop(l: StdListener, handler: Handler, log: Arc<Mutex<Vec<Request>>>) {
    let l = tokio::net::TcpListener::from_std(l).expect("from_std");
    loop {
        let Ok((tcp, _)) = l.accept().await else {
            continue;
        };
        let (h, log) = (handler.clone(), log.clone());
        tokio::spawn(async move { serve_conn(Box::new(tcp), h, log).await });
    }
}

impl Drop for ScriptedFleet {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
