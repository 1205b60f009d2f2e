//! `tollgate_workflows::Duration::parse`: never panics; a duration that parses formats back
//! (`Display`) to text that re-parses to the same duration, and survives a serde round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_workflows::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Duration::parse(text) {
        Ok(d) => {
            assert!(!d.as_std().is_zero(), "{text:?} parsed to a zero duration");
            let shown = d.to_string();
            let again = Duration::parse(&shown)
                .unwrap_or_else(|e| panic!("{text:?} parsed to {d:?}, whose text {shown:?} does not parse: {e}"));
            assert_eq!(again, d, "{text:?} → {shown:?} → {again:?}");
            let json = serde_json::to_string(&d).expect("a duration serializes");
            let back: Duration = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{text:?} serialized as {json} does not deserialize: {e}"));
            assert_eq!(back, d, "{text:?} → {json}");
        }
        Err(message) => assert!(!message.is_empty(), "{text:?}: empty error message"),
    }
});
