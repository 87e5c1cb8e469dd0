//! A fault-injecting HTTP/1.1 proxy for the worker's fault tests
//! (`tests/faults.rs`): it sits between the `earshot` binary and a real
//! moto server (`AWS_ENDPOINT_URL` points at the proxy) and, per request,
//! passes the call through or injects a fault: drop the connection, delay,
//! reset it halfway through the response, answer HTTP 500/503, answer with
//! SQS's or S3's throttling error, or hang (read the request, never answer).
//!
//! Why per request and not per connection: the AWS SDK keeps connections
//! alive, so a fault chosen at accept time would miss most calls. The proxy
//! therefore parses each request (headers, `Content-Length` or chunked
//! body), names its operation (`X-Amz-Target: AmazonSQS.ReceiveMessage` for
//! SQS's JSON protocol, `Action=` for its query protocol, the method for
//! S3) and looks the rules up then. Rules are switched at run time and each
//! fires a bounded number of times, so a test controls exactly how much
//! goes wrong. `restart` stops listening and cuts every open connection for
//! a while, then listens again on the same port: what a restarted queue
//! server looks like to the worker, without the state loss of restarting
//! moto itself (moto keeps everything in memory).
//!
//! Plain std threads: one per client connection, each with its own
//! upstream connection. Test code: it panics on setup errors.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forward it.
    Pass,
    /// Close the client connection without answering.
    Drop,
    /// Wait, then forward.
    Delay(Duration),
    /// Forward, send back half of the response, then reset (RST).
    Reset,
    /// Answer this HTTP status with the service's error body.
    Status(u16),
    /// Answer the service's throttling error (SQS `ThrottlingException`,
    /// S3 `SlowDown` 503).
    Throttle,
    /// Read the request and never answer (until the client gives up).
    Hang,
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Any,
    /// Every SQS call.
    Sqs,
    /// One SQS operation (`ReceiveMessage`, `DeleteMessage`,
    /// `ChangeMessageVisibility`, ...).
    SqsOp(&'static str),
    /// Every S3 call.
    S3,
    /// S3 reads (GET).
    S3Get,
    /// S3 writes (PUT).
    S3Put,
    /// S3 calls of this method (`GET`, `PUT`) to paths that contain this
    /// text (a bucket, a key prefix).
    S3Path(&'static str, &'static str),
}

impl Target {
    fn matches(&self, op: &Op) -> bool {
        match self {
            Target::Any => true,
            Target::Sqs => op.service == "sqs",
            Target::SqsOp(name) => op.service == "sqs" && op.name == *name,
            Target::S3 => op.service == "s3",
            Target::S3Get => op.service == "s3" && op.name == "GET",
            Target::S3Put => op.service == "s3" && op.name == "PUT",
            Target::S3Path(method, text) => {
                op.service == "s3" && op.name == *method && op.path.contains(text)
            }
        }
    }
}

/// A request's service and operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub service: &'static str,
    pub name: String,
    /// The request target (path and query).
    pub path: String,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.service, self.name)
    }
}

struct Rule {
    target: Target,
    fault: Fault,
    /// Fires this many more times (None: for ever).
    remaining: Option<u32>,
    /// Fires on every n-th matching request (1: each one).
    every: u32,
    seen: u32,
    /// Whole calls: `remaining` counts SDK invocations (the
    /// `amz-sdk-invocation-id` header, the same on every retry of one
    /// call), and every attempt of a chosen call gets the fault, so the
    /// error outlasts the SDK's own retries and reaches the worker.
    whole_calls: bool,
    calls: std::collections::BTreeSet<String>,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    /// "op fault" → count, for the tests' proof that faults fired.
    counts: Mutex<BTreeMap<String, u64>>,
    /// Client connections open now (to cut them on `restart`), by id.
    conns: Mutex<BTreeMap<u64, TcpStream>>,
    next_conn: std::sync::atomic::AtomicU64,
    down: AtomicBool,
}

/// The proxy. Stops listening on drop.
pub struct FaultProxy {
    pub port: u16,
    upstream: SocketAddr,
    state: Arc<State>,
    accept_stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let port = listener.local_addr().unwrap().port();
        let mut p = FaultProxy {
            port,
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            state: Arc::new(State::default()),
            accept_stop: Arc::new(AtomicBool::new(false)),
        };
        p.spawn_accept(listener);
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn_accept(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.accept_stop = stop.clone();
        let state = self.state.clone();
        let upstream = self.upstream;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
                        if let Ok(c) = client.try_clone() {
                            state.conns.lock().unwrap().insert(id, c);
                        }
                        let state = state.clone();
                        std::thread::spawn(move || {
                            serve_conn(client, upstream, state.clone());
                            state.conns.lock().unwrap().remove(&id);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener: connections are refused from now on.
        });
    }

    /// Adds a rule: `fault` for requests matching `target`, `times` times
    /// (None: until cleared). Rules are tried in the order added.
    pub fn inject(&self, target: Target, fault: Fault, times: Option<u32>) {
        self.inject_every(target, fault, times, 1);
    }

    /// As [`FaultProxy::inject`], firing on every `every`-th match.
    pub fn inject_every(&self, target: Target, fault: Fault, times: Option<u32>, every: u32) {
        self.state.rules.lock().unwrap().push(Rule {
            target,
            fault,
            remaining: times,
            every: every.max(1),
            seen: 0,
            whole_calls: false,
            calls: Default::default(),
        });
    }

    /// `fault` on every attempt of the next `calls` SDK calls matching
    /// `target` (their retries included): the failure reaches the caller.
    pub fn inject_calls(&self, target: Target, fault: Fault, calls: u32) {
        self.state.rules.lock().unwrap().push(Rule {
            target,
            fault,
            remaining: Some(calls),
            every: 1,
            seen: 0,
            whole_calls: true,
            calls: Default::default(),
        });
    }

    /// Back to pass-through.
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Rules that still have firings left.
    pub fn pending_rules(&self) -> usize {
        self.state
            .rules
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.remaining != Some(0))
            .count()
    }

    /// How many requests of each "service:op fault" the proxy has seen.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    /// How many faults of a kind fired (any op), by the `Debug` name's
    /// prefix (`"Status(500)"`, `"Throttle"`, ...).
    pub fn fired(&self, fault: &str) -> u64 {
        self.counts()
            .iter()
            .filter(|(k, _)| k.split_once(' ').is_some_and(|(_, f)| f.starts_with(fault)))
            .map(|(_, n)| n)
            .sum()
    }

    /// Cuts every open connection and refuses new ones for `down`, then
    /// listens again on the same port (a restarted server, state intact).
    pub fn restart(&mut self, down: Duration) {
        self.state.down.store(true, Ordering::Release);
        self.accept_stop.store(true, Ordering::Release);
        for (_, c) in std::mem::take(&mut *self.state.conns.lock().unwrap()) {
            let _ = c.shutdown(Shutdown::Both);
        }
        std::thread::sleep(down);
        let t0 = Instant::now();
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(10), "rebinding: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        self.state.down.store(false, Ordering::Release);
        self.spawn_accept(listener);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_stop.store(true, Ordering::Release);
        for (_, c) in std::mem::take(&mut *self.state.conns.lock().unwrap()) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// One parsed HTTP message: its raw bytes, ready to forward.
struct Message {
    head: String,
    raw: Vec<u8>,
    /// The peer closed after this message (no length: read to EOF).
    closes: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn first_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }
}

/// Reads one HTTP message (request or response). `None` at a clean EOF.
/// `no_body`: a response to HEAD, or a status that has none.
fn read_message(r: &mut BufReader<TcpStream>, is_response_to_head: bool) -> Option<Message> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(_) => return None,
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            if raw.len() == line.len() {
                // Stray blank line between messages.
                raw.clear();
                continue;
            }
            break;
        }
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let mut m = Message {
        head,
        raw,
        closes: false,
    };
    let status: Option<u16> = m
        .first_line()
        .strip_prefix("HTTP/")
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    if is_response_to_head || matches!(status, Some(100..=199) | Some(204) | Some(304)) {
        return Some(m);
    }
    let chunked = m
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size_line = Vec::new();
            if r.read_until(b'\n', &mut size_line).ok()? == 0 {
                return None;
            }
            m.raw.extend_from_slice(&size_line);
            let size_text = String::from_utf8_lossy(&size_line);
            let size =
                usize::from_str_radix(size_text.trim().split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t).ok()? == 0 {
                        return None;
                    }
                    m.raw.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
            m.raw.extend_from_slice(&chunk);
        }
    } else if let Some(len) = m
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        m.raw.extend_from_slice(&body);
    } else if status.is_some() {
        // A response without a length: the body runs to EOF.
        let mut body = Vec::new();
        let _ = r.read_to_end(&mut body);
        m.raw.extend_from_slice(&body);
        m.closes = true;
    }
    if m.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        m.closes = true;
    }
    Some(m)
}

fn classify(req: &Message) -> Op {
    let mut line = req.first_line().split_whitespace();
    let method = line.next().unwrap_or("GET").to_string();
    let path = line.next().unwrap_or("/").to_string();
    if let Some(t) = req.header("x-amz-target") {
        if let Some(op) = t.strip_prefix("AmazonSQS.") {
            return Op {
                service: "sqs",
                name: op.to_string(),
                path,
            };
        }
    }
    let body_start = req.head.len().min(req.raw.len());
    let body = String::from_utf8_lossy(&req.raw[body_start..]);
    if let Some(action) = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .filter(|_| {
            req.header("content-type")
                .is_some_and(|c| c.contains("x-www-form-urlencoded"))
        })
    {
        return Op {
            service: "sqs",
            name: action.to_string(),
            path,
        };
    }
    Op {
        service: "s3",
        name: method,
        path,
    }
}

impl State {
    fn pick(&self, op: &Op, invocation: Option<&str>) -> Fault {
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut() {
            if !r.target.matches(op) {
                continue;
            }
            if r.whole_calls {
                let Some(id) = invocation else { continue };
                if r.calls.contains(id) {
                    return r.fault;
                }
                if r.remaining.is_some_and(|n| n > 0) {
                    r.remaining = r.remaining.map(|n| n - 1);
                    r.calls.insert(id.to_string());
                    return r.fault;
                }
                continue;
            }
            if r.remaining == Some(0) {
                continue;
            }
            r.seen += 1;
            if r.seen % r.every != 0 {
                continue;
            }
            if let Some(n) = r.remaining.as_mut() {
                *n -= 1;
            }
            return r.fault;
        }
        Fault::Pass
    }

    fn count(&self, op: &Op, fault: Fault) {
        let key = format!("{op} {fault:?}");
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
    }
}

/// An error response in the service's own shape.
fn error_response(op: &Op, status: u16, code: &str, message: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let (ctype, body, extra) = if op.service == "sqs" {
        (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"{message}"}}"#),
            format!("x-amzn-query-error: {code};Sender\r\n"),
        )
    } else {
        (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
            ),
            String::new(),
        )
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nx-amzn-requestid: fault-proxy\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SO_LINGER 0: close() sends RST instead of FIN.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve_conn(client: TcpStream, upstream_addr: SocketAddr, state: Arc<State>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while let Some(req) = read_message(&mut reader, false) {
        if state.down.load(Ordering::Acquire) {
            reset(&client);
            return;
        }
        let op = classify(&req);
        let fault = state.pick(&op, req.header("amz-sdk-invocation-id"));
        state.count(&op, fault);
        let forward =
            |upstream: &mut Option<(TcpStream, BufReader<TcpStream>)>| -> Option<Message> {
                for _ in 0..2 {
                    if upstream.is_none() {
                        let s = TcpStream::connect(upstream_addr).ok()?;
                        let r = BufReader::new(s.try_clone().ok()?);
                        *upstream = Some((s, r));
                    }
                    let (s, r) = upstream.as_mut()?;
                    let is_head = req.first_line().starts_with("HEAD ");
                    if s.write_all(&req.raw).is_ok() {
                        if let Some(resp) = read_message(r, is_head) {
                            if resp.closes {
                                *upstream = None;
                            }
                            return Some(resp);
                        }
                    }
                    // The kept-alive upstream connection went away: once more.
                    *upstream = None;
                }
                None
            };
        match fault {
            Fault::Pass | Fault::Delay(_) => {
                if let Fault::Delay(d) = fault {
                    std::thread::sleep(d);
                }
                let Some(resp) = forward(&mut upstream) else {
                    return;
                };
                if client.write_all(&resp.raw).is_err() || resp.closes {
                    return;
                }
            }
            Fault::Drop => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Fault::Reset => {
                if let Some(resp) = forward(&mut upstream) {
                    let half = resp.raw.len() / 2;
                    let _ = client.write_all(&resp.raw[..half.max(1)]);
                    let _ = client.flush();
                }
                reset(&client);
                return;
            }
            Fault::Status(code) => {
                let name = if code >= 500 && op.service == "s3" {
                    if code == 503 {
                        "ServiceUnavailable"
                    } else {
                        "InternalError"
                    }
                } else if code == 503 {
                    "ServiceUnavailable"
                } else {
                    "InternalError"
                };
                let resp = error_response(&op, code, name, "injected by the fault proxy");
                if client.write_all(&resp).is_err() {
                    return;
                }
            }
            Fault::Throttle => {
                let resp = if op.service == "sqs" {
                    error_response(&op, 400, "ThrottlingException", "Rate exceeded")
                } else {
                    error_response(&op, 503, "SlowDown", "Please reduce your request rate.")
                };
                if client.write_all(&resp).is_err() {
                    return;
                }
            }
            Fault::Hang => {
                // Hold the connection until the client gives up (or the
                // proxy restarts), answering nothing.
                let mut sink = [0u8; 1024];
                let t0 = Instant::now();
                let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
                while t0.elapsed() < Duration::from_secs(600) && !state.down.load(Ordering::Acquire)
                {
                    match client.read(&mut sink) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
        }
    }
}
