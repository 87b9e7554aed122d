//! Reading a run's source: which files, and the streaming CSV check of DATASET_INGEST. Blocking
//! I/O: the worker calls [`scan_files`] on a blocking thread. Memory stays bounded whatever the
//! file holds: one record buffer is reused and may grow to [`IngestLimits::max_record_bytes`] at
//! most (the reader refuses to hand the CSV parser more bytes of one record, so an unbalanced
//! quote cannot turn the rest of a file into one ever-growing record), identities leave in
//! batches of [`BATCH`], at most [`MAX_SAMPLE`] row errors are kept and every value or header
//! echoed in a message is clipped to [`ECHO_CHARS`].

use std::{
    cell::Cell,
    io::Read,
    path::Path,
    rc::Rc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::config::IngestLimits;
use crate::{
    domain::{
        external::{Field, FieldType, SourceKind, SourceParams},
        landing::parse_blob_name,
        run::{Counts, RowError},
    },
    landing::{FileInfo, Kind, Zone, ZoneError},
};

/// Identities per batch sent to the store.
pub const BATCH: usize = 5_000;
/// Row errors kept as a sample.
pub const MAX_SAMPLE: usize = 100;
/// The CSV reader's buffer.
pub const READ_BUFFER: usize = 64 * 1024;
/// Characters of a value, header name or header list shown in a message; longer ones are cut
/// with an ellipsis.
pub const ECHO_CHARS: usize = 64;
/// Header names listed in the "header lacks field(s)" message.
const ECHO_HEADER_NAMES: usize = 20;

/// The outcome of a scan. `failure` says why the stage failed (missing header column, unreadable
/// file); a scan without failure may still have no good row.
#[derive(Debug, Default)]
pub struct Scan {
    pub counts: Counts,
    /// Bytes read so far, over all files.
    pub bytes: u64,
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
    source: &SourceParams,
    window: (i64, i64),
) -> Result<(Zone, Vec<String>), String> {
    let shown = format!("{}/{}", source.cloud_dir(), source.path);
    let missing = || format!("The source path '{shown}' cannot be read: it does not exist.");
    let name = parse_blob_name(&shown).map_err(|rule| {
        format!("The source path '{shown}' is not a valid name in the landing zone: {rule}.")
    })?;
    let zone = zone.ok_or_else(missing)?;
    let candidates: Vec<(String, FileInfo)> = match source.kind {
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

/// Why a file cannot be used, in words fit for a tenant: file-system error text (paths, "No
/// space left on device") stays in the log.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            tracing::warn!(error = %e, "landing file not usable");
            "an I/O error occurred (the cause is in the server log)".into()
        }
    }
}

/// `text` cut to [`ECHO_CHARS`] characters, with an ellipsis when it was longer.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Header column `i` as compared with the declared fields: trimmed, without the UTF-8 BOM of
/// the first one.
fn header_name(header: &csv::ByteRecord, i: usize) -> String {
    with_header_name(header, i, str::to_owned)
}

fn with_header_name<T>(header: &csv::ByteRecord, i: usize, f: impl FnOnce(&str) -> T) -> T {
    let h = String::from_utf8_lossy(&header[i]);
    let h = if i == 0 {
        h.trim_start_matches('\u{feff}')
    } else {
        &h
    };
    f(h.trim())
}

/// The first header names (of `total`) for a message: each clipped, at most
/// [`ECHO_HEADER_NAMES`] of them.
fn header_for_message(first: &[String], total: usize) -> String {
    let mut shown: Vec<String> = first
        .iter()
        .take(ECHO_HEADER_NAMES)
        .map(|n| clip(n))
        .collect();
    if total > shown.len() {
        shown.push(format!("… ({} more)", total - shown.len()));
    }
    shown.join(", ")
}

fn bytes_bound_message(file: &str, limits: IngestLimits) -> String {
    format!(
        "The run's files hold more than INGEST_MAX_BYTES_PER_RUN ({} bytes); '{file}' passes that bound.",
        limits.max_bytes
    )
}

/// Which bound a [`Bounded`] reader stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overrun {
    Record,
    Bytes,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overrun::Record => "record too long",
            Overrun::Bytes => "too many bytes for one run",
        })
    }
}

impl std::error::Error for Overrun {}

/// A reader that hands out at most `max_record` bytes past the start of the record being parsed
/// (`record_start`, moved on by the scan after every record) and at most `budget` bytes in all.
/// Beyond either it fails with an [`Overrun`], which the CSV reader passes on as an I/O error;
/// so the parser's record buffer never holds more than one bounded record.
struct Bounded<R> {
    inner: R,
    delivered: u64,
    record_start: Rc<Cell<u64>>,
    max_record: u64,
    budget: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let record_room =
            (self.record_start.get() + self.max_record).saturating_sub(self.delivered);
        let room = record_room.min(self.budget);
        if room == 0 {
            // Exactly at a bound: fine if the input ends here, an overrun if it goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ if record_room == 0 => Err(std::io::Error::other(Overrun::Record)),
                _ => Err(std::io::Error::other(Overrun::Bytes)),
            };
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.delivered += n as u64;
        self.budget -= n as u64;
        Ok(n)
    }
}

/// The bound a CSV error stands for, if it is one of the [`Bounded`] reader's.
fn overrun(e: &csv::Error) -> Option<Overrun> {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.get_ref()?.downcast_ref::<Overrun>().copied(),
        _ => None,
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
    fields: &[Field],
    limits: IngestLimits,
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
        // A file that cannot fit is refused before a byte of it is read; one that grows while it
        // is read is stopped by the reader.
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if scan.bytes.saturating_add(size) > limits.max_bytes {
            scan.failure = Some(bytes_bound_message(shown, limits));
            return scan;
        }
        scan_reader(file, shown, fields, limits, &mut scan, sink);
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
    fields: &[Field],
    limits: IngestLimits,
    scan: &mut Scan,
    sink: &mut dyn FnMut(Vec<String>, &Counts) -> bool,
) {
    let mut file = FileScan::open(reader, name, limits, scan.bytes);
    match file.header(fields) {
        Ok(columns) => file.rows(&columns, scan, sink),
        Err(failure) => {
            scan.failure = Some(failure);
            scan.bytes = file.bytes_read();
        }
    }
}

/// A declared field as the scan checks it: where it is in the header.
struct Column<'a> {
    index: usize,
    name: &'a str,
    field_type: FieldType,
    identity: bool,
}

/// The scan of one file: a CSV reader over the bounded input.
struct FileScan<'a, R: Read> {
    csv: csv::Reader<Bounded<R>>,
    /// Where the record being parsed started, for the record bound.
    record_start: Rc<Cell<u64>>,
    name: &'a str,
    limits: IngestLimits,
    /// Bytes of the run's earlier files: whatever way the scan of this file ends, the bytes it
    /// read count for the run.
    bytes_before: u64,
}

impl<'a, R: Read> FileScan<'a, R> {
    fn open(reader: R, name: &'a str, limits: IngestLimits, bytes_before: u64) -> Self {
        let record_start = Rc::new(Cell::new(0u64));
        let csv = csv::ReaderBuilder::new()
            .flexible(true)
            .buffer_capacity(READ_BUFFER)
            .from_reader(Bounded {
                inner: reader,
                delivered: 0,
                record_start: record_start.clone(),
                max_record: limits.max_record_bytes,
                budget: limits.max_bytes.saturating_sub(bytes_before),
            });
        FileScan {
            csv,
            record_start,
            name,
            limits,
            bytes_before,
        }
    }

    /// Bytes of the run's files read so far, this one included.
    fn bytes_read(&self) -> u64 {
        self.bytes_before + self.csv.position().byte()
    }

    /// Reads the header and finds every declared field in it; `Err` says why the file cannot be
    /// read (a read error, a bound, a field the header lacks).
    fn header<'f>(&mut self, fields: &'f [Field]) -> Result<Vec<Column<'f>>, String> {
        let header = match self.csv.byte_headers().cloned() {
            Ok(h) => h,
            Err(e) => return Err(self.read_failure(&e, None)),
        };
        self.record_start.set(self.csv.position().byte());
        // Header names are compared in place: a header of a million empty names costs no more
        // memory than its record.
        let position_of =
            |field: &str| (0..header.len()).find(|&i| with_header_name(&header, i, |n| n == field));
        let missing: Vec<String> = fields
            .iter()
            .filter(|f| position_of(&f.name).is_none())
            .map(|f| clip(&f.name))
            .collect();
        if !missing.is_empty() {
            let shown: Vec<String> = (0..header.len().min(ECHO_HEADER_NAMES + 1))
                .map(|i| header_name(&header, i))
                .collect();
            return Err(format!(
                "The header of '{}' lacks the declared field(s) {}; it has {}.",
                self.name,
                missing.join(", "),
                header_for_message(&shown, header.len())
            ));
        }
        Ok(fields
            .iter()
            .map(|f| Column {
                index: position_of(&f.name).unwrap_or(0),
                name: &f.name,
                field_type: f.field_type,
                identity: f.identity_ns.is_some(),
            })
            .collect())
    }

    /// Reads the data rows: counts them, samples the bad ones, hands the identities of the good
    /// ones to `sink` in batches.
    fn rows(
        &mut self,
        columns: &[Column<'_>],
        scan: &mut Scan,
        sink: &mut dyn FnMut(Vec<String>, &Counts) -> bool,
    ) {
        let width = self.csv.byte_headers().map(|h| h.len()).unwrap_or(0);
        let identity_index = columns
            .iter()
            .find(|c| c.identity)
            .map_or(columns[0].index, |c| c.index);
        let mut record = csv::ByteRecord::new();
        let mut batch: Vec<String> = Vec::with_capacity(BATCH);
        let mut row: u64 = 0;
        loop {
            let read = self.csv.read_byte_record(&mut record);
            scan.bytes = self.bytes_read();
            match read {
                Ok(false) => break,
                Ok(true) => self.record_start.set(self.csv.position().byte()),
                Err(e) => {
                    scan.failure = Some(self.read_failure(&e, Some(row)));
                    return;
                }
            }
            if scan.counts.read >= self.limits.max_rows {
                scan.failure = Some(format!(
                    "The run has more than INGEST_MAX_ROWS_PER_RUN ({}) data rows; row {} of '{}' passes that bound.",
                    self.limits.max_rows,
                    row + 1,
                    self.name
                ));
                return;
            }
            row += 1;
            scan.counts.read += 1;
            match check_row(&record, width, columns) {
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
                            file: self.name.to_owned(),
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

    /// Why reading stopped at the header (`row` None) or after data row `row`: a bound the
    /// reader refused to pass, or a read error whose cause goes to the log only.
    fn read_failure(&self, e: &csv::Error, row: Option<u64>) -> String {
        let name = self.name;
        let at = match row {
            None => format!("The header of '{name}'"),
            Some(row) => format!("Row {} of '{name}'", row + 1),
        };
        match overrun(e) {
            Some(Overrun::Record) => format!(
                "{at} is longer than INGEST_MAX_RECORD_BYTES ({} bytes); an unbalanced quote makes the rest of a file one record.",
                self.limits.max_record_bytes
            ),
            Some(Overrun::Bytes) => bytes_bound_message(name, self.limits),
            None => {
                tracing::warn!(file = name, error = %e, "CSV read failed");
                match row {
                    None => format!(
                        "The file '{name}' cannot be read (the cause is in the server log)."
                    ),
                    Some(row) => format!(
                        "The file '{name}' cannot be read after row {row} (the cause is in the server log)."
                    ),
                }
            }
        }
    }
}

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
    for column in columns {
        let refuse = |reason: String| Err((Some(column.name.to_owned()), reason));
        let Ok(value) = std::str::from_utf8(&record[column.index]) else {
            return refuse("not valid UTF-8".into());
        };
        if column.identity && value.trim().is_empty() {
            return refuse("the identity value is empty".into());
        }
        // PostgreSQL text cannot hold U+0000.
        if column.identity && value.contains('\0') {
            return refuse("the identity value contains a NUL character".into());
        }
        if let Err(reason) = column.field_type.check(value) {
            return refuse(format!("'{}' is {reason}", clip(value)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: IngestLimits = IngestLimits::DEFAULT;

    fn scan_with(data: &[u8], limits: IngestLimits) -> (Scan, Vec<String>) {
        let mut scan = Scan::default();
        let mut got = Vec::new();
        scan_reader(data, "f.csv", &fields(), limits, &mut scan, &mut |b, _| {
            got.extend(b);
            true
        });
        (scan, got)
    }

    fn record_bound(bytes: u64) -> IngestLimits {
        IngestLimits {
            max_record_bytes: bytes,
            ..LIMITS
        }
    }

    #[test]
    fn a_record_of_exactly_the_bound_passes_and_one_byte_more_fails_naming_it() {
        // "email,score\n" is 12 bytes, "aaaaaaaa@x,1\n" 13.
        let data = b"email,score\naaaaaaaa@x,1\n";
        let (scan, got) = scan_with(data, record_bound(13));
        assert!(scan.failure.is_none(), "{:?}", scan.failure);
        assert_eq!(got, vec!["aaaaaaaa@x"]);
        let (scan, _) = scan_with(data, record_bound(12));
        let failure = scan.failure.unwrap();
        assert!(
            failure
                .starts_with("Row 1 of 'f.csv' is longer than INGEST_MAX_RECORD_BYTES (12 bytes)"),
            "{failure}"
        );
        // The last row may lack its line end.
        let (scan, _) = scan_with(b"email,score\naaaaaaaa@x,1", record_bound(12));
        assert!(scan.failure.is_none(), "{:?}", scan.failure);
        let (scan, _) = scan_with(data, record_bound(11));
        assert!(scan.failure.unwrap().starts_with(
            "The header of 'f.csv' is longer than INGEST_MAX_RECORD_BYTES (11 bytes)"
        ));
    }

    /// Endless input: a header, an opening quote that never closes, then row after row.
    struct Unbalanced {
        sent: u64,
        largest_read: usize,
    }

    impl Read for Unbalanced {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest_read = self.largest_read.max(buf.len());
            let start: &[u8] = b"email,score\n\"a@x,1\n";
            let fill = b"b@x,2\n";
            for (i, byte) in buf.iter_mut().enumerate() {
                let at = self.sent + i as u64;
                *byte = match start.get(at as usize) {
                    Some(b) => *b,
                    None => fill[((at - start.len() as u64) % fill.len() as u64) as usize],
                };
            }
            self.sent += buf.len() as u64;
            Ok(buf.len())
        }
    }

    #[test]
    fn an_unbalanced_quote_stops_at_the_record_bound_without_reading_on() {
        let mut reader = Unbalanced {
            sent: 0,
            largest_read: 0,
        };
        let mut scan = Scan::default();
        scan_reader(
            &mut reader,
            "q.csv",
            &fields(),
            record_bound(100_000),
            &mut scan,
            &mut |_, _| true,
        );
        let failure = scan.failure.unwrap();
        assert!(
            failure.starts_with(
                "Row 1 of 'q.csv' is longer than INGEST_MAX_RECORD_BYTES (100000 bytes)"
            ),
            "{failure}"
        );
        // The reader was asked for the header, the bounded record and one probe byte, no more.
        assert!(reader.sent <= 12 + 100_000 + 1, "{}", reader.sent);
        assert_eq!(scan.counts.read, 0);
    }

    #[test]
    fn rows_and_bytes_per_run_are_bounded_over_all_files() {
        let data = b"email,score\na@x,1\nb@x,2\nc@x,3\n";
        let rows = |n| IngestLimits {
            max_rows: n,
            ..LIMITS
        };
        let (scan, _) = scan_with(data, rows(3));
        assert!(scan.failure.is_none());
        let (scan, _) = scan_with(data, rows(2));
        assert_eq!(
            scan.failure.unwrap(),
            "The run has more than INGEST_MAX_ROWS_PER_RUN (2) data rows; row 3 of 'f.csv' passes that bound."
        );
        // 12 + 3 * 6 = 30 bytes.
        let bytes = |n| IngestLimits {
            max_bytes: n,
            ..LIMITS
        };
        let (scan, _) = scan_with(data, bytes(30));
        assert!(scan.failure.is_none());
        assert_eq!(scan.bytes, 30);
        let (scan, _) = scan_with(data, bytes(29));
        assert!(scan
            .failure
            .unwrap()
            .starts_with("The run's files hold more than INGEST_MAX_BYTES_PER_RUN (29 bytes)"));
        // A second file starts with what the first one used.
        let mut scan = Scan::default();
        scan_reader(
            &data[..],
            "a.csv",
            &fields(),
            rows(4),
            &mut scan,
            &mut |_, _| true,
        );
        scan_reader(
            &data[..],
            "b.csv",
            &fields(),
            rows(4),
            &mut scan,
            &mut |_, _| true,
        );
        assert_eq!(
            scan.failure.unwrap(),
            "The run has more than INGEST_MAX_ROWS_PER_RUN (4) data rows; row 2 of 'b.csv' passes that bound."
        );
    }

    #[test]
    fn echoed_values_and_headers_are_clipped() {
        let long = "9".repeat(10_000);
        let data = format!("email,score\na@x,{long}x\n");
        let (scan, _) = scan_with(data.as_bytes(), LIMITS);
        let reason = &scan.errors[0].reason;
        assert!(reason.chars().count() < ECHO_CHARS + 40, "{reason}");
        assert!(
            reason.starts_with(&format!("'{}…' is not an integer", &long[..ECHO_CHARS])),
            "{reason}"
        );

        let header: Vec<String> = (0..5_000)
            .map(|i| format!("{}{i}", "h".repeat(200)))
            .collect();
        let data = format!("{},email\n", header.join(","));
        let (scan, _) = scan_with(data.as_bytes(), LIMITS);
        let failure = scan.failure.unwrap();
        assert!(failure.len() < 2_000, "{} bytes", failure.len());
        assert!(
            failure.contains("lacks the declared field(s) score"),
            "{failure}"
        );
        assert!(failure.ends_with("… (4981 more)."), "{failure}");
        assert_eq!(clip("short"), "short");
        assert_eq!(clip(&"é".repeat(65)), format!("{}…", "é".repeat(64)));
    }

    fn fields() -> Vec<Field> {
        vec![
            Field {
                name: "email".into(),
                field_type: FieldType::String,
                identity_ns: Some("email".into()),
                labels: None,
            },
            Field {
                name: "score".into(),
                field_type: FieldType::Integer,
                identity_ns: None,
                labels: None,
            },
        ]
    }

    #[test]
    fn good_and_bad_rows_are_counted_with_a_sample() {
        let data = "\u{feff}score,email,extra\n1,a@x,z\nnope,b@x,z\n2,,z\n3,c@x\n4,a@x,z\n";
        let mut scan = Scan::default();
        let mut got = Vec::new();
        scan_reader(
            data.as_bytes(),
            "f.csv",
            &fields(),
            LIMITS,
            &mut scan,
            &mut |b, _| {
                got.extend(b);
                true
            },
        );
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
            &fields(),
            LIMITS,
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
            &fields(),
            LIMITS,
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
        scan_reader(
            &mut reader,
            "big.csv",
            &fields(),
            LIMITS,
            &mut scan,
            &mut |b, _| {
                largest_batch = largest_batch.max(b.len());
                total += b.len();
                true
            },
        );
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
