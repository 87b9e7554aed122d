//! Reading a run's source: which files, and the streaming CSV check of DATASET_INGEST. Blocking
//! I/O: the worker calls [`scan_files`] on a blocking thread. Memory stays bounded whatever the
//! file size: one record buffer is reused, identities leave in batches of [`BATCH`], and at most
//! [`MAX_SAMPLE`] row errors are kept.

use std::{
    io::Read,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

use crate::{
    domain::{
        external::{FieldType, IngestSpec, SourceKind},
        landing::parse_blob_name,
    },
    landing::{FileInfo, Kind, Zone, ZoneError},
};

/// Identities per batch sent to the store.
pub const BATCH: usize = 5_000;
/// Row errors kept as a sample.
pub const MAX_SAMPLE: usize = 100;
/// The CSV reader's buffer.
pub const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub file: String,
    pub row: u64,
    pub column: Option<String>,
    pub reason: String,
}

impl RowError {
    pub fn to_json(&self) -> Value {
        json!({"file": self.file, "row": self.row, "column": self.column, "reason": self.reason})
    }
}

/// Counts so far, sent with every batch so progress is visible while a run processes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub read: u64,
    pub good: u64,
    pub bad: u64,
}

/// The outcome of a scan. `failure` says why the stage failed (missing header column, unreadable
/// file); a scan without failure may still have no good row.
#[derive(Debug, Default)]
pub struct Scan {
    pub counts: Counts,
    pub errors: Vec<RowError>,
    pub files: Vec<String>,
    pub failure: Option<String>,
    pub cancelled: bool,
}

/// The files a run reads, by name inside its sandbox's zone (`None`: the sandbox has no zone,
/// so nothing exists): the file itself, or every `.csv` directly in the folder, whose
/// modification time (epoch seconds) lies within the window. `Err` says why there is nothing.
/// A name that leaves the zone, a symbolic link and another sandbox's file are all simply not
/// there: the zone is the whole world of a run.
pub fn select_files(
    zone: Option<Zone>,
    spec: &IngestSpec,
    window: (i64, i64),
) -> Result<(Zone, Vec<String>), String> {
    let shown = format!("{}/{}", spec.source.cloud_dir, spec.source.path);
    let missing = || format!("The source path '{shown}' cannot be read: it does not exist.");
    let name = parse_blob_name(&shown).map_err(|rule| {
        format!("The source path '{shown}' is not a valid name in the landing zone: {rule}.")
    })?;
    let zone = zone.ok_or_else(missing)?;
    let candidates: Vec<(String, FileInfo)> = match spec.source.kind {
        SourceKind::File => match zone.entry(&name) {
            Ok(Kind::File(info)) => vec![(name.to_string(), info)],
            Ok(Kind::Folder) => return Err(format!("The source path '{shown}' is not a file.")),
            Ok(Kind::Link) | Err(ZoneError::Link) => return Err(link(&shown)),
            Ok(Kind::Other) => {
                return Err(format!("The source path '{shown}' is not a regular file."))
            }
            Err(e) => return Err(zone_reason(&shown, e)),
        },
        SourceKind::Folder => {
            let files = match zone.files_in(&name) {
                Ok(files) => files,
                Err(ZoneError::NotAFile { .. }) => {
                    return Err(format!("The source path '{shown}' is not a folder."))
                }
                Err(ZoneError::Link) => return Err(link(&shown)),
                Err(e) => return Err(zone_reason(&shown, e)),
            };
            let mut found: Vec<(String, FileInfo)> = files
                .into_iter()
                .filter(|(f, _)| {
                    Path::new(f)
                        .extension()
                        .is_some_and(|x| x.eq_ignore_ascii_case("csv"))
                })
                .map(|(f, info)| (format!("{name}/{f}"), info))
                .collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            if found.is_empty() {
                return Err(format!("The folder '{shown}' holds no .csv file."));
            }
            found
        }
    };
    let selected: Vec<String> = candidates
        .into_iter()
        .filter(|(_, info)| {
            modified_secs(info.modified).is_some_and(|m| m >= window.0 && m <= window.1)
        })
        .map(|(f, _)| f)
        .collect();
    if selected.is_empty() {
        return Err(format!(
            "No file under '{shown}' was modified between dataFilterStartTime {} and dataFilterEndTime {}.",
            window.0, window.1
        ));
    }
    Ok((zone, selected))
}

fn link(shown: &str) -> String {
    format!("The source path '{shown}' is a symbolic link or passes through one; links in a landing zone are never followed.")
}

fn zone_reason(shown: &str, e: ZoneError) -> String {
    match e {
        ZoneError::NotFound | ZoneError::Conflict => {
            format!("The source path '{shown}' cannot be read: it does not exist.")
        }
        ZoneError::Io(e) => format!(
            "The source path '{shown}' cannot be read: {}.",
            io_reason(&e)
        ),
        other => format!("The source path '{shown}' cannot be read: {other}."),
    }
}

fn modified_secs(t: SystemTime) -> Option<i64> {
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Scans the files (names in `zone`) in order. Each is opened afresh without following links,
/// so a file swapped for a link after it was selected is refused, never read through. `sink`
/// receives the identities of good rows in batches of at most [`BATCH`], at least every
/// [`BATCH`] rows read, with the counts so far, and returns `false` to stop (the run was taken
/// over or deleted).
pub fn scan_files(
    files: &[String],
    zone: &Zone,
    spec: &IngestSpec,
    sink: &mut dyn FnMut(Vec<String>, &Counts) -> bool,
) -> Scan {
    let mut scan = Scan::default();
    for shown in files {
        scan.files.push(shown.clone());
        let opened = parse_blob_name(shown)
            .map_err(|_| ZoneError::NotFound)
            .and_then(|name| zone.open_file(&name));
        let file = match opened {
            Ok((f, _)) => f,
            Err(ZoneError::Link) => {
                scan.failure = Some(link(shown));
                return scan;
            }
            Err(e) => {
                scan.failure = Some(format!(
                    "The file '{shown}' cannot be opened: {}.",
                    match e {
                        ZoneError::Io(e) => io_reason(&e),
                        ZoneError::NotFound => "it does not exist".into(),
                        other => other.to_string(),
                    }
                ));
                return scan;
            }
        };
        scan_reader(file, shown, spec, &mut scan, sink);
        if scan.failure.is_some() || scan.cancelled {
            return scan;
        }
    }
    scan
}

/// Scans one CSV stream into `scan`.
pub fn scan_reader<R: Read>(
    reader: R,
    name: &str,
    spec: &IngestSpec,
    scan: &mut Scan,
    sink: &mut dyn FnMut(Vec<String>, &Counts) -> bool,
) {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(READ_BUFFER)
        .from_reader(reader);
    let header = match csv.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            scan.failure = Some(format!("The file '{name}' cannot be read: {e}."));
            return;
        }
    };
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = String::from_utf8_lossy(h);
            let h = if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                &h
            };
            h.trim().to_owned()
        })
        .collect();
    let missing: Vec<&str> = spec
        .fields
        .iter()
        .filter(|f| !names.iter().any(|n| n == &f.name))
        .map(|f| f.name.as_str())
        .collect();
    if !missing.is_empty() {
        scan.failure = Some(format!(
            "The header of '{name}' lacks the declared field(s) {}; it has {}.",
            missing.join(", "),
            names.join(", ")
        ));
        return;
    }
    let columns: Vec<(usize, &str, FieldType, bool)> = spec
        .fields
        .iter()
        .map(|f| {
            let index = names.iter().position(|n| n == &f.name).unwrap_or(0);
            (
                index,
                f.name.as_str(),
                f.field_type,
                f.identity_ns.is_some(),
            )
        })
        .collect();
    let identity_index = columns
        .iter()
        .find(|c| c.3)
        .map(|c| c.0)
        .unwrap_or(columns[0].0);
    let mut record = csv::ByteRecord::new();
    let mut batch: Vec<String> = Vec::with_capacity(BATCH);
    let mut row: u64 = 0;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                scan.failure = Some(format!(
                    "The file '{name}' cannot be read after row {row}: {e}."
                ));
                return;
            }
        }
        row += 1;
        scan.counts.read += 1;
        match check_row(&record, names.len(), &columns) {
            Ok(()) => {
                scan.counts.good += 1;
                let id = String::from_utf8_lossy(&record[identity_index])
                    .trim()
                    .to_owned();
                batch.push(id);
            }
            Err((column, reason)) => {
                scan.counts.bad += 1;
                if scan.errors.len() < MAX_SAMPLE {
                    scan.errors.push(RowError {
                        file: name.to_owned(),
                        row,
                        column,
                        reason,
                    });
                }
            }
        }
        // Every BATCH rows, good or bad, the sink hears from the scan (with a possibly empty
        // batch), so progress shows and the lease is renewed even through runs of bad rows.
        if batch.len() >= BATCH || row.is_multiple_of(BATCH as u64) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if !sink(full, &scan.counts) {
                scan.cancelled = true;
                return;
            }
        }
    }
    if !batch.is_empty() && !sink(batch, &scan.counts) {
        scan.cancelled = true;
    }
}

type Column<'a> = (usize, &'a str, FieldType, bool);

fn check_row(
    record: &csv::ByteRecord,
    width: usize,
    columns: &[Column<'_>],
) -> Result<(), (Option<String>, String)> {
    if record.len() != width {
        return Err((
            None,
            format!(
                "the row has {} values, the header has {width}",
                record.len()
            ),
        ));
    }
    for (index, name, ty, identity) in columns {
        let raw = &record[*index];
        let Ok(value) = std::str::from_utf8(raw) else {
            return Err((Some((*name).to_owned()), "not valid UTF-8".into()));
        };
        if *identity && value.trim().is_empty() {
            return Err((
                Some((*name).to_owned()),
                "the identity value is empty".into(),
            ));
        }
        // PostgreSQL text cannot hold U+0000.
        if *identity && value.contains('\0') {
            return Err((
                Some((*name).to_owned()),
                "the identity value contains a NUL character".into(),
            ));
        }
        ty.check(value)
            .map_err(|reason| (Some((*name).to_owned()), format!("'{value}' is {reason}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::external::{Field, Source};

    fn spec() -> IngestSpec {
        IngestSpec {
            fields: vec![
                Field {
                    name: "email".into(),
                    field_type: FieldType::String,
                    identity_ns: Some("email".into()),
                },
                Field {
                    name: "score".into(),
                    field_type: FieldType::Integer,
                    identity_ns: None,
                },
            ],
            source: Source {
                path: "x.csv".into(),
                kind: SourceKind::File,
                cloud_dir: "DLZ".into(),
            },
            ttl_in_days: 30,
        }
    }

    #[test]
    fn good_and_bad_rows_are_counted_with_a_sample() {
        let data = "\u{feff}score,email,extra\n1,a@x,z\nnope,b@x,z\n2,,z\n3,c@x\n4,a@x,z\n";
        let mut scan = Scan::default();
        let mut got = Vec::new();
        scan_reader(data.as_bytes(), "f.csv", &spec(), &mut scan, &mut |b, _| {
            got.extend(b);
            true
        });
        assert!(scan.failure.is_none());
        assert_eq!(
            scan.counts,
            Counts {
                read: 5,
                good: 2,
                bad: 3
            }
        );
        assert_eq!(got, vec!["a@x", "a@x"]);
        assert_eq!(scan.errors[0].row, 2);
        assert_eq!(scan.errors[0].column.as_deref(), Some("score"));
        assert!(scan.errors[1].reason.contains("identity"));
        assert!(scan.errors[2].reason.contains("values"));
    }

    #[test]
    fn the_sink_hears_from_a_scan_of_bad_rows_too() {
        let mut data = String::from("email,score\n");
        for _ in 0..BATCH * 3 {
            data.push_str("x,not-an-int\n");
        }
        let mut calls = 0;
        let mut scan = Scan::default();
        scan_reader(
            data.as_bytes(),
            "f.csv",
            &spec(),
            &mut scan,
            &mut |b, counts| {
                assert!(b.is_empty());
                calls += 1;
                assert_eq!(counts.read, (BATCH * calls) as u64);
                true
            },
        );
        assert_eq!(calls, 3);
        assert_eq!(scan.errors.len(), MAX_SAMPLE);
        assert_eq!(scan.counts.bad, (BATCH * 3) as u64);
    }

    #[test]
    fn a_missing_header_column_fails_naming_it() {
        let mut scan = Scan::default();
        scan_reader(
            "email,other\na,b\n".as_bytes(),
            "f.csv",
            &spec(),
            &mut scan,
            &mut |_, _| true,
        );
        assert!(scan.failure.unwrap().contains("score"));
    }

    /// A reader that produces a large CSV on the fly and records the largest read asked of it:
    /// the scan never asks for more than its fixed buffer, and batches stay bounded.
    struct Generated {
        rows: u64,
        next: u64,
        pending: Vec<u8>,
        largest_read: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest_read = self.largest_read.max(buf.len());
            if self.pending.is_empty() {
                if self.next > self.rows {
                    return Ok(0);
                }
                self.pending = if self.next == 0 {
                    b"email,score\n".to_vec()
                } else {
                    format!("user{}@example.com,{}\n", self.next, self.next % 1000).into_bytes()
                };
                self.next += 1;
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn large_input_streams_through_a_fixed_buffer() {
        let mut reader = Generated {
            rows: 300_000,
            next: 0,
            pending: Vec::new(),
            largest_read: 0,
        };
        let mut scan = Scan::default();
        let mut largest_batch = 0;
        let mut total = 0;
        scan_reader(&mut reader, "big.csv", &spec(), &mut scan, &mut |b, _| {
            largest_batch = largest_batch.max(b.len());
            total += b.len();
            true
        });
        assert_eq!(scan.counts.good, 300_000);
        assert_eq!(total, 300_000);
        assert!(largest_batch <= BATCH);
        assert!(
            reader.largest_read <= READ_BUFFER,
            "{}",
            reader.largest_read
        );
    }
}
