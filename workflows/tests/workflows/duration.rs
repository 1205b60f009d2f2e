//! `Duration::parse` never panics, and every duration survives Display → parse.

use proptest::prelude::*;
use tollgate_workflows::Duration;

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,40}") {
        let _ = Duration::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_duration_like_text(text in "[-+ 0-9.]{0,12}[a-zµ ]{0,8}[0-9]{0,25}[a-z]{0,3}") {
        let _ = Duration::parse(&text);
    }

    #[test]
    fn display_round_trips_through_parse(secs in 0_u64..=400 * 365 * 86_400, nanos in 0_u32..1_000_000_000) {
        prop_assume!(secs > 0 || nanos > 0);
        let d = Duration::from(std::time::Duration::new(secs, nanos));
        prop_assert_eq!(Duration::parse(&d.to_string()), Ok(d));
    }

    #[test]
    fn parsed_text_round_trips_through_display(n in 1_u64..100_000, unit in prop::sample::select(vec!["s", "m", "h", "d", "w", "ms"])) {
        let d = Duration::parse(&format!("{n}{unit}")).expect("valid");
        prop_assert_eq!(Duration::parse(&d.to_string()), Ok(d));
    }
}

#[test]
fn zero_and_malformed_durations_are_errors() {
    for text in ["0s", "0", "", "  ", "-5m", "5", "1h -1m", "h"] {
        assert!(Duration::parse(text).is_err(), "{text}");
    }
    assert_eq!(Duration::parse("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(Duration::parse(" 2h ").map(|d| d.to_string()), Ok("2h".to_owned()));
}
