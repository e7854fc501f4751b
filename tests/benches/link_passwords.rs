//! Password-protected links, measured: `cargo bench -p tests --bench link_passwords` (release
//! build; never run in CI). Prints one table.
//!
//! - Argon2id verification cost on this machine (the OWASP parameters `events::password` uses).
//! - Resolve req/s of a protected link sent the right password on every request, beside an open
//!   link's, interleaved in rounds (goal ≥ 0.5: a verified password is remembered per instance
//!   by a keyed hash, so Argon2 runs once).
//! - Open-link resolve req/s while many client IPs flood a protected link with wrong passwords,
//!   beside the same without the flood (goal ≥ 0.5: the bounded verification pool keeps Argon2
//!   from starving everyone else).
//!
//! The app is built in-process from `query_api::App` behind the binary's shared layers, served
//! on its own runtime; the load generator (HTTP/1 keep-alive) runs on another.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use events::password::SharePassword;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use query_api::{App, Settings};
use tests::nats::PrivateNats;
use tests::query::{audio_bytes, QueryEnv, ShareOpts, SIGNING_KEYS};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const PASSWORD: &str = "correct horse battery";
const CONNECTIONS: usize = 16;
const FLOOD_CONNECTIONS: usize = 32;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: u32 = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn row(a: &str, b: String, c: String) {
    println!("{a:<48} {b:<16} {c}");
}

async fn run() {
    // Argon2id cost, on a blocking thread as the services run it.
    let hash = SharePassword::new(PASSWORD).hash();
    let verifies = 20;
    let started = Instant::now();
    let h = hash.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..verifies {
            assert!(h.verify(&SharePassword::new(PASSWORD)));
        }
    })
    .await
    .expect("verify");
    let verify_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(verifies);

    let nats = PrivateNats::start();
    let q = QueryEnv::new(&nats.url()).await;
    let track = q.track("Bench", &audio_bytes(1000)).await;
    let (open, _) = q.share("track", &track, ShareOpts::default()).await;
    let (protected, _) = q
        .share(
            "track",
            &track,
            ShareOpts {
                password: Some(PASSWORD),
                ..ShareOpts::default()
            },
        )
        .await;
    let settings = Settings {
        media_base_url: "http://127.0.0.1:8081".to_owned(),
        media_dir: q.media_dir(),
        audit_spool_dir: q.dir.path().join("spool"),
        audit_spool_max_bytes: 1 << 30,
        playback_signing_keys: Some(SIGNING_KEYS.to_owned()),
        playback_url_ttl: Duration::from_secs(300),
        resolve_rate_per_minute: 1_000_000_000,
        resolve_burst: 1_000_000_000,
        // The flood comes from many client addresses, told by `X-Forwarded-For`.
        trusted_proxies: "127.0.0.1/32".to_owned(),
        cache_enabled: true,
        audit_enabled: true,
        nats_url: nats.url(),
        notice_namespace: q.db.name.clone(),
        stats_flush_every: Duration::from_secs(2),
        password_check_workers: 0,
        rate_limit_redis_url: None,
        rate_limit_redis_timeout: Duration::from_millis(100),
        audit_stream_replicas: 1,
    };
    let server = InProcess::start(q.db.url.clone(), settings).await;
    let open_path = format!("/v1/music/shared/{open}");
    let protected_path = format!("/v1/music/shared/{protected}");

    // Right password on every request beside the open link, interleaved.
    let (mut open_rps, mut right_rps) = (Rate::default(), Rate::default());
    for _ in 0..ROUNDS {
        open_rps.add(load(server.addr, &open_path, CONNECTIONS, ROUND, Header::None).await);
        right_rps.add(
            load(
                server.addr,
                &protected_path,
                CONNECTIONS,
                ROUND,
                Header::Right,
            )
            .await,
        );
    }

    // The open link with and without a flood of wrong passwords from distinct addresses.
    let (mut calm, mut flooded, mut flood) = (Rate::default(), Rate::default(), Rate::default());
    for _ in 0..ROUNDS {
        calm.add(load(server.addr, &open_path, CONNECTIONS, ROUND, Header::None).await);
        let flood_task = tokio::spawn({
            let path = protected_path.clone();
            let addr = server.addr;
            async move { load(addr, &path, FLOOD_CONNECTIONS, ROUND, Header::WrongFromMany).await }
        });
        flooded.add(load(server.addr, &open_path, CONNECTIONS, ROUND, Header::None).await);
        flood.add(flood_task.await.expect("flood"));
    }
    server.stop().await;

    println!();
    println!("link passwords (release build, {} cores)", cores());
    row(
        "Argon2id verify (m=19 MiB, t=2, p=1)",
        format!("{verify_ms:.1} ms"),
        format!("mean of {verifies}"),
    );
    row(
        "open link resolve",
        format!("{:.0} req/s", open_rps.rps()),
        "baseline".into(),
    );
    row(
        "protected link, right password every time",
        format!("{:.0} req/s", right_rps.rps()),
        format!(
            "÷ open = {:.2} (goal ≥ 0.5); {} not 200",
            right_rps.rps() / open_rps.rps(),
            right_rps.other
        ),
    );
    row(
        "open link, no flood",
        format!("{:.0} req/s", calm.rps()),
        "baseline".into(),
    );
    row(
        "open link, wrong-password flood",
        format!("{:.0} req/s", flooded.rps()),
        format!(
            "÷ no flood = {:.2} (goal ≥ 0.5)",
            flooded.rps() / calm.rps()
        ),
    );
    row(
        "  the flood itself",
        format!(
            "{:.0} req/s",
            flood.total() as f64 / flood.elapsed.as_secs_f64()
        ),
        format!(
            "{} answered 401, {} 429 (busy or guess limit)",
            flood.by_status[0], flood.by_status[1]
        ),
    );
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Clone, Copy)]
enum Header {
    None,
    Right,
    /// A wrong password from a new client address on every request (each a fresh guess).
    WrongFromMany,
}

#[derive(Default)]
struct Rate {
    ok: u64,
    other: u64,
    /// 401s, 429s.
    by_status: [u64; 2],
    elapsed: Duration,
}

impl Rate {
    fn add(&mut self, other: Rate) {
        self.ok += other.ok;
        self.other += other.other;
        self.by_status[0] += other.by_status[0];
        self.by_status[1] += other.by_status[1];
        self.elapsed += other.elapsed;
    }

    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn total(&self) -> u64 {
        self.ok + self.other
    }
}

static ADDRESSES: AtomicU64 = AtomicU64::new(0);

/// GETs `path` on `connections` keep-alive connections for `duration`.
async fn load(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    header: Header,
) -> Rate {
    let end = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let path = path.to_owned();
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let mut rate = Rate::default();
                while Instant::now() < end {
                    let mut request = hyper::Request::get(path.as_str())
                        .header("host", "bench")
                        .header("user-agent", "password-bench");
                    match header {
                        Header::None => {}
                        Header::Right => request = request.header("x-share-password", PASSWORD),
                        Header::WrongFromMany => {
                            let n = ADDRESSES.fetch_add(1, Ordering::Relaxed);
                            let ip =
                                format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                            request = request
                                .header("x-forwarded-for", ip)
                                .header("x-share-password", format!("wrong guess {n}"));
                        }
                    }
                    let request = request.body(Empty::<Bytes>::new()).expect("request");
                    if sender.ready().await.is_err() {
                        break;
                    }
                    let Ok(response) = sender.send_request(request).await else {
                        break;
                    };
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    match status {
                        200 => rate.ok += 1,
                        401 => {
                            rate.other += 1;
                            rate.by_status[0] += 1
                        }
                        429 => {
                            rate.other += 1;
                            rate.by_status[1] += 1
                        }
                        _ => rate.other += 1,
                    }
                }
                rate
            })
        })
        .collect();
    let mut total = Rate::default();
    for task in tasks {
        total.add(task.await.expect("load task"));
    }
    total.elapsed = started.elapsed();
    total
}

/// The app on its own runtime and thread, as the binary would serve it.
struct InProcess {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl InProcess {
    async fn start(database_url: String, settings: Settings) -> InProcess {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let pool = migrations::prepare(&database_url, 4).await.expect("pool");
                let app = App::start(settings, pool).await.expect("app");
                let router = service_kit::server::finish(app.routes());
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let _ = addr_tx.send(listener.local_addr().expect("addr"));
                service_kit::server::serve(listener, router, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
                app.shutdown().await;
            });
        });
        InProcess {
            addr: addr_rx.await.expect("server address"),
            stop: stop_tx,
            thread,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}
