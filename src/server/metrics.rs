//! Counters and histograms for `/metrics`, in Prometheus' text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram with fixed bucket bounds (seconds).
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), the last for +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = match self.bounds.get(i) {
                Some(b) => b.to_string(),
                None => "+Inf".into(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", self.sum);
    }
}

const TTFT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const PER_TOKEN_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's metrics; one per server, shared by every request.
pub struct Metrics {
    /// Requests by (endpoint, status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// Requests queued behind the one generating, and generating (0 or 1).
    pub queued: AtomicU64,
    pub running: AtomicU64,
    ttft: Mutex<Histogram>,
    per_token: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            running: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::new(TTFT_BOUNDS)),
            per_token: Mutex::new(Histogram::new(PER_TOKEN_BOUNDS)),
        }
    }
}

/// The endpoint label of a path: the known routes, else "other" (so that a scan of random
/// paths cannot grow the metrics without bound).
pub fn endpoint(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/models" => "/v1/models",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/tokenize" => "/tokenize",
        "/detokenize" => "/detokenize",
        _ => "other",
    }
}

impl Metrics {
    pub fn count_request(&self, endpoint: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((endpoint, status)).or_default() += 1;
    }

    /// One finished generation: its tokens, time to its first token (queue wait and prefill
    /// included) and mean time per token after the first.
    pub fn count_generation(
        &self,
        prompt: usize,
        generated: usize,
        ttft: Duration,
        per_token: Option<Duration>,
    ) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
        if generated > 0 {
            lock(&self.ttft).observe(ttft.as_secs_f64());
        }
        if let Some(t) = per_token {
            lock(&self.per_token).observe(t.as_secs_f64());
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP gemma_wgpu_requests_total HTTP requests by endpoint and status.\n\
             # TYPE gemma_wgpu_requests_total counter\n",
        );
        for ((endpoint, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "gemma_wgpu_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let scalars = [
            (
                "gemma_wgpu_prompt_tokens_total",
                "counter",
                "Prompt tokens of finished generations.",
                &self.prompt_tokens,
            ),
            (
                "gemma_wgpu_generated_tokens_total",
                "counter",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "gemma_wgpu_queue_depth",
                "gauge",
                "Requests waiting behind the one generating.",
                &self.queued,
            ),
            (
                "gemma_wgpu_requests_running",
                "gauge",
                "Requests generating (one at a time).",
                &self.running,
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        lock(&self.ttft).write(
            &mut out,
            "gemma_wgpu_time_to_first_token_seconds",
            "Time from a request's arrival to its first token (queue and prefill included).",
        );
        lock(&self.per_token).write(
            &mut out,
            "gemma_wgpu_time_per_output_token_seconds",
            "Each generation's mean time per token after the first.",
        );
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_gauges_and_cumulative_buckets() {
        let m = Metrics::default();
        m.count_request("/v1/completions", 200);
        m.count_request("/v1/completions", 200);
        m.count_request(endpoint("/nope"), 404);
        m.count_generation(
            5,
            3,
            Duration::from_millis(30),
            Some(Duration::from_millis(7)),
        );
        let text = m.render();
        for line in [
            "gemma_wgpu_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
            "gemma_wgpu_requests_total{endpoint=\"other\",status=\"404\"} 1",
            "gemma_wgpu_prompt_tokens_total 5",
            "gemma_wgpu_generated_tokens_total 3",
            "gemma_wgpu_queue_depth 0",
            "gemma_wgpu_time_to_first_token_seconds_bucket{le=\"0.025\"} 0",
            "gemma_wgpu_time_to_first_token_seconds_bucket{le=\"0.05\"} 1",
            "gemma_wgpu_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1",
            "gemma_wgpu_time_to_first_token_seconds_count 1",
            "gemma_wgpu_time_per_output_token_seconds_bucket{le=\"0.01\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` missing:\n{text}");
        }
    }
}
