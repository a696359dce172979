//! `ltvx serve` end to end: the real binary on a free loopback port, every route and error code, auth,
//! hot reload (good and bad files, the route and SIGHUP), the binary fast path, backpressure, slow
//! clients, graceful shutdown on SIGTERM, and `ltvx bench --server`. Waits are generous and nothing is
//! timed: CI is a loaded 2-core machine.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::ok;
use ltvx::engine::Batch;
use ltvx::model::graph::InputSizes;
use ltvx::serve::binary;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
const SIZES: InputSizes = InputSizes { seq_channels: 4, seq_len: 52, static_features: 32 };

/// A running `ltvx serve`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ltvx"))
            .arg("serve")
            .arg(model)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ltvx serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr =
            rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().unwrap()));
        let server = Server { child, addr, log };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while self.get("/health/ready").status != 200 {
            assert!(start.elapsed() < WAIT, "never ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"")
    }

    fn score(&self, body: &Value) -> Reply {
        http(&self.addr, "POST", "/v1/score", &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// A metric's value, summed over its label sets.
    fn metric(&self, name: &str) -> f64 {
        let text = String::from_utf8(self.get("/metrics").body).unwrap();
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error message of a refusal with `status`.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        self.json()["error"].as_str().unwrap().to_string()
    }
}

/// One request on its own connection (`Connection: close`), read to the end.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    s.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_reply(&mut s)
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: raw[split + 4..].to_vec() }
}

fn model(dir: &Path, name: &str, preset: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    ok(&["-q", "init", "--preset", preset, "--seed", &seed.to_string(), "--out", path.to_str().unwrap()]);
    path
}

/// A feature-form customer with values from `k`.
fn customer(id: &str, k: usize) -> Value {
    let seq: Vec<Vec<f32>> = (0..SIZES.seq_channels)
        .map(|c| (0..SIZES.seq_len).map(|t| ((c * 7 + t + k) % 11) as f32 / 4.0).collect())
        .collect();
    let stat: Vec<f32> = (0..SIZES.static_features).map(|i| ((i + k) % 5) as f32 - 2.0).collect();
    json!({"customer_id": id, "seq": seq, "static": stat})
}

fn customers(n: usize) -> Value {
    json!({"customers": (0..n).map(|i| customer(&format!("c{i}"), i)).collect::<Vec<_>>()})
}

#[test]
fn every_route_and_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = model(dir.path(), "tiny.ltvx", "tiny", 0);
    let server = Server::start(&tiny, &["--max-body-bytes", "300000", "--queue-capacity", "100"]);

    assert_eq!(server.get("/health/live").json()["status"], "live");
    let ready = server.get("/health/ready").json();
    assert_eq!(ready["model"]["version"], 1);
    let info = server.get("/v1/model").json();
    assert_eq!(info["inputs"]["seq_channels"], 4);
    assert_eq!(info["hash"], ready["model"]["hash"]);
    assert_eq!(info["name"], "ltvx-tiny");

    // Scores come back in request order, with the model's identity; unknown fields are ignored.
    let mut request = customers(5);
    request["customers"][2]["note"] = json!("ignored");
    request["trace"] = json!(true);
    let reply = server.score(&request).json();
    assert_eq!(reply["model"], ready["model"]);
    let scores = reply["scores"].as_array().unwrap();
    let ids: Vec<&str> = scores.iter().map(|s| s["customer_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3", "c4"]);
    for s in scores {
        assert_eq!(s["p_segment"].as_array().unwrap().len(), 5);
        assert!(s["ltv"].as_f64().unwrap() >= 0.0 && s["churn_probability"].as_f64().unwrap() <= 1.0);
    }
    assert_eq!(server.score(&json!({"customers": []})).json()["scores"], json!([]));

    // The binary fast path gives the same numbers.
    let rows: Vec<(Vec<f32>, Vec<f32>)> = request["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let seq = c["seq"].as_array().unwrap().iter().flat_map(|ch| ch.as_array().unwrap().clone());
            let seq = seq.map(|v| v.as_f64().unwrap() as f32).collect();
            (seq, c["static"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        })
        .collect();
    let mut batch = Batch::new(SIZES);
    for (seq, stat) in &rows {
        batch.push(seq, stat).unwrap();
    }
    let octets = [("Content-Type", "application/octet-stream")];
    let reply = http(&server.addr, "POST", "/v1/score", &octets, &binary::encode_request(&batch));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/octet-stream"));
    let packed = binary::decode_response(&reply.body).unwrap();
    assert_eq!(packed.len(), 5);
    for (i, s) in scores.iter().enumerate() {
        assert_eq!(packed.ltv[i], s["ltv"].as_f64().unwrap() as f32);
        assert_eq!(packed.segment[i] as u64, s["segment"].as_u64().unwrap());
        assert_eq!(packed.p_segment_row(i)[4], s["p_segment"][4].as_f64().unwrap() as f32);
    }
    let mut bad = binary::encode_request(&batch);
    bad[..4].copy_from_slice(b"JSON");
    assert!(http(&server.addr, "POST", "/v1/score", &octets, &bad).error(400).contains("LTVB"));
    let other = Batch::from_vecs(InputSizes { seq_channels: 2, ..SIZES }, vec![0.0; 104], vec![0.0; 32]).unwrap();
    let m = http(&server.addr, "POST", "/v1/score", &octets, &binary::encode_request(&other)).error(422);
    assert!(m.contains("C=2") && m.contains("C=4"), "{m}");

    // 400: malformed JSON. 422: shapes and values, naming the customer and the field.
    let json_type = [("Content-Type", "application/json")];
    assert!(
        http(&server.addr, "POST", "/v1/score", &json_type, b"{\"customers\": [").error(400).contains("malformed JSON")
    );
    let mut wrong = customers(3);
    wrong["customers"][1]["seq"][2] = json!([1, 2, 3]);
    let m = server.score(&wrong).error(422);
    assert!(m.contains("customers[1]") && m.contains("\"c1\"") && m.contains("\"seq\"[2]"), "{m}");
    let mut huge = customers(2);
    huge["customers"][1]["static"][3] = json!(1e39);
    let m = server.score(&huge).error(422);
    assert!(m.contains("customers[1]") && m.contains("\"static\"[3]") && m.contains("finite"), "{m}");
    assert!(server.score(&json!({"rows": []})).error(422).contains("customers"));
    assert!(server.score(&json!({"customers": 5})).error(422).contains("invalid type"));
    // Raw transactions need a model trained on them.
    let raw = json!({"customers": [{"customer_id": "r", "transactions": [{"date": "2024-01-01", "amount": 5}]}]});
    assert!(server.score(&raw).error(422).contains("FeatureSpec"));

    // 413: a body over --max-body-bytes (refused from its Content-Length, before it is sent) and a
    // request with more customers than the queue holds.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
    )
    .unwrap();
    let reply = read_reply(&mut s);
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"].as_str().unwrap().contains("300000"));
    assert!(server.score(&customers(101)).error(413).contains("at most 100"));

    // 415, 404, 405.
    let text = [("Content-Type", "text/csv")];
    assert!(http(&server.addr, "POST", "/v1/score", &text, b"a,b").error(415).contains("text/csv"));
    assert!(server.get("/v2/score").error(404).contains("/v2/score"));
    let reply = server.get("/v1/score");
    assert_eq!(reply.header("allow"), Some("POST"));
    reply.error(405);

    // Metrics: requests by route and status, customers, histograms with backend and model version.
    let text = String::from_utf8(server.get("/metrics").body).unwrap();
    // `auto` serves on the fastest usable backend: the CPU kernels wherever they run.
    let backend = if ltvx::backend::probe(ltvx::backend::BackendKind::Cpu, &Default::default()).usable {
        "cpu"
    } else {
        "reference"
    };
    let labels = format!("backend=\"{backend}\",model_version=\"1\"");
    for needle in [
        "ltvx_requests_total{route=\"/v1/score\",status=\"200\"} 3".to_string(),
        "ltvx_requests_total{route=\"/v1/score\",status=\"422\"} 6".to_string(),
        "ltvx_requests_total{route=\"/v1/score\",status=\"413\"} 2".to_string(),
        format!("ltvx_customers_scored_total{{{labels}}} 10"),
        format!("ltvx_batch_size_customers_bucket{{{labels},le=\"+Inf\"}}"),
        format!("ltvx_queue_delay_seconds_count{{{labels}}}"),
        "ltvx_request_duration_seconds_bucket{route=\"/v1/score\",le=\"+Inf\"}".to_string(),
        format!("ltvx_queue_depth_customers{{{labels}}} 0"),
        "process_resident_memory_bytes".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn raw_transactions_score_as_ltvx_score_does() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/CDNOW_sample.txt");
    let trained = dir.path().join("trained.ltvx");
    let log = ["--transactions", sample.to_str().unwrap(), "--columns", "customer=0,date=2,quantity=3,amount=4"];
    let mut train = vec!["-q", "train", "--cutoff", "1997-09-30", "--horizon-weeks", "39", "--preset", "tiny"];
    train.extend(log);
    train.extend(["--epochs", "2", "--out", trained.to_str().unwrap()]);
    ok(&train);
    let mut score = vec!["-q", "score", trained.to_str().unwrap(), "--format", "jsonl"];
    score.extend(log);
    let expected: Value = serde_json::from_str(ok(&score).lines().next().unwrap()).unwrap();
    assert_eq!(expected["customer_id"], "00004");

    let server = Server::start(&trained, &[]);
    // Customer 00004's rows of the sample; the last is after the cutoff and does not count.
    let rows = [("1997-01-01", 29.33, 2), ("1997-01-18", 29.73, 2), ("1997-08-02", 14.96, 1), ("1997-12-12", 26.48, 2)];
    let transactions: Vec<Value> = rows
        .iter()
        .map(|(date, amount, quantity)| json!({"date": date, "amount": amount, "quantity": quantity}))
        .collect();
    // The feature form beside it, in the trained model's input sizes.
    let inputs = server.get("/v1/model").json()["inputs"].clone();
    let size = |k: &str| inputs[k].as_u64().unwrap() as usize;
    let features = json!({"customer_id": "features", "seq": vec![vec![0.5; size("seq_len")]; size("seq_channels")],
        "static": vec![0.0; size("static_features")]});
    let request = json!({"customers": [
        features,
        {"customer_id": "00004", "transactions": transactions},
    ]});
    let reply = server.score(&request).json();
    let got = &reply["scores"][1];
    assert_eq!(got["customer_id"], "00004");
    for field in ["ltv", "p_purchase", "churn_probability", "segment"] {
        assert_eq!(got[field], expected[field], "{field}");
    }
    assert_eq!(got["p_segment"][2], expected["p_segment_2"]);
    assert_eq!(reply["scores"][0]["customer_id"], "features");

    let one = |t: Value| json!({"customers": [{"customer_id": "x", "transactions": [t]}]});
    let m = server.score(&one(json!({"date": "1997-01-01", "amount": 5}))).error(422);
    assert!(m.contains("customers[0]") && m.contains("quantity"), "{m}");
    let m = server.score(&one(json!({"date": "1998-03-01", "amount": 5, "quantity": 1}))).error(422);
    assert!(m.contains("no purchase on or before"), "{m}");
    let m = server.score(&one(json!({"date": "1997-02-30", "amount": 5, "quantity": 1}))).error(422);
    assert!(m.contains("transactions[0].date"), "{m}");
    let mut late = one(json!({"date": "1997-01-01", "amount": 5, "quantity": 1}));
    late["as_of"] = json!("someday");
    assert!(server.score(&late).error(422).contains("as_of"));
}

#[test]
fn auth_guards_every_route_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = model(dir.path(), "tiny.ltvx", "tiny", 0);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let server = Server::start(&tiny, &["--auth-token-file", token.to_str().unwrap()]);
    assert_eq!(server.get("/health/live").status, 200);
    let body = customers(1).to_string();
    let json_type = ("Content-Type", "application/json");
    for (method, path) in [("POST", "/v1/score"), ("GET", "/v1/model"), ("GET", "/metrics"), ("POST", "/admin/reload")]
    {
        let reply = http(&server.addr, method, path, &[json_type], body.as_bytes());
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert!(reply.error(401).contains("Bearer"), "{path}");
        let wrong = http(&server.addr, method, path, &[json_type, ("Authorization", "Bearer nope")], body.as_bytes());
        assert!(wrong.error(401).contains("wrong"), "{path}");
    }
    let good = ("Authorization", "bearer s3cret-token");
    assert_eq!(http(&server.addr, "POST", "/v1/score", &[json_type, good], body.as_bytes()).status, 200);
    assert_eq!(http(&server.addr, "GET", "/metrics", &[good], b"").status, 200);
}

#[test]
fn hot_reload_swaps_good_files_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = model(dir.path(), "first.ltvx", "tiny", 0);
    let second = model(dir.path(), "second.ltvx", "tiny", 1);
    let server = Server::start(&first, &[]);
    let before = server.score(&customers(2)).json();
    let json_type = [("Content-Type", "application/json")];
    let reload = |body: Value| http(&server.addr, "POST", "/admin/reload", &json_type, body.to_string().as_bytes());

    let reply = reload(json!({"model": second})).json();
    assert_eq!(reply["model"]["version"], 2);
    assert_eq!(reply["previous"], before["model"]);
    assert_ne!(reply["model"]["hash"], before["model"]["hash"]);
    let after = server.score(&customers(2)).json();
    assert_eq!(after["model"], reply["model"]);
    assert_ne!(after["scores"][0]["ltv"], before["scores"][0]["ltv"]);

    // A corrupt file and a missing one are refused; the second model keeps serving.
    let garbage = dir.path().join("garbage.ltvx");
    std::fs::write(&garbage, b"not a model at all").unwrap();
    assert!(reload(json!({"model": garbage})).error(422).contains("previous model keeps serving"));
    assert!(reload(json!({"model": dir.path().join("missing.ltvx")})).error(422).contains("missing.ltvx"));
    assert!(http(&server.addr, "POST", "/admin/reload", &json_type, b"{").error(400).contains("malformed"));
    assert_eq!(server.score(&customers(2)).json(), after);

    // SIGHUP re-reads the current file: replace it in place (atomically), then signal.
    let replaced = dir.path().join("replaced.ltvx");
    std::fs::copy(&first, &replaced).unwrap();
    std::fs::rename(&replaced, &second).unwrap();
    server.signal("HUP");
    let start = Instant::now();
    while server.get("/health/ready").json()["model"]["version"] != 3 {
        assert!(start.elapsed() < WAIT, "SIGHUP did not reload:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let reloaded = server.score(&customers(2)).json();
    assert_eq!(reloaded["model"]["hash"], before["model"]["hash"]);
    assert_eq!(reloaded["scores"], before["scores"]);
}

/// A server scoring one customer at a time with the large preset: a 64-customer request keeps the
/// queue full long enough to see what others get meanwhile.
fn slow_server(dir: &Path, extra: &[&str]) -> Server {
    let large = model(dir, "large.ltvx", "large", 0);
    let mut args = vec!["--max-batch", "1", "--queue-capacity", "64"];
    args.extend(extra);
    Server::start(&large, &args)
}

/// Sends a 64-customer request on another thread; returns once the server has accepted it.
fn send_in_background(server: &Server) -> std::thread::JoinHandle<Reply> {
    let addr = server.addr.clone();
    let body = customers(64).to_string();
    let handle = std::thread::spawn(move || {
        http(&addr, "POST", "/v1/score", &[("Content-Type", "application/json")], body.as_bytes())
    });
    let start = Instant::now();
    while server.metric("ltvx_queue_depth_customers") == 0.0 && !handle.is_finished() {
        assert!(start.elapsed() < WAIT, "the request was never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle
}

#[test]
fn a_full_queue_answers_503_at_once_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let server = slow_server(dir.path(), &[]);
    let mut refused = None;
    for _ in 0..5 {
        let first = send_in_background(&server);
        while refused.is_none() && !first.is_finished() {
            let reply = server.score(&customers(1));
            if reply.status == 503 {
                refused = Some(reply);
            }
        }
        let first = first.join().unwrap();
        assert_eq!(first.status, 200, "the accepted request is scored: {}", String::from_utf8_lossy(&first.body));
        assert_eq!(first.json()["scores"].as_array().unwrap().len(), 64);
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("a request sent while the queue was full was refused");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.error(503).contains("queue is full"));
    assert_eq!(server.score(&customers(1)).status, 200, "room again once the queue drained");
}

#[test]
fn a_stalled_client_times_out_without_blocking_others() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = model(dir.path(), "tiny.ltvx", "tiny", 0);
    let server = Server::start(&tiny, &["--request-timeout-s", "1"]);
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    stalled.write_all(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"cust").unwrap();
    assert_eq!(server.score(&customers(2)).status, 200, "served while another client stalls");
    let reply = read_reply(&mut stalled);
    assert!(reply.error(408).contains("did not arrive"));
    // A client that never finishes its head is cut off too.
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    silent.write_all(b"POST /v1/score HTTP/1.1\r\nHost").unwrap();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert_eq!(server.metric("ltvx_queue_depth_customers"), 0.0);
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = slow_server(dir.path(), &[]);
    let in_flight = send_in_background(&server);
    server.signal("TERM");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["scores"].as_array().unwrap().len(), 64);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < WAIT, "still running after SIGTERM:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}:\n{}", server.log());
    assert!(TcpStream::connect(&server.addr).is_err(), "no longer listening");
}

#[test]
fn a_model_that_cannot_be_opened_fails_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.ltvx");
    std::fs::write(&corrupt, b"not a model").unwrap();
    for path in [dir.path().join("missing.ltvx"), corrupt] {
        let out = common::cli::ltvx(&["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(path.to_str().unwrap()) && !stderr.contains("listening"), "{stderr}");
    }
}

#[test]
fn bench_loads_a_server_and_checks_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = model(dir.path(), "tiny.ltvx", "tiny", 0);
    let server = Server::start(&tiny, &[]);
    let url = format!("http://{}", server.addr);
    let tiny = tiny.to_str().unwrap();
    let common = ["--duration", "1", "--connections", "2", "--customers-per-request", "4", "--json"];
    for extra in [
        &["--scenario", "offline", "--model", tiny, "--baseline-seconds", "0.2"][..],
        &["--scenario", "server", "--qps", "20", "--binary"],
        &["--scenario", "offline", "--values", "dense"],
    ] {
        let mut args = vec!["-q", "bench", "--server", &url];
        args.extend(common);
        args.extend(extra);
        let report: Value = serde_json::from_str(&ok(&args)).unwrap();
        assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["ok"], report["requests"], "{report}");
        assert_eq!(report["errors"], json!({}));
        assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    let out = common::cli::ltvx(&["bench", "--scenario", "offline"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
}
