//! POST /api/status bodies: JSON syntax, then the snapshot's schema and rules.
#![no_main]

use gitops_status_server::model::SnapshotIn;
use gitops_status_server::timestamp::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = SnapshotIn::decode(body, Timestamp::from_millis(1_776_767_400_000));
    }
});
