//! A JetStream cluster for one test: `nats-server` processes on loopback, joined by routes, each
//! with its own store directory and server name, any of which the test may kill.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::nats::free_port;

pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

struct Node {
    name: String,
    port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// `size` servers named `node-0`, `node-1`, ..., JetStream on, routed to each other.
    pub fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir for the cluster's stores");
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("node-{i}");
            let port = free_port();
            let store = dir.path().join(&name);
            let child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["--server_name", &name, "--cluster_name", "ms-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--routes", &routes])
                .arg("-sd")
                .arg(&store)
                .arg("-l")
                .arg(dir.path().join(format!("{name}.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server (Debian package nats-server)");
            nodes.push(Node {
                name,
                port,
                child: Some(child),
            });
        }
        let cluster = NatsCluster { nodes, dir };
        for node in &cluster.nodes {
            wait_for_port(node.port);
        }
        cluster
    }

    /// Every server, comma-separated, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client connected to the cluster (any server), following it when one dies.
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect();
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(urls)
            .await
            .expect("connect to the cluster")
    }

    /// Waits until JetStream has a meta leader (the cluster formed), at most `timeout`.
    pub async fn wait_for_jetstream(&self, timeout: Duration) {
        let client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            // The account info request answers without an error once a meta leader is elected
            // (read raw: the client's typed reply may not match an older server's).
            let error = match client.request("$JS.API.INFO", "".into()).await {
                Ok(reply) => {
                    let info: serde_json::Value =
                        serde_json::from_slice(&reply.payload).unwrap_or_default();
                    match info.get("error") {
                        None if info.is_object() => return,
                        other => format!("{other:?}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "the JetStream cluster did not form ({error}):\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The server name leading `stream`, once it has one.
    pub async fn stream_leader(&self, stream: &str, timeout: Duration) -> String {
        let js = async_nats::jetstream::new(self.client().await);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut s) = js.get_stream(stream).await {
                if let Ok(info) = s.info().await {
                    if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                        return leader;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{stream} has no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every server's log so far.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = self.dir.path().join(format!("{}.log", n.name));
                format!(
                    "--- {}\n{}",
                    n.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Kills the server called `name` (SIGKILL: a crash).
    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no server called {name}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
