//! The audit chain (`tollgate_engine::audit`): sealing, JSONL and CSV export, record decoding
//! (`AuditRecord` from a JSONL line) and verification (`verify_all`).
//!
//! The input chooses a chain of events (strings, ids, versions, nested `details` with floats,
//! times from 1970 to 9999) and then mutations of its JSONL export. Properties:
//! - a chain sealed by the library, exported as JSONL and decoded line by line, verifies, with
//!   every record read back equal to the one sealed;
//! - the CSV export of the same chain holds every value as documented (strip one leading `'`);
//! - the mutated export never panics the decoder or the verifier, and whenever it still verifies,
//!   what was read is exactly a prefix of the sealed chain (tamper evidence: a change that
//!   verifies would be a forgery; dropping trailing records is the documented blind spot).
#![no_main]

use arbitrary::{Result, Unstructured};
use chrono::{DateTime, SubsecRound, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_engine::audit::{
    self, AuditEvent, AuditRecord, CSV_HEADER, ExportFormat, GENESIS_HASH, details_to_text, seal, verify_all,
    write_export,
};
use uuid::Uuid;

const MAX_RECORDS: usize = 8;
const MAX_DEPTH: u32 = 4;

fn json(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let choice = if depth >= MAX_DEPTH { u.int_in_range(0..=5)? } else { u.int_in_range(0..=7)? };
    Ok(match choice {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| json(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                let key: String = u.arbitrary()?;
                map.insert(key, json(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

fn event(u: &mut Unstructured<'_>) -> Result<AuditEvent> {
    Ok(AuditEvent {
        event_type: u.arbitrary()?,
        channel: u.arbitrary()?,
        outcome: u.arbitrary()?,
        actor: u.arbitrary()?,
        subject: u.arbitrary()?,
        run_id: u.arbitrary::<Option<u128>>()?.map(Uuid::from_u128),
        justification: u.arbitrary()?,
        workflow_key: u.arbitrary()?,
        workflow_version: u.arbitrary()?,
        // Details are an object (or null), as the engine writes them.
        details: if u.arbitrary()? { Value::Null } else { json(u, MAX_DEPTH - 2)? },
    })
}

/// A time between 1970 and the end of 9999 (RFC 3339 has four-digit years), to the nanosecond.
fn time(u: &mut Unstructured<'_>) -> Result<DateTime<Utc>> {
    const END: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = u.int_in_range(0..=END)?;
    let nanos = u.int_in_range(0..=999_999_999)?;
    Ok(DateTime::from_timestamp(secs, nanos).expect("in range"))
}

fn chain(u: &mut Unstructured<'_>) -> Result<Vec<AuditRecord>> {
    let n = u.int_in_range(0..=MAX_RECORDS)?;
    let mut records: Vec<AuditRecord> = Vec::with_capacity(n);
    let mut at = time(u)?;
    for seq in 1..=n {
        let prev = records.last().map_or_else(|| GENESIS_HASH.to_owned(), |r| r.hash.clone());
        records.push(seal(i64::try_from(seq).expect("small"), at, event(u)?, &prev));
        at = at.checked_add_signed(chrono::Duration::microseconds(u.int_in_range(0..=10_000_000)?)).unwrap_or(at);
    }
    Ok(records)
}

fn decode(jsonl: &[u8]) -> Vec<AuditRecord> {
    jsonl.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| serde_json::from_slice(l).ok()).collect()
}

/// `r` as it compares after a round trip: times count to the microsecond (the hashed precision).
fn normalized(mut r: AuditRecord) -> AuditRecord {
    r.recorded_at = r.recorded_at.trunc_subsecs(6);
    r
}

fn check_csv(records: &[AuditRecord]) {
    let mut out = Vec::new();
    write_export(&mut out, ExportFormat::Csv, records.to_vec()).expect("CSV export");
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(out.as_slice());
    assert_eq!(reader.headers().expect("header row").iter().collect::<Vec<_>>(), CSV_HEADER);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<std::result::Result<_, _>>().expect("CSV rows");
    assert_eq!(rows.len(), records.len(), "one row per record");
    for (row, r) in rows.iter().zip(records) {
        let cells: Vec<&str> = row.iter().map(|c| c.strip_prefix('\'').unwrap_or(c)).collect();
        let e = &r.event;
        let expected = [
            r.seq.to_string(),
            r.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            e.event_type.clone(),
            e.channel.clone(),
            e.outcome.clone(),
            e.actor.clone(),
            e.subject.clone(),
            e.run_id.map(|id| id.hyphenated().to_string()).unwrap_or_default(),
            e.justification.clone().unwrap_or_default(),
            e.workflow_key.clone().unwrap_or_default(),
            e.workflow_version.map(|v| v.to_string()).unwrap_or_default(),
            details_to_text(&e.details),
            r.prev_hash.clone(),
            r.hash.clone(),
        ];
        assert_eq!(cells, expected, "CSV row of record {}", r.seq);
    }
}

fn mutate(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>) -> Result<()> {
    let n = u.int_in_range(1..=4)?;
    for _ in 0..n {
        if bytes.is_empty() {
            bytes.push(u.arbitrary()?);
            continue;
        }
        let at = u.choose_index(bytes.len())?;
        match u.int_in_range(0..=4)? {
            0 => bytes[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => bytes[at] = u.arbitrary()?,
            2 => {
                bytes.remove(at);
            }
            3 => bytes.insert(at, u.arbitrary()?),
            _ => {
                // Swap two lines: reordering records.
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                if lines.len() > 2 {
                    let (i, j) = (u.choose_index(lines.len())?, u.choose_index(lines.len())?);
                    let mut lines: Vec<Vec<u8>> = lines.into_iter().map(<[u8]>::to_vec).collect();
                    lines.swap(i, j);
                    *bytes = lines.join(&b'\n');
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(records) = chain(&mut u) else { return };

    let mut jsonl = Vec::new();
    write_export(&mut jsonl, ExportFormat::Jsonl, records.clone()).expect("JSONL export");
    let read = decode(&jsonl);
    let expected: Vec<AuditRecord> = records.iter().cloned().map(normalized).collect();
    assert_eq!(read.into_iter().map(normalized).collect::<Vec<_>>(), expected, "JSONL export read back");
    let report = verify_all(records.clone()).expect("a sealed chain verifies");
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(report.head_hash.as_deref(), records.last().map(|r| r.hash.as_str()));
    // Each record's stored `details` text reads back as the sealed value.
    for r in &records {
        let text = details_to_text(&r.event.details);
        assert_eq!(audit::details_from_text(&text).expect("details text reads back"), r.event.details);
    }
    check_csv(&records);

    let mut tampered = jsonl.clone();
    if mutate(&mut u, &mut tampered).is_err() || tampered == jsonl {
        return;
    }
    let read: Vec<AuditRecord> = decode(&tampered).into_iter().map(normalized).collect();
    if let Ok(report) = verify_all(read.clone()) {
        let n = usize::try_from(report.records).expect("small");
        assert_eq!(n, read.len(), "verify_all reported {n} of {} records", read.len());
        assert!(
            n <= expected.len() && read[..] == expected[..n],
            "a tampered export verifies but differs from the sealed chain:\n{}",
            String::from_utf8_lossy(&tampered)
        );
    }
});
