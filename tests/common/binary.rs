//! The real binary of the package, started on free loopback ports with fresh certificates
//! and a kubeconfig that points at a closed port: plain reviews need no API server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// The real binary, serving on free loopback ports; killed when dropped.
pub struct Webhook {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub admin: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Webhook {
    pub async fn start(extra: &[&str]) -> Webhook {
        Webhook::start_with_kubeconfig(extra, None).await
    }

    /// Started with `kubeconfig` (e.g. the webhook's own identity on the local control
    /// plane), or one that points at a closed port.
    pub async fn start_with_kubeconfig(
        extra: &[&str],
        kubeconfig: Option<&std::path::Path>,
    ) -> Webhook {
        Webhook::spawn(extra, kubeconfig, false).await
    }

    /// Started with its JSON log at info level (the shipped defaults) written to
    /// [`Webhook::log`].
    pub async fn start_logging(extra: &[&str]) -> Webhook {
        Webhook::spawn(extra, None, true).await
    }

    /// The lines the webhook has logged so far (with [`Webhook::start_logging`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default()
    }

    async fn spawn(extra: &[&str], kubeconfig: Option<&std::path::Path>, log: bool) -> Webhook {
        let dir = tempfile::tempdir().expect("tempdir");
        issue_certs(dir.path());
        let closed = dir.path().join("kubeconfig");
        let kubeconfig = kubeconfig.map_or_else(|| closed.clone(), |k| k.to_owned());
        std::fs::write(
            &closed,
            "apiVersion: v1\nkind: Config\nclusters: [{name: none, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
             users: [{name: none, user: {token: none}}]\ncontexts: [{name: none, context: {cluster: none, user: none}}]\ncurrent-context: none\n",
        )
        .expect("kubeconfig");
        let (port, admin_port) = (free_port(), free_port());
        let addr = format!("127.0.0.1:{port}");
        let admin = format!("127.0.0.1:{admin_port}");
        // The log as shipped: JSON, and RUST_LOG unset (the default filter).
        let (format, filter, stderr) = if log {
            let file = std::fs::File::create(dir.path().join("webhook.log")).expect("log file");
            ("json", None, Stdio::from(file))
        } else {
            ("text", Some("error"), Stdio::null())
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_pvc-clone-guard"));
        match filter {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .arg("serve")
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args([
                "--listen",
                &addr,
                "--admin-listen",
                &admin,
                "--log-format",
                format,
            ])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("pvc-clone-guard starts");
        Webhook {
            child,
            dir,
            addr,
            admin,
        }
        .live()
        .await
    }

    /// Waits (at most 10 s) until the admin port says the webhook is alive.
    pub async fn live(self) -> Webhook {
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin_get(&self.admin, "/livez").await.0 != 200 {
            assert!(Instant::now() < deadline, "the webhook did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub async fn post(&self, body: &[u8]) -> (u16, String) {
        https_post(&self.addr, &self.ca(), body).await
    }

    /// A plain claim is allowed: the server is up and answering.
    pub async fn assert_answers(&self) {
        let (status, body) = self
            .post(&serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"allowed\":true"), "{body}");
    }

    /// Sends SIGTERM and waits (at most 25 s) for the exit; its code.
    pub async fn terminate_and_wait(&mut self) -> Option<i32> {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the webhook did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn terminate(&self) {
        // SAFETY-free: kill(2) through the kill command keeps the test free of libc.
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn admin_get(admin: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(admin).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}
