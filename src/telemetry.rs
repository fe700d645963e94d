//! The server's own metrics (ingest results, request latency, commit latency): the recorder they go
//! to and its Prometheus rendering.
//!
//! Code anywhere in the crate records through the `metrics` facade's macros. Each `AppState` owns a
//! [`Telemetry`]; the one the binary serves is also installed as the process-wide recorder (see
//! [`Telemetry::global`]), so a plain `metrics::histogram!(...)` in the storage writer lands in what
//! `/metrics` shows. Tests build private ones, so parallel in-process apps never share counters.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::Recorder;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Snapshots `POST /api/status` answered, by `result`.
pub const SNAPSHOTS_INGESTED: &str = "gitops_status_snapshots_ingested_total";
/// Latency of every answered request, by matched `route`, `method` and `status`.
pub const REQUEST_DURATION: &str = "gitops_status_http_request_duration_seconds";
/// Time the storage writer takes to commit one batch of snapshots (one transaction, one fsync).
pub const COMMIT_DURATION: &str = "gitops_status_store_commit_duration_seconds";

/// Histogram buckets, in seconds: from a cached read (sub-millisecond) to a slow fsync.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How `POST /api/status` ended, as the `result` label of [`SNAPSHOTS_INGESTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestResult {
    /// A new snapshot was committed.
    Stored,
    /// An identical retry: nothing new was written.
    Replayed,
    /// Same target and `last_check` with different content (409).
    Conflict,
    /// The request was rejected before storage: not JSON, wrong media type, too large, or breaking
    /// the schema or a rule (400, 413, 415, 422).
    Invalid,
    /// The store could not take it (503 or 500).
    Failed,
}

impl IngestResult {
    pub const ALL: [Self; 5] = [
        Self::Stored,
        Self::Replayed,
        Self::Conflict,
        Self::Invalid,
        Self::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Replayed => "replayed",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
        }
    }
}

/// One registry of the server's own metrics.
#[derive(Clone)]
pub struct Telemetry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A private registry: what it records is seen only through its own [`Telemetry::render`].
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let telemetry = Self {
            recorder: Arc::new(recorder),
            handle,
        };
        telemetry.register();
        telemetry
    }

    /// The registry that is also the process-wide `metrics` recorder, installed on first use.
    /// Every later call returns the same one.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let telemetry = Self::new();
                if metrics::set_global_recorder(Arc::clone(&telemetry.recorder)).is_err() {
                    tracing::warn!(
                        "another metrics recorder is installed; /metrics misses its data"
                    );
                }
                telemetry
            })
            .clone()
    }

    /// Runs `record` with this registry as the `metrics` recorder of the current thread.
    fn with<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder as &dyn Recorder, record)
    }

    /// Describes every metric and creates the series known in advance, so a scrape shows them (at
    /// zero) before the first event, and `rate()` works from the first increment.
    fn register(&self) {
        self.with(|| {
            metrics::describe_counter!(
                SNAPSHOTS_INGESTED,
                "Snapshots sent to POST /api/status or pushed to /metrics/job/..., by result: \
                 stored, replayed (identical retry), conflict (409), invalid (400/413/415/422), \
                 failed (5xx)"
            );
            for result in IngestResult::ALL {
                metrics::counter!(SNAPSHOTS_INGESTED, "result" => result.as_str()).absolute(0);
            }
            metrics::describe_histogram!(
                REQUEST_DURATION,
                metrics::Unit::Seconds,
                "Time to answer a request, by matched route, method and status code"
            );
            metrics::describe_histogram!(
                COMMIT_DURATION,
                metrics::Unit::Seconds,
                "Time the storage writer takes to commit one batch of snapshots"
            );
        });
    }

    /// Counts one `POST /api/status` by how it ended.
    pub fn snapshot_ingested(&self, result: IngestResult) {
        self.with(|| {
            metrics::counter!(SNAPSHOTS_INGESTED, "result" => result.as_str()).increment(1);
        });
    }

    /// Records how long a request to `route` took.
    pub fn request_answered(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let (route, method, status) = (route.to_owned(), method.to_owned(), status.to_string());
        self.with(|| {
            metrics::histogram!(REQUEST_DURATION, "route" => route, "method" => method, "status" => status)
                .record(elapsed);
        });
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_independent() {
        let first = Telemetry::new();
        let second = Telemetry::new();
        first.snapshot_ingested(IngestResult::Stored);
        assert!(
            first
                .render()
                .contains("gitops_status_snapshots_ingested_total{result=\"stored\"} 1"),
            "{}",
            first.render()
        );
        assert!(
            second
                .render()
                .contains("gitops_status_snapshots_ingested_total{result=\"stored\"} 0"),
            "{}",
            second.render()
        );
    }

    #[test]
    fn the_global_registry_receives_plain_macro_calls_from_any_thread() {
        let global = Telemetry::global();
        std::thread::spawn(|| {
            metrics::histogram!(COMMIT_DURATION).record(Duration::from_millis(7));
        })
        .join()
        .unwrap();
        let text = Telemetry::global().render();
        assert!(
            text.contains("gitops_status_store_commit_duration_seconds_bucket{le=\"0.01\"} 1"),
            "{text}"
        );
        assert!(
            global
                .render()
                .contains("gitops_status_store_commit_duration_seconds_count 1"),
            "one registry however often it is asked for"
        );
    }

    #[test]
    fn histograms_have_buckets_and_help() {
        let telemetry = Telemetry::new();
        telemetry.request_answered("/status.json", "GET", 200, Duration::from_millis(3));
        telemetry.with(|| metrics::histogram!(COMMIT_DURATION).record(Duration::from_millis(2)));
        let text = telemetry.render();
        assert!(
            text.contains(
                "gitops_status_http_request_duration_seconds_bucket{route=\"/status.json\",method=\"GET\",status=\"200\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gitops_status_store_commit_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# HELP gitops_status_store_commit_duration_seconds"),
            "{text}"
        );
    }
}
