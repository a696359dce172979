//! The load generator of `ltvx bench --server URL`: scenarios after MLPerf Inference — `server`
//! (Poisson arrivals at a target rate; latency counts from each request's scheduled time, so a server
//! that falls behind is charged for the wait) and `offline` (every connection sends back to back).
//! It checks every answer (status, count, and in JSON the customer ids of its own request), reports
//! throughput, latency percentiles, errors by kind and the server's resident memory, and — given the
//! model file — measures the in-process throughput at batch 64 on one thread in the same run, the
//! yardstick the server's numbers are judged against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;

use super::{api, binary};
use crate::backend::BackendChoice;
use crate::data::synthetic;
use crate::engine::{Batch, Engine};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::graph::InputSizes;
use crate::rng::Rng;

/// Customers per engine call of the in-process yardstick.
const BASELINE_BATCH: usize = 64;
/// Longest one request may take before it counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct request bodies cycled through (each request still gets its own customer ids).
const BODIES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Poisson arrivals at --qps requests per second.
    Server,
    /// As fast as the connections go.
    Offline,
}

/// What the generated customers' feature values look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Values {
    /// Customers as a purchase log gives them: most weeks without a purchase, log-scaled amounts
    /// (about 1.7 kB of JSON per base-preset customer).
    Realistic,
    /// Every value a random 8–9 digit number: the heaviest JSON (about 2.5 kB per customer).
    Dense,
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    #[arg(long, value_enum, default_value = "offline", requires = "server")]
    pub scenario: Scenario,
    /// Requests per second offered (server scenario).
    #[arg(long, required_if_eq("scenario", "server"), requires = "server")]
    pub qps: Option<f64>,
    /// Customers in each request.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000), requires = "server")]
    pub customers_per_request: u64,
    /// Seconds of load: `ltvx bench --duration` (10 s unless given).
    #[arg(skip = 10.0)]
    pub duration: f64,
    /// Concurrent connections (HTTP/1.1 keep-alive, one request at a time each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096), requires = "server")]
    pub connections: u64,
    /// The binary fast path instead of JSON.
    #[arg(long, requires = "server")]
    pub binary: bool,
    /// Seconds of each in-process measurement (one before the load, one after).
    #[arg(long, default_value_t = 3.0, requires = "server")]
    pub baseline_seconds: f64,
    /// Send `Authorization: Bearer` with the token in this file.
    #[arg(long, requires = "server")]
    pub auth_token_file: Option<PathBuf>,
    /// The generated customers' values.
    #[arg(long, value_enum, default_value = "realistic", requires = "server")]
    pub values: Values,
    /// Seed of the generated customers and arrival times.
    #[arg(long, default_value_t = 0, requires = "server")]
    pub seed: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub url: String,
    pub scenario: Scenario,
    pub form: &'static str,
    pub values: Values,
    pub offered_qps: Option<f64>,
    pub connections: u64,
    pub customers_per_request: u64,
    pub seconds: f64,
    pub requests: u64,
    pub ok: u64,
    /// Error kind → count: `http NNN`, `timeout`, `connection`, `wrong response`.
    pub errors: BTreeMap<String, u64>,
    pub requests_per_second: f64,
    pub customers_per_second: f64,
    /// Of successful requests.
    pub latency_ms: Latency,
    /// Of requests answered with another status (503 under overload), when there were any.
    pub refused_latency_ms: Option<Latency>,
    /// The server's resident memory (from /metrics) a tenth into the run and at its end.
    pub server_rss_bytes: Option<(u64, u64)>,
    /// Customers per second in process, batch 64, one thread, on the same model file: the mean of a
    /// run before the load and one after it.
    pub in_process_customers_per_second: Option<f64>,
    /// The runs before and after the load.
    pub in_process_runs: Option<(f64, f64)>,
    pub in_process_backend: Option<String>,
    /// `customers_per_second / in_process_customers_per_second`.
    pub ratio: Option<f64>,
}

struct Target {
    host: String,
    address: String,
    token: Option<String>,
}

/// The in-process yardstick: the served model's file and the backend to run it on.
pub struct InProcess<'a> {
    pub model: &'a Path,
    pub backend: BackendChoice,
}

/// Runs the load and returns what it measured.
pub fn run(url: &str, a: &LoadArgs, in_process: Option<InProcess<'_>>) -> Result<Report> {
    if !(a.duration > 0.0 && a.duration.is_finite()) {
        return Err(Error::Input(format!("--duration {}: expected a positive number of seconds", a.duration)));
    }
    if let Some(qps) = a.qps
        && !(qps > 0.0 && qps.is_finite())
    {
        return Err(Error::Input(format!("--qps {qps}: expected a positive rate")));
    }
    let target = parse_url(url, a)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Input(format!("cannot start the async runtime: {e}")))?;
    let info = runtime.block_on(fetch(&target, "/v1/model"))?;
    let sizes: InputSizes = serde_json::from_value(info["inputs"].clone())
        .map_err(|e| Error::Input(format!("{url}/v1/model: no usable \"inputs\": {e}")))?;
    // The yardstick runs before and after the load, while the server idles, so that neither slows the
    // other; the two runs bracket the load in time, which evens out other work on a shared machine.
    let yardstick = in_process.map(|p| Yardstick::new(p.model, &info, p.backend, a.values)).transpose()?;
    let before = yardstick.as_ref().map(|y| y.measure(a.baseline_seconds)).transpose()?;
    let bodies = Arc::new(Bodies::new(sizes, a));
    let mut report = runtime.block_on(load(Arc::new(target), bodies, a))?;
    report.url = url.to_string();
    if let (Some(y), Some(before)) = (&yardstick, before) {
        let after = y.measure(a.baseline_seconds)?;
        let rate = (before + after) / 2.0;
        report.in_process_runs = Some((before, after));
        report.in_process_customers_per_second = Some(rate);
        report.in_process_backend = Some(y.engine.describe());
        report.ratio = Some(report.customers_per_second / rate);
    }
    Ok(report)
}

fn parse_url(url: &str, a: &LoadArgs) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::Input(format!("--server {url}: expected http://HOST:PORT (plain HTTP)")))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(Error::Input(format!("--server {url}: expected http://HOST:PORT with no path")));
    }
    let address = if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let token = match &a.auth_token_file {
        Some(path) => Some(crate::serve::read_token(path)?),
        None => None,
    };
    Ok(Target { host: host.to_string(), address, token })
}

/// The served model in process, at batch 64 on the calling thread.
struct Yardstick {
    engine: Engine,
    batch: Batch,
}

impl Yardstick {
    /// The model file must be the one the server serves (`info` is its `/v1/model`).
    fn new(path: &Path, info: &Value, backend: BackendChoice, values: Values) -> Result<Yardstick> {
        let model = Model::open(path)?;
        if info["hash"].as_str() != Some(model.hash().as_str()) {
            return Err(Error::Input(format!(
                "{}: hash {}, the server serves {}: not the served model",
                path.display(),
                model.hash(),
                info["hash"]
            )));
        }
        let engine = Engine::build(&model, backend)?;
        let batch = random_batch(engine.input_sizes(), BASELINE_BATCH, values, &mut Rng::derive(0, "loadgen-baseline"));
        engine.score(&batch)?;
        Ok(Yardstick { engine, batch })
    }

    /// Customers per second over at least `seconds`.
    fn measure(&self, seconds: f64) -> Result<f64> {
        let start = Instant::now();
        let mut calls = 0u64;
        while calls == 0 || start.elapsed().as_secs_f64() < seconds {
            self.engine.score(&self.batch)?;
            calls += 1;
        }
        Ok(calls as f64 * BASELINE_BATCH as f64 / start.elapsed().as_secs_f64())
    }
}

/// `rows` generated customers with `values` of the given kind: the load generator's request bodies.
pub fn random_batch(sizes: InputSizes, rows: usize, values: Values, rng: &mut Rng) -> Batch {
    if values == Values::Realistic {
        return synthetic::customers(sizes, rows, rng.next_u64());
    }
    let seq = (0..rows * sizes.seq_channels * sizes.seq_len).map(|_| (rng.uniform() * 3.0) as f32).collect();
    let stat = (0..rows * sizes.static_features).map(|_| rng.normal() as f32).collect();
    Batch::from_vecs(sizes, seq, stat).expect("finite values of the model's sizes")
}

/// Prepared request bodies. JSON ids are fixed-width placeholders, rewritten per request so that
/// every request's ids are its own: `r<8 digits>-c<5 digits>`.
struct Bodies {
    binary: bool,
    customers: usize,
    templates: Vec<Vec<u8>>,
    /// Byte offsets of each id's request-number digits in the JSON templates.
    id_offsets: Vec<Vec<usize>>,
}

const ID_DIGITS: usize = 8;

impl Bodies {
    fn new(sizes: InputSizes, a: &LoadArgs) -> Bodies {
        let customers = a.customers_per_request as usize;
        let mut rng = Rng::derive(a.seed, "loadgen-bodies");
        let mut templates = Vec::new();
        let mut id_offsets = Vec::new();
        for _ in 0..BODIES {
            let batch = random_batch(sizes, customers, a.values, &mut rng);
            if a.binary {
                templates.push(binary::encode_request(&batch));
                continue;
            }
            // Fixed-width ids, rewritten per request; their digits follow each `"customer_id":"r`.
            let ids: Vec<String> = (0..customers).map(|i| format!("r{}-c{i:05}", "0".repeat(ID_DIGITS))).collect();
            let text = api::request_json(&ids, &batch);
            let offsets = text.match_indices("\"customer_id\":\"r").map(|(at, m)| at + m.len()).collect();
            templates.push(text.into_bytes());
            id_offsets.push(offsets);
        }
        Bodies { binary: a.binary, customers, templates, id_offsets }
    }

    /// The body of request number `n`.
    fn body(&self, n: usize) -> Vec<u8> {
        let k = n % self.templates.len();
        let mut body = self.templates[k].clone();
        if !self.binary {
            let digits = format!("{:0width$}", n % 10usize.pow(ID_DIGITS as u32), width = ID_DIGITS);
            for &at in &self.id_offsets[k] {
                body[at..at + ID_DIGITS].copy_from_slice(digits.as_bytes());
            }
        }
        body
    }

    /// Whether a 200 answer is right for request `n`: as many customers, and in JSON its own ids in order.
    fn check(&self, n: usize, body: &[u8]) -> bool {
        if self.binary {
            return binary::decode_response(body).is_ok_and(|s| s.len() == self.customers);
        }
        let Ok(answer) = serde_json::from_slice::<Answer>(body) else { return false };
        let prefix = format!("r{:0width$}-c", n % 10usize.pow(ID_DIGITS as u32), width = ID_DIGITS);
        answer.scores.len() == self.customers
            && answer.scores.iter().enumerate().all(|(i, s)| {
                let digits = s.customer_id.strip_prefix(&prefix).unwrap_or_default();
                digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse() == Ok(i)
            })
    }
}

/// The part of a JSON answer the check reads: the ids, in order. Every other field is skipped
/// without being converted (the generator shares the cores with the server it measures).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    scores: Vec<AnswerRow<'a>>,
}

#[derive(Deserialize)]
struct AnswerRow<'a> {
    customer_id: &'a str,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// Of answers other than 200: how fast a refusal comes.
    refusals: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    requests: u64,
}

async fn load(target: Arc<Target>, bodies: Arc<Bodies>, a: &LoadArgs) -> Result<Report> {
    let duration = Duration::from_secs_f64(a.duration);
    let start = Instant::now() + Duration::from_millis(100);
    // Arrival times: Poisson for the server scenario; none (send at once) offline.
    let schedule: Option<Arc<Vec<Instant>>> = a.qps.filter(|_| a.scenario == Scenario::Server).map(|qps| {
        let mut rng = Rng::derive(a.seed, "loadgen-arrivals");
        let mut t = 0.0;
        let mut times = Vec::new();
        loop {
            t += -(1.0 - rng.uniform()).ln() / qps;
            if t >= a.duration {
                break Arc::new(times);
            }
            times.push(start + Duration::from_secs_f64(t));
        }
    });
    let next = Arc::new(AtomicUsize::new(0));
    let rss_early = {
        let target = target.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + duration / 10).into()).await;
            server_rss(&target).await
        })
    };
    let mut workers = Vec::new();
    for _ in 0..a.connections {
        let (target, bodies, schedule, next) = (target.clone(), bodies.clone(), schedule.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut sender = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = match &schedule {
                    Some(times) => match times.get(n) {
                        Some(&t) => t,
                        None => break,
                    },
                    None if Instant::now() < start + duration => Instant::now().max(start),
                    None => break,
                };
                // Tokio's timer ticks in milliseconds: a request already due must not wait for the
                // next tick (that alone capped one connection at ~800 requests/s).
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                tally.requests += 1;
                match tokio::time::timeout(REQUEST_TIMEOUT, send(&target, &mut sender, bodies.body(n), bodies.binary))
                    .await
                {
                    Err(_) => {
                        sender = None;
                        *tally.errors.entry("timeout".into()).or_default() += 1;
                    }
                    Ok(Err(kind)) => {
                        sender = None;
                        *tally.errors.entry(kind).or_default() += 1;
                    }
                    Ok(Ok((status, body))) if status == StatusCode::OK => {
                        if bodies.check(n, &body) {
                            tally.latencies.push(due.elapsed());
                        } else {
                            *tally.errors.entry("wrong response".into()).or_default() += 1;
                        }
                    }
                    Ok(Ok((status, _))) => {
                        tally.refusals.push(due.elapsed());
                        *tally.errors.entry(format!("http {}", status.as_u16())).or_default() += 1;
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.map_err(|e| Error::Input(format!("a load connection failed: {e}")))?;
        all.latencies.extend(t.latencies);
        all.refusals.extend(t.refusals);
        all.requests += t.requests;
        for (k, v) in t.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let rss = match (rss_early.await.ok().flatten(), server_rss(&target).await) {
        (Some(early), Some(end)) => Some((early, end)),
        _ => None,
    };
    let ok = all.latencies.len() as u64;
    Ok(Report {
        url: String::new(),
        scenario: a.scenario,
        form: if a.binary { "binary" } else { "json" },
        values: a.values,
        offered_qps: a.qps.filter(|_| a.scenario == Scenario::Server),
        connections: a.connections,
        customers_per_request: a.customers_per_request,
        seconds,
        requests: all.requests,
        ok,
        errors: all.errors,
        requests_per_second: ok as f64 / seconds,
        customers_per_second: (ok * a.customers_per_request) as f64 / seconds,
        latency_ms: percentiles(&all.latencies),
        refused_latency_ms: (!all.refusals.is_empty()).then(|| percentiles(&all.refusals)),
        server_rss_bytes: rss,
        in_process_customers_per_second: None,
        in_process_runs: None,
        in_process_backend: None,
        ratio: None,
    })
}

fn percentiles(latencies: &[Duration]) -> Latency {
    if latencies.is_empty() {
        return Latency::default();
    }
    let mut ms: Vec<f64> = latencies.iter().map(|l| l.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| crate::bench::percentile(&ms, q);
    Latency { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: at(1.0) }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> std::result::Result<Sender, String> {
    let stream = TcpStream::connect(&target.address).await.map_err(|_| "connection".to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(|_| "connection".to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on the connection (opened or reopened as needed); `Err` is the error kind. The
/// server closes keep-alive connections left idle for its request timeout: a reused connection that
/// fails before any answer came is replaced and the request sent once more, as HTTP clients do.
async fn send(
    target: &Target,
    sender: &mut Option<Sender>,
    body: Vec<u8>,
    binary: bool,
) -> std::result::Result<(StatusCode, Bytes), String> {
    let content_type = if binary { "application/octet-stream" } else { "application/json" };
    let body = Bytes::from(body);
    let reused = sender.as_ref().is_some_and(|s| !s.is_closed());
    for fresh in [!reused, true] {
        if fresh {
            *sender = Some(connect(target).await?);
        }
        let s = sender.as_mut().expect("connected above");
        let request = request(target, Method::POST, "/v1/score", content_type, body.clone());
        let response = match s.ready().await {
            Ok(()) => s.send_request(request).await,
            Err(e) => Err(e),
        };
        match response {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await.map_err(|_| "connection".to_string())?;
                return Ok((status, body.to_bytes()));
            }
            Err(_) if !fresh => continue,
            Err(_) => return Err("connection".into()),
        }
    }
    unreachable!("the second try is on a fresh connection")
}

fn request(target: &Target, method: Method, path: &str, content_type: &str, body: Bytes) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, &target.host)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(token) = &target.token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Full::new(body)).expect("a valid request")
}

/// GET `path`, its body as JSON or text.
async fn get(target: &Target, path: &str) -> std::result::Result<(StatusCode, Bytes), String> {
    let mut sender = connect(target).await?;
    let response = sender
        .send_request(request(target, Method::GET, path, "application/json", Bytes::new()))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

async fn fetch(target: &Target, path: &str) -> Result<Value> {
    let (status, body) = get(target, path)
        .await
        .map_err(|e| Error::Input(format!("http://{}{path}: cannot reach the server ({e})", target.host)))?;
    if status != StatusCode::OK {
        return Err(Error::Input(format!(
            "http://{}{path}: {status}: {}",
            target.host,
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| Error::Input(format!("http://{}{path}: not JSON: {e}", target.host)))
}

/// The server's resident set size from its /metrics, when it reports one.
async fn server_rss(target: &Target) -> Option<u64> {
    let (status, body) = get(target, "/metrics").await.ok()?;
    if status != StatusCode::OK {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().find(|l| l.starts_with("process_resident_memory_bytes "))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|v| v as u64)
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut lines = vec![format!(
            "{} scenario, {} form, {} values, {} customers per request, {} connections{}, {:.1} s",
            match self.scenario {
                Scenario::Server => "server",
                Scenario::Offline => "offline",
            },
            self.form,
            match self.values {
                Values::Realistic => "realistic",
                Values::Dense => "dense",
            },
            self.customers_per_request,
            self.connections,
            self.offered_qps.map(|q| format!(", {q} requests/s offered (Poisson)")).unwrap_or_default(),
            self.seconds
        )];
        lines.push(format!(
            "throughput   {:.1} requests/s, {:.0} customers/s ({} of {} requests answered 200)",
            self.requests_per_second, self.customers_per_second, self.ok, self.requests
        ));
        let l = &self.latency_ms;
        lines.push(format!(
            "latency      p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            l.p50, l.p90, l.p99, l.p999, l.max
        ));
        let errors: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        lines.push(format!("errors       {}", if errors.is_empty() { "none".into() } else { errors.join(", ") }));
        if let Some(r) = &self.refused_latency_ms {
            lines.push(format!(
                "refusals     answered in p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.p50, r.p99, r.max
            ));
        }
        if let Some((early, end)) = self.server_rss_bytes {
            lines.push(format!(
                "server RSS   {:.1} MiB a tenth in, {:.1} MiB at the end ({:+.1}%)",
                early as f64 / 1048576.0,
                end as f64 / 1048576.0,
                100.0 * (end as f64 / early as f64 - 1.0)
            ));
        }
        if let (Some(rate), Some((before, after)), Some(ratio)) =
            (self.in_process_customers_per_second, self.in_process_runs, self.ratio)
        {
            lines.push(format!(
                "in process   {rate:.0} customers/s ({before:.0} before the load, {after:.0} after; batch \
                 {BASELINE_BATCH}, 1 thread, {}): the server reached {:.0}% of it",
                self.in_process_backend.as_deref().unwrap_or(""),
                100.0 * ratio
            ));
        }
        lines.join("\n")
    }
}
