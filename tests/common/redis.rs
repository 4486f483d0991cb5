//! A private `redis-server` for integration tests, spawned on a free port and killed on drop.
//!
//! It never skips: a missing binary fails loudly and says which package to install.
//! It keeps nothing on disk (`--save "" --appendonly no`), so a restart starts empty; its log
//! and working files go to a temporary directory removed with it.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How many times a launch is tried before giving up (another process may grab the free port
/// between our probe and Redis's bind).
const ATTEMPTS: usize = 5;

/// How long a launched server gets to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running `redis-server` owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Dropped after the server is stopped (`Drop` runs before the fields drop).
    dir: TempDir,
    child: Option<Child>,
    /// Arguments beyond the defaults, kept for a restart.
    extra: Vec<String>,
}

impl RedisServer {
    /// Spawns a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not come up; the panic carries its log.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`] with `extra` arguments after the defaults (a cluster node's,
    /// for one).
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let dir = tempfile::Builder::new()
            .prefix("thrifty-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a redis test dir: {e}"));
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let port = free_port();
            match launch(dir.path(), port, &extra) {
                Ok(child) => {
                    return Self {
                        port,
                        dir,
                        child: Some(child),
                        extra,
                    };
                }
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
        }
        panic!(
            "redis-server did not start after {ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on; it stays the same across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and waits for it to exit; a stopped server refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen server dies only once it may run again.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            // The process may already have exited; either way `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and every command hangs, as
    /// with a Redis stuck on a slow disk or a full network buffer.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (`SIGCONT`); it answers what was sent meanwhile.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill {signal}: {e}"));
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Stops the server if it runs and starts a fresh, empty one on the same port.
    ///
    /// # Panics
    ///
    /// When the server does not come back; the panic carries its log.
    pub fn restart(&mut self) {
        self.stop();
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match launch(self.dir.path(), self.port, &self.extra) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "redis-server did not restart on port {} after {ATTEMPTS} attempts:\n{}",
            self.port,
            failures.join("\n")
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago: bind `127.0.0.1:0`, read the port, release it.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Spawns `redis-server` on `port` and waits until it is ready; on failure the server is
/// killed and the error carries its log.
fn launch(dir: &Path, port: u16, extra: &[String]) -> Result<Child, String> {
    let log = dir.join("redis.log");
    let output = dir.join("redis.out");
    let _ = fs::remove_file(&log);
    let output_file =
        File::create(&output).unwrap_or_else(|e| panic!("cannot create {}: {e}", output.display()));
    let stderr_file = output_file
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone {}: {e}", output.display()));
    let spawned = Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(output_file)
        .stderr(stderr_file)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!(
                "`redis-server` was not found on PATH; the integration tests need a real Redis: \
                 install Debian's `redis-server` package (`apt-get install redis-server`)"
            )
        }
        Err(e) => panic!("cannot spawn redis-server: {e}"),
    };
    match wait_ready(&mut child, port) {
        Ok(()) => Ok(child),
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
            Err(format!(
                "{reason}\n--- redis.log ---\n{}\n--- stdout/stderr ---\n{}",
                read(&log),
                read(&output)
            ))
        }
    }
}

/// Polls until the server on `port` answers `PING` and reports `child`'s pid, so that a
/// stranger that grabbed the port is never mistaken for our server.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid = format!("process_id:{}\r\n", child.id());
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited early with {status}"));
        }
        let pong = command(port, "PING").is_some_and(|reply| reply.starts_with("+PONG"));
        if pong && command(port, "INFO server").is_some_and(|info| info.contains(&pid)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server did not answer PING within {READY_TIMEOUT:?}"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Sends one inline command and returns the whole reply (a simple line or a bulk string).
pub fn command(port: u16, command: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let read = stream.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        reply.extend_from_slice(&buffer[..read]);
        if reply_complete(&reply) {
            return String::from_utf8(reply).ok();
        }
    }
}

/// Whether `reply` holds a whole RESP reply of the kinds `command` expects.
fn reply_complete(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if reply.first() != Some(&b'$') {
        return true;
    }
    let length = std::str::from_utf8(&reply[1..line_end])
        .ok()
        .and_then(|n| n.parse::<i64>().ok());
    match length {
        Some(n) if n >= 0 => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            reply.len() >= n.saturating_add(line_end + 4)
        }
        _ => true,
    }
}

/// Every command a server runs from the moment [`Monitor::start`] returns, as `MONITOR`
/// reports them (`1796628147.259388 [0 127.0.0.1:54321] "GET" "key"`), until dropped.
pub struct Monitor {
    stream: TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Monitor {
    /// # Panics
    ///
    /// If the server does not accept `MONITOR` within a second.
    pub fn start(port: u16) -> Monitor {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("cannot reach redis on {port} to monitor it: {e}"));
        stream.write_all(b"MONITOR\r\n").expect("MONITOR is sent");
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("a second handle"));
        let mut first = String::new();
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("a read timeout");
        std::io::BufRead::read_line(&mut reader, &mut first).expect("MONITOR answers");
        assert_eq!(first.trim_end(), "+OK", "MONITOR is on");
        stream.set_read_timeout(None).expect("no read timeout");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        thread::spawn(move || {
            for line in std::io::BufRead::lines(reader) {
                let Ok(line) = line else { return };
                let command = line.strip_prefix('+').unwrap_or(&line).to_owned();
                into.lock().expect("the monitor's log").push(command);
            }
        });
        Monitor { stream, seen }
    }

    /// The commands run so far.
    pub fn commands(&self) -> Vec<String> {
        self.seen.lock().expect("the monitor's log").clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
