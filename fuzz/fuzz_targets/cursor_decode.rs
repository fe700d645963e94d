//! The opaque `cursor` of /history pages: forged ones must be refused, never panic.
#![no_main]

use gitops_status_server::model::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    if let Some(cursor) = Cursor::decode(token) {
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
    }
});
