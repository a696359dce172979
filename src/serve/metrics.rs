//! Prometheus metrics in the text exposition format (version 0.0.4), written by hand: a few counters,
//! gauges and fixed-bucket histograms need no client library.
//!
//! Series that describe scoring work (customers scored, batch sizes, queue delay) carry the `backend`
//! and `model_version` labels of the model that did the work, so a hot reload starts new series
//! rather than mixing two models' numbers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Request latency and queue delay buckets, seconds: 100 µs to 10 s.
const SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Batch size buckets, customers.
const CUSTOMERS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), then the overflow bucket.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, &bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The model a scoring series belongs to.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelLabels {
    pub backend: String,
    pub version: u64,
}

impl ModelLabels {
    fn text(&self) -> String {
        format!("backend=\"{}\",model_version=\"{}\"", self.backend, self.version)
    }
}

struct Scoring {
    customers: u64,
    batch_size: Histogram,
    queue_delay: Histogram,
}

#[derive(Default)]
struct Series {
    /// (route, status) → count.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// route → latency.
    latency: BTreeMap<&'static str, Histogram>,
    scoring: BTreeMap<ModelLabels, Scoring>,
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
    /// Customers accepted and not yet scored.
    pub queue_depth: AtomicUsize,
}

impl Metrics {
    /// One answered request: its route (a fixed name, never the client's path) and status.
    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let mut s = self.series.lock().expect("metrics lock");
        *s.requests.entry((route, status)).or_default() += 1;
        s.latency.entry(route).or_insert_with(|| Histogram::new(&SECONDS)).observe(elapsed.as_secs_f64());
    }

    /// One engine call of `customers`, after they waited `queue_delay` each.
    pub fn batch(&self, model: &ModelLabels, customers: usize, queue_delays: impl Iterator<Item = Duration>) {
        let mut s = self.series.lock().expect("metrics lock");
        let scoring = s.scoring.entry(model.clone()).or_insert_with(|| Scoring {
            customers: 0,
            batch_size: Histogram::new(&CUSTOMERS),
            queue_delay: Histogram::new(&SECONDS),
        });
        scoring.customers += customers as u64;
        scoring.batch_size.observe(customers as f64);
        for d in queue_delays {
            scoring.queue_delay.observe(d.as_secs_f64());
        }
    }

    /// The exposition text; `current` describes the model serving now.
    pub fn render(&self, current: &ModelLabels, model_name: &str, model_hash: &str) -> String {
        let s = self.series.lock().expect("metrics lock");
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ltvx_model_info The model being served (value always 1).");
        let _ = writeln!(out, "# TYPE ltvx_model_info gauge");
        let _ = writeln!(
            out,
            "ltvx_model_info{{{},model=\"{}\",hash=\"{model_hash}\"}} 1",
            current.text(),
            escape(model_name)
        );
        let _ = writeln!(out, "# HELP ltvx_requests_total Requests answered, by route and HTTP status.");
        let _ = writeln!(out, "# TYPE ltvx_requests_total counter");
        for ((route, status), n) in &s.requests {
            let _ = writeln!(out, "ltvx_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP ltvx_request_duration_seconds Time from request head to response, by route.");
        let _ = writeln!(out, "# TYPE ltvx_request_duration_seconds histogram");
        for (route, h) in &s.latency {
            h.write(&mut out, "ltvx_request_duration_seconds", &format!("route=\"{route}\""));
        }
        let _ = writeln!(out, "# HELP ltvx_customers_scored_total Customers scored.");
        let _ = writeln!(out, "# TYPE ltvx_customers_scored_total counter");
        for (labels, scoring) in &s.scoring {
            let _ = writeln!(out, "ltvx_customers_scored_total{{{}}} {}", labels.text(), scoring.customers);
        }
        let _ = writeln!(out, "# HELP ltvx_batch_size_customers Customers per engine call.");
        let _ = writeln!(out, "# TYPE ltvx_batch_size_customers histogram");
        for (labels, scoring) in &s.scoring {
            scoring.batch_size.write(&mut out, "ltvx_batch_size_customers", &labels.text());
        }
        let _ =
            writeln!(out, "# HELP ltvx_queue_delay_seconds Time a customer waited in the queue before its batch ran.");
        let _ = writeln!(out, "# TYPE ltvx_queue_delay_seconds histogram");
        for (labels, scoring) in &s.scoring {
            scoring.queue_delay.write(&mut out, "ltvx_queue_delay_seconds", &labels.text());
        }
        let _ = writeln!(out, "# HELP ltvx_queue_depth_customers Customers accepted and not yet scored.");
        let _ = writeln!(out, "# TYPE ltvx_queue_depth_customers gauge");
        let _ = writeln!(
            out,
            "ltvx_queue_depth_customers{{{}}} {}",
            current.text(),
            self.queue_depth.load(Ordering::Relaxed)
        );
        if let Some(bytes) = resident_bytes() {
            let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.");
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
        }
        out
    }
}

/// This process's resident set size (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    crate::bench::proc_status_kib("VmRSS").map(|kib| kib * 1024)
}

/// A label value as the exposition format needs it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        let labels = ModelLabels { backend: "reference".into(), version: 1 };
        m.batch(&labels, 3, [Duration::from_micros(50), Duration::from_secs(20)].into_iter());
        m.request("/v1/score", 200, Duration::from_millis(3));
        let text = m.render(&labels, "ltvx-\"base\"", "00ff");
        assert!(
            text.contains("ltvx_batch_size_customers_bucket{backend=\"reference\",model_version=\"1\",le=\"2\"} 0")
        );
        assert!(
            text.contains("ltvx_batch_size_customers_bucket{backend=\"reference\",model_version=\"1\",le=\"4\"} 1")
        );
        assert!(
            text.contains("ltvx_queue_delay_seconds_bucket{backend=\"reference\",model_version=\"1\",le=\"0.0001\"} 1")
        );
        assert!(
            text.contains("ltvx_queue_delay_seconds_bucket{backend=\"reference\",model_version=\"1\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("ltvx_requests_total{route=\"/v1/score\",status=\"200\"} 1"));
        assert!(text.contains("model=\"ltvx-\\\"base\\\"\""));
    }
}
