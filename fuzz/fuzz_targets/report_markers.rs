//! The report client's parser of ansible-playbook output (DRIFTED_FILES=, SYNC_STATUS=, recap).
#![no_main]

use gitops_status_server::report::parse::parse_playbook_output;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse_playbook_output(text);
});
