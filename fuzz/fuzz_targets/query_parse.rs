//! Query strings of /history, /status.json, /badge.svg and /api/stats.
#![no_main]

use gitops_status_server::model::{HistoryRequest, StatusFilter, TargetKey};
use gitops_status_server::stats::StatsRequest;
use gitops_status_server::timestamp::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    let _ = HistoryRequest::from_query(Some(query));
    let _ = StatusFilter::from_query(Some(query));
    let _ = TargetKey::from_query(Some(query));
    let _ = StatsRequest::from_query(Some(query), Timestamp::from_millis(1_776_767_400_000));
});
