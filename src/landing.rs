//! The landing zones on disk. Blocking I/O: callers run it on a blocking thread.
//!
//! ```text
//! <LANDING_DIR>/
//!   <storageAccountName>/            one folder per sandbox (the name is random, see docs/LANDING.md)
//!     dlz-user-container/            the container: a blob `a/b.csv` is the file `a/b.csv` here
//!     .staging/uploads/<uuid>.part   uploads in progress, renamed into the container when complete
//!     .staging/blocks/<key>/<id>     uncommitted blocks of one blob (Put Block)
//! ```
//!
//! Nothing here follows a symbolic link. Every path is walked one component at a time from an
//! open directory (`openat` with `O_NOFOLLOW | O_DIRECTORY`), and files are opened with
//! `O_NOFOLLOW` and checked to be regular after opening, so a link or a FIFO planted in a zone,
//! or swapped in while a request runs, is never read through. Only `LANDING_DIR` itself, which the
//! operator chooses, may be a link. A blob becomes visible by a rename, so a reader never sees a
//! half-written file.

use std::{
    collections::HashSet,
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustix::{
    fs::{self as sys, AtFlags, Dir, FileType, Mode, OFlags, Stat},
    io::Errno,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::landing::{is_account_name, BlobName, CONTAINER_NAME, MAX_SEGMENTS};

const STAGING: &str = ".staging";
const UPLOADS: &str = "uploads";
const BLOCKS: &str = "blocks";
/// Entries one walk visits at most (a listing, the usage count, one zone's expiry).
pub const WALK_CAP: usize = 100_000;
/// Uploads in progress and uncommitted blocks untouched for this long are removed.
pub const STAGING_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a zone operation can meet.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("not found")]
    NotFound,
    /// A folder, a FIFO, a device: something that is not a blob.
    #[error("not a regular file")]
    NotAFile { folder: bool },
    /// A symbolic link on the way or at the end: never followed.
    #[error("a symbolic link")]
    Link,
    /// A file stands where a folder is needed, or a folder where a file is.
    #[error("the path conflicts with an existing file or folder")]
    Conflict,
    /// The name is taken and replacing was not allowed.
    #[error("already exists")]
    Exists,
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn errno(e: Errno) -> ZoneError {
    match e {
        Errno::NOENT => ZoneError::NotFound,
        Errno::NOTDIR => ZoneError::Conflict,
        Errno::LOOP | Errno::MLINK => ZoneError::Link,
        e => ZoneError::Io(e.into()),
    }
}

/// Size and times of a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    pub modified: SystemTime,
    /// The inode's change time: when the file arrived under its name (a rename sets it).
    pub changed: SystemTime,
    pub inode: u64,
}

fn time_of(secs: i64, nanos: u64) -> SystemTime {
    let nanos = Duration::from_nanos(nanos.min(999_999_999));
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s) + nanos,
        Err(_) => UNIX_EPOCH,
    }
}

impl FileInfo {
    // Stat's field types differ between targets.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &Stat) -> Self {
        FileInfo {
            size: u64::try_from(st.st_size).unwrap_or(0),
            modified: time_of(st.st_mtime as i64, st.st_mtime_nsec as u64),
            changed: time_of(st.st_ctime as i64, st.st_ctime_nsec as u64),
            inode: st.st_ino as u64,
        }
    }

    /// When the file last arrived or changed: the later of its modification and change times, so
    /// that a file copied in with an old modification time still counts from its arrival.
    pub fn arrived(&self) -> SystemTime {
        self.modified.max(self.changed)
    }

    /// An Azure-style entity tag (`"0x…"`), new whenever the file is replaced or rewritten.
    pub fn etag(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.inode.to_le_bytes());
        h.update(self.size.to_le_bytes());
        let m = self.modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        h.update(m.as_nanos().to_le_bytes());
        format!("\"0x{}\"", hex::encode_upper(&h.finalize()[..8]))
    }
}

/// What a name in a zone is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File(FileInfo),
    Folder,
    Link,
    Other,
}

fn kind_of(st: &Stat) -> Kind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File(FileInfo::from_stat(st)),
        FileType::Directory => Kind::Folder,
        FileType::Symlink => Kind::Link,
        _ => Kind::Other,
    }
}

fn stat_at(dir: impl AsFd, name: &str) -> Result<Kind, ZoneError> {
    sys::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| kind_of(&st))
        .map_err(errno)
}

fn dir_mode() -> Mode {
    Mode::RWXU | Mode::RGRP | Mode::XGRP | Mode::ROTH | Mode::XOTH
}

fn file_mode() -> Mode {
    Mode::RUSR | Mode::WUSR | Mode::RGRP | Mode::ROTH
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the folder `name` inside `dir` without following a link; with `create`, makes it first.
fn sub_dir(dir: impl AsFd, name: &str, create: bool) -> Result<OwnedFd, ZoneError> {
    if create {
        match sys::mkdirat(dir.as_fd(), name, dir_mode()) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(errno(e)),
        }
    }
    match sys::openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(fd),
        // Linux answers ENOTDIR, not ELOOP, for a link opened with O_DIRECTORY | O_NOFOLLOW.
        Err(Errno::NOTDIR) if matches!(stat_at(dir, name), Ok(Kind::Link)) => Err(ZoneError::Link),
        Err(e) => Err(errno(e)),
    }
}

/// Walks `segments` from `dir`, one folder at a time; returns every folder opened (the last is
/// the deepest). With no segments, the chain is empty.
fn walk(dir: &OwnedFd, segments: &[&str], create: bool) -> Result<Vec<OwnedFd>, ZoneError> {
    let mut chain: Vec<OwnedFd> = Vec::with_capacity(segments.len());
    for segment in segments {
        let next = sub_dir(chain.last().unwrap_or(dir), segment, create)?;
        chain.push(next);
    }
    Ok(chain)
}

/// One sandbox's zone.
#[derive(Debug, Clone)]
pub struct Zone {
    root: PathBuf,
    account: String,
}

/// An upload being written: a temporary file in the zone's staging folder, removed when dropped
/// unless it was committed.
pub struct Upload {
    pub file: File,
    dir: OwnedFd,
    name: String,
    done: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = sys::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Bytes and files a zone holds, blocks and uploads in progress included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

/// A blob found by [`Zone::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub info: FileInfo,
}

impl Zone {
    /// The zone of `account` under `root`; `None` for a name that is not account-shaped (it could
    /// not be a single safe folder name).
    pub fn new(root: &Path, account: &str) -> Option<Zone> {
        is_account_name(account).then(|| Zone {
            root: root.to_owned(),
            account: account.to_owned(),
        })
    }

    /// Where the container lives on disk (for people dropping files by hand, and the tests).
    pub fn container_path(&self) -> PathBuf {
        self.root.join(&self.account).join(CONTAINER_NAME)
    }

    /// Deletes everything the zone holds (blobs, uncommitted blocks, uploads in progress); returns
    /// how many files there were (counted up to [`WALK_CAP`] entries). The zone's folder is made
    /// again on its next use. Links are removed, never followed (`remove_dir_all` does not follow
    /// them).
    pub fn clear(&self) -> io::Result<u64> {
        let dir = self.root.join(&self.account);
        let mut files = 0;
        let (mut pending, mut seen) = (vec![dir.clone()], 0);
        while let Some(folder) = pending.pop() {
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                seen += 1;
                if seen > WALK_CAP {
                    break;
                }
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else {
                    files += 1;
                }
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(files),
        }
    }

    fn account_dir(&self, create: bool) -> Result<OwnedFd, ZoneError> {
        if create {
            std::fs::create_dir_all(&self.root)?;
        }
        let root = sys::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        sub_dir(&root, &self.account, create)
    }

    fn container(&self, create: bool) -> Result<OwnedFd, ZoneError> {
        sub_dir(&self.account_dir(create)?, CONTAINER_NAME, create)
    }

    fn staging(&self, part: &str, create: bool) -> Result<OwnedFd, ZoneError> {
        let staging = sub_dir(&self.account_dir(create)?, STAGING, create)?;
        sub_dir(&staging, part, create)
    }

    /// The folder that holds `name`, opened, and the last component.
    fn parent_of<'n>(
        &self,
        name: &'n BlobName,
        create: bool,
    ) -> Result<(Vec<OwnedFd>, OwnedFd, &'n str), ZoneError> {
        let container = self.container(create)?;
        let (folders, leaf) = name.split_last();
        let mut chain = walk(&container, &folders, create)?;
        let parent = chain.pop().unwrap_or(container);
        Ok((chain, parent, leaf))
    }

    /// What `name` is, without following a link. A path through a file is not found.
    pub fn entry(&self, name: &BlobName) -> Result<Kind, ZoneError> {
        let (_, parent, leaf) = match self.parent_of(name, false) {
            Err(ZoneError::Conflict) => return Err(ZoneError::NotFound),
            other => other?,
        };
        stat_at(&parent, leaf)
    }

    /// Opens the regular file `name` for reading. Links, folders, FIFOs and devices are refused
    /// (a FIFO is opened non-blocking, so it cannot hold the caller).
    pub fn open_file(&self, name: &BlobName) -> Result<(File, FileInfo), ZoneError> {
        let (_, parent, leaf) = match self.parent_of(name, false) {
            Err(ZoneError::Conflict) => return Err(ZoneError::NotFound),
            other => other?,
        };
        let fd = sys::openat(
            &parent,
            leaf,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = sys::fstat(&fd).map_err(errno)?;
        match kind_of(&st) {
            Kind::File(info) => Ok((File::from(fd), info)),
            Kind::Folder => Err(ZoneError::NotAFile { folder: true }),
            Kind::Link => Err(ZoneError::Link),
            Kind::Other => Err(ZoneError::NotAFile { folder: false }),
        }
    }

    /// The regular files directly in the folder `folder` (links and anything else left out).
    pub fn files_in(&self, folder: &BlobName) -> Result<Vec<(String, FileInfo)>, ZoneError> {
        let container = self.container(false)?;
        let segments: Vec<&str> = folder.segments().collect();
        let chain = match walk(&container, &segments, false) {
            Err(ZoneError::Conflict) => return Err(ZoneError::NotAFile { folder: false }),
            other => other?,
        };
        let dir = chain.last().unwrap_or(&container);
        let mut found = Vec::new();
        for (name, kind) in read_dir(dir)?.into_iter().take(WALK_CAP) {
            if let Kind::File(info) = kind {
                found.push((name, info));
            }
        }
        Ok(found)
    }

    /// Every blob whose name starts with the folders `under` (complete segments), in name order,
    /// at most [`WALK_CAP`] entries visited. Names that break the naming rules (dropped in by
    /// hand) are left out, as are links.
    pub fn list(&self, under: &[&str]) -> Result<Vec<Listed>, ZoneError> {
        let container = match self.container(false) {
            Err(ZoneError::NotFound) => return Ok(Vec::new()),
            other => other?,
        };
        let chain = match walk(&container, under, false) {
            Err(ZoneError::NotFound | ZoneError::Conflict | ZoneError::Link) => {
                return Ok(Vec::new())
            }
            other => other?,
        };
        let start = chain.last().unwrap_or(&container);
        let mut out = Vec::new();
        let mut budget = WALK_CAP;
        let prefix = under.join("/");
        collect(start, &prefix, under.len(), &mut budget, &mut out)?;
        out.retain(|l| crate::domain::landing::parse_blob_name(&l.name).is_ok());
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }

    /// What the zone holds on disk, blocks and uploads in progress included.
    pub fn usage(&self) -> Result<Usage, ZoneError> {
        let account = match self.account_dir(false) {
            Err(ZoneError::NotFound) => return Ok(Usage::default()),
            other => other?,
        };
        let mut found = Vec::new();
        let mut budget = WALK_CAP;
        collect(&account, "", 0, &mut budget, &mut found)?;
        Ok(Usage {
            bytes: found.iter().map(|l| l.info.size).sum(),
            files: found.len() as u64,
        })
    }

    /// A new, empty upload in the staging folder.
    pub fn begin_upload(&self) -> Result<Upload, ZoneError> {
        let dir = self.staging(UPLOADS, true)?;
        let name = format!("{}.part", Uuid::new_v4().simple());
        let fd = sys::openat(
            &dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            file_mode(),
        )
        .map_err(errno)?;
        Ok(Upload {
            file: File::from(fd),
            dir,
            name,
            done: false,
        })
    }

    /// Makes a complete upload the blob `name`, atomically: readers see the old file or the new
    /// one, never a part. Folders on the way are created. With `replace` false an existing blob
    /// is left alone ([`ZoneError::Exists`]).
    pub fn commit(
        &self,
        mut upload: Upload,
        name: &BlobName,
        replace: bool,
    ) -> Result<FileInfo, ZoneError> {
        // A folder emptied and removed by a concurrent delete between our walk and the rename
        // makes the rename fail with ENOENT: walk again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (_, parent, leaf) = self.parent_of(name, true)?;
            match stat_at(&parent, leaf) {
                Ok(Kind::Folder) => return Err(ZoneError::Conflict),
                Ok(Kind::File(_)) if !replace => return Err(ZoneError::Exists),
                Ok(_) | Err(ZoneError::NotFound) => {}
                Err(e) => return Err(e),
            }
            let moved = if replace {
                sys::renameat(&upload.dir, upload.name.as_str(), &parent, leaf)
            } else {
                // A hard link fails when the name exists, so a concurrent writer cannot be
                // overwritten; the temporary name is dropped afterwards.
                sys::linkat(
                    &upload.dir,
                    upload.name.as_str(),
                    &parent,
                    leaf,
                    AtFlags::empty(),
                )
            };
            match moved {
                Ok(()) => break,
                Err(Errno::NOENT) if attempts < 3 => continue,
                Err(Errno::EXIST) if !replace => return Err(ZoneError::Exists),
                Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                    return Err(ZoneError::Conflict)
                }
                Err(e) => return Err(errno(e)),
            }
        }
        if !replace {
            let _ = sys::unlinkat(&upload.dir, upload.name.as_str(), AtFlags::empty());
        }
        upload.done = true;
        let st = sys::fstat(&upload.file).map_err(errno)?;
        Ok(FileInfo::from_stat(&st))
    }

    /// Deletes the blob `name`; folders left empty are removed too. Only regular files are
    /// blobs: a folder or a link is not found.
    pub fn delete(&self, name: &BlobName) -> Result<(), ZoneError> {
        let container = self.container(false)?;
        let (folders, leaf) = name.split_last();
        let chain = match walk(&container, &folders, false) {
            Err(ZoneError::Conflict | ZoneError::Link) => return Err(ZoneError::NotFound),
            other => other?,
        };
        let parent = chain.last().unwrap_or(&container);
        match stat_at(parent, leaf)? {
            Kind::File(_) => {}
            _ => return Err(ZoneError::NotFound),
        }
        sys::unlinkat(parent, leaf, AtFlags::empty()).map_err(errno)?;
        prune(&container, &chain, &folders);
        Ok(())
    }

    fn block_dir(&self, blob: &BlobName, create: bool) -> Result<OwnedFd, ZoneError> {
        let blocks = self.staging(BLOCKS, create)?;
        sub_dir(&blocks, &block_key(blob), create)
    }

    /// Stores a complete upload as the uncommitted block `block` (hex) of `blob`, replacing a
    /// block of the same id.
    pub fn stage_block(
        &self,
        mut upload: Upload,
        blob: &BlobName,
        block: &str,
    ) -> Result<(), ZoneError> {
        let dir = self.block_dir(blob, true)?;
        sys::renameat(&upload.dir, upload.name.as_str(), &dir, block).map_err(errno)?;
        upload.done = true;
        Ok(())
    }

    /// The uncommitted blocks of `blob`: id (hex) and size.
    pub fn blocks(&self, blob: &BlobName) -> Result<Vec<(String, u64)>, ZoneError> {
        let dir = match self.block_dir(blob, false) {
            Err(ZoneError::NotFound) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(read_dir(&dir)?
            .into_iter()
            .filter_map(|(name, kind)| match kind {
                Kind::File(info) => Some((name, info.size)),
                _ => None,
            })
            .collect())
    }

    /// A new upload holding the blocks of `blob` in the given order. `Err(NotFound)` when a
    /// block is not there.
    pub fn assemble(&self, blob: &BlobName, order: &[String]) -> Result<Upload, ZoneError> {
        let dir = self.block_dir(blob, false)?;
        let mut upload = self.begin_upload()?;
        for block in order {
            let fd = sys::openat(
                &dir,
                block.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )
            .map_err(errno)?;
            if !matches!(kind_of(&sys::fstat(&fd).map_err(errno)?), Kind::File(_)) {
                return Err(ZoneError::NotFound);
            }
            io::copy(&mut File::from(fd), &mut upload.file)?;
        }
        Ok(upload)
    }

    /// Discards every uncommitted block of `blob` (after a commit, as Azure does).
    pub fn drop_blocks(&self, blob: &BlobName) -> Result<(), ZoneError> {
        let blocks = match self.staging(BLOCKS, false) {
            Err(ZoneError::NotFound) => return Ok(()),
            other => other?,
        };
        remove_tree(&blocks, &block_key(blob));
        Ok(())
    }
}

/// The folder name of a blob's uncommitted blocks: fixed length, whatever the blob's name.
fn block_key(blob: &BlobName) -> String {
    hex::encode(&Sha256::digest(blob.as_str().as_bytes())[..20])
}

/// The entries of a folder with what they are (never following links), `.` and `..` left out,
/// names that are not UTF-8 left out.
fn read_dir(dir: &OwnedFd) -> Result<Vec<(String, Kind)>, ZoneError> {
    let mut out = Vec::new();
    for entry in Dir::read_from(dir).map_err(errno)? {
        let entry = entry.map_err(errno)?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let kind = match stat_at(dir, name) {
            Ok(kind) => kind,
            Err(ZoneError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        out.push((name.to_owned(), kind));
        if out.len() >= WALK_CAP {
            break;
        }
    }
    Ok(out)
}

/// Collects the regular files under `dir` (recursively, links skipped), named from `prefix`.
fn collect(
    dir: &OwnedFd,
    prefix: &str,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<Listed>,
) -> Result<(), ZoneError> {
    for (name, kind) in read_dir(dir)? {
        if *budget == 0 {
            return Ok(());
        }
        *budget -= 1;
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match kind {
            Kind::File(info) => out.push(Listed { name: full, info }),
            Kind::Folder if depth < MAX_SEGMENTS => match sub_dir(dir, &name, false) {
                Ok(sub) => collect(&sub, &full, depth + 1, budget, out)?,
                // Removed or swapped for a link meanwhile: skipped.
                Err(ZoneError::NotFound | ZoneError::Link | ZoneError::Conflict) => {}
                Err(e) => return Err(e),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Removes the folders of `chain` that are empty, deepest first, stopping at the first that is
/// not (a concurrent upload may just have put something there).
fn prune(container: &OwnedFd, chain: &[OwnedFd], folders: &[&str]) {
    for i in (0..chain.len()).rev() {
        let parent = if i == 0 { container } else { &chain[i - 1] };
        if sys::unlinkat(parent, folders[i], AtFlags::REMOVEDIR).is_err() {
            break;
        }
    }
}

/// Removes `name` in `dir` and everything under it, without following links (a link is removed
/// itself). Best effort.
fn remove_tree(dir: &OwnedFd, name: &str) {
    match stat_at(dir, name) {
        Ok(Kind::Folder) => {
            if let Ok(sub) = sub_dir(dir, name, false) {
                if let Ok(entries) = read_dir(&sub) {
                    for (child, _) in entries {
                        remove_tree(&sub, &child);
                    }
                }
            }
            let _ = sys::unlinkat(dir, name, AtFlags::REMOVEDIR);
        }
        Ok(_) => {
            let _ = sys::unlinkat(dir, name, AtFlags::empty());
        }
        Err(_) => {}
    }
}

/// What one expiry sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Blobs (and links or other entries dropped in by hand) older than the zone TTL.
    pub files: u64,
    /// Uploads in progress and uncommitted blocks untouched for [`STAGING_TTL`].
    pub staged: u64,
}

/// Deletes, in every zone under `root`, the files that arrived more than `ttl` before `now`,
/// uploads and uncommitted blocks untouched for [`STAGING_TTL`], and the folders this leaves
/// empty. `now` comes from the caller's clock, so tests can move time. Several processes may
/// sweep the same volume at once: a file another one removed first is skipped.
pub fn expire_files(root: &Path, now: SystemTime, ttl: Duration) -> io::Result<Expired> {
    expire_files_at(root, |_| now, ttl)
}

/// [`expire_files`] with each zone's own time: `now_of(account)` (a sandbox's test-control clock
/// offset moves its zone's time).
pub fn expire_files_at(
    root: &Path,
    now_of: impl Fn(&str) -> SystemTime,
    ttl: Duration,
) -> io::Result<Expired> {
    let mut expired = Expired::default();
    let root_fd = match sys::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(expired),
        Err(e) => return Err(e.into()),
    };
    let zones = read_dir(&root_fd).map_err(into_io)?;
    for (account, kind) in zones {
        if kind != Kind::Folder || !is_account_name(&account) {
            continue;
        }
        let Ok(account_fd) = sub_dir(&root_fd, &account, false) else {
            continue;
        };
        let now = now_of(&account);
        if let Ok(container) = sub_dir(&account_fd, CONTAINER_NAME, false) {
            let mut budget = WALK_CAP;
            expired.files += sweep(&container, now, ttl, &mut budget, 0);
        }
        if let Ok(staging) = sub_dir(&account_fd, STAGING, false) {
            if let Ok(uploads) = sub_dir(&staging, UPLOADS, false) {
                let mut budget = WALK_CAP;
                expired.staged += sweep(&uploads, now, STAGING_TTL, &mut budget, MAX_SEGMENTS);
            }
            if let Ok(blocks) = sub_dir(&staging, BLOCKS, false) {
                expired.staged += sweep_blocks(&blocks, now);
            }
        }
    }
    Ok(expired)
}

fn into_io(e: ZoneError) -> io::Error {
    match e {
        ZoneError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn older_than(info_time: SystemTime, now: SystemTime, ttl: Duration) -> bool {
    now.duration_since(info_time).is_ok_and(|age| age >= ttl)
}

/// When an entry arrived, from its own status (a link's, not its target's).
fn arrived_at(dir: &OwnedFd, name: &str) -> Option<SystemTime> {
    let st = sys::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    Some(FileInfo::from_stat(&st).arrived())
}

/// Removes what under `dir` is older than `ttl`, and folders left empty; how many entries went.
/// With `depth` at [`MAX_SEGMENTS`], sub-folders are not entered.
fn sweep(dir: &OwnedFd, now: SystemTime, ttl: Duration, budget: &mut usize, depth: usize) -> u64 {
    let mut removed = 0;
    let Ok(entries) = read_dir(dir) else {
        return 0;
    };
    for (name, kind) in entries {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        match kind {
            Kind::Folder => {
                if depth < MAX_SEGMENTS {
                    if let Ok(sub) = sub_dir(dir, &name, false) {
                        removed += sweep(&sub, now, ttl, budget, depth + 1);
                    }
                    // Only an empty folder goes; a fresh upload into it keeps it.
                    let _ = sys::unlinkat(dir, name.as_str(), AtFlags::REMOVEDIR);
                }
            }
            _ => {
                let old = arrived_at(dir, &name).is_some_and(|at| older_than(at, now, ttl));
                if old && sys::unlinkat(dir, name.as_str(), AtFlags::empty()).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// Removes the uncommitted blocks of every blob whose newest block is older than [`STAGING_TTL`].
fn sweep_blocks(blocks: &OwnedFd, now: SystemTime) -> u64 {
    let mut removed = 0;
    let Ok(blobs) = read_dir(blocks) else {
        return 0;
    };
    let mut seen = HashSet::new();
    for (key, kind) in blobs {
        if kind != Kind::Folder || !seen.insert(key.clone()) {
            continue;
        }
        let Ok(dir) = sub_dir(blocks, &key, false) else {
            continue;
        };
        let Ok(entries) = read_dir(&dir) else {
            continue;
        };
        let newest = entries
            .iter()
            .filter_map(|(name, _)| arrived_at(&dir, name))
            .max();
        if newest.is_none_or(|at| older_than(at, now, STAGING_TTL)) {
            removed += entries.len() as u64;
            remove_tree(blocks, &key);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::landing::parse_blob_name;

    fn zone() -> (tempdir::Dir, Zone) {
        let dir = tempdir::Dir::new();
        let zone = Zone::new(dir.path(), "dlblobstoretest000000000").unwrap();
        (dir, zone)
    }

    /// A temporary folder removed when dropped (std only, no extra crate).
    mod tempdir {
        use std::path::{Path, PathBuf};
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "landing-unit-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn name(s: &str) -> BlobName {
        parse_blob_name(s).unwrap()
    }

    fn put(zone: &Zone, blob: &str, data: &[u8]) -> FileInfo {
        use std::io::Write;
        let mut up = zone.begin_upload().unwrap();
        up.file.write_all(data).unwrap();
        zone.commit(up, &name(blob), true).unwrap()
    }

    fn read(zone: &Zone, blob: &str) -> Result<String, ZoneError> {
        use std::io::Read;
        let (mut f, _) = zone.open_file(&name(blob))?;
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        Ok(s)
    }

    #[test]
    fn uploads_commit_list_and_delete() {
        let (_d, zone) = zone();
        assert!(matches!(read(&zone, "a.csv"), Err(ZoneError::NotFound)));
        let info = put(&zone, "DLZ/x/a.csv", b"hello");
        assert_eq!(info.size, 5);
        put(&zone, "DLZ/b.csv", b"hi");
        assert_eq!(read(&zone, "DLZ/x/a.csv").unwrap(), "hello");
        let names: Vec<String> = zone
            .list(&[])
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["DLZ/b.csv", "DLZ/x/a.csv"]);
        let under: Vec<String> = zone
            .list(&["DLZ", "x"])
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(under, ["DLZ/x/a.csv"]);
        assert_eq!(zone.usage().unwrap(), Usage { bytes: 7, files: 2 });
        // A folder is not a blob; a blob cannot be a folder's name, nor live under a file.
        assert!(matches!(
            zone.delete(&name("DLZ/x")),
            Err(ZoneError::NotFound)
        ));
        let up = zone.begin_upload().unwrap();
        assert!(matches!(
            zone.commit(up, &name("DLZ/x"), true),
            Err(ZoneError::Conflict)
        ));
        let up = zone.begin_upload().unwrap();
        assert!(matches!(
            zone.commit(up, &name("DLZ/b.csv/c"), true),
            Err(ZoneError::Conflict)
        ));
        // No replace when asked.
        let up = zone.begin_upload().unwrap();
        assert!(matches!(
            zone.commit(up, &name("DLZ/b.csv"), false),
            Err(ZoneError::Exists)
        ));
        zone.delete(&name("DLZ/x/a.csv")).unwrap();
        assert!(
            !zone.container_path().join("DLZ/x").exists(),
            "empty folders go"
        );
        // Nothing is left in staging by failed commits.
        assert_eq!(zone.usage().unwrap(), Usage { bytes: 2, files: 1 });
    }

    #[test]
    fn links_are_never_followed() {
        let (d, zone) = zone();
        put(&zone, "DLZ/real.csv", b"mine");
        let secret = d.path().join("secret.txt");
        std::fs::write(&secret, "other tenant").unwrap();
        let container = zone.container_path();
        std::os::unix::fs::symlink(&secret, container.join("DLZ/link.csv")).unwrap();
        std::os::unix::fs::symlink(d.path(), container.join("DLZ/dirlink")).unwrap();
        assert!(matches!(read(&zone, "DLZ/link.csv"), Err(ZoneError::Link)));
        assert!(matches!(
            read(&zone, "DLZ/dirlink/secret.txt"),
            Err(ZoneError::Link)
        ));
        assert_eq!(zone.entry(&name("DLZ/link.csv")).unwrap(), Kind::Link);
        let listed: Vec<String> = zone
            .list(&[])
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(listed, ["DLZ/real.csv"]);
        assert!(matches!(zone.list(&["DLZ", "dirlink"]), Ok(v) if v.is_empty()));
        let files: Vec<String> = zone
            .files_in(&name("DLZ"))
            .unwrap()
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(files, ["real.csv"]);
        // Writing through a linked folder is refused; the target is untouched.
        let up = zone.begin_upload().unwrap();
        assert!(matches!(
            zone.commit(up, &name("DLZ/dirlink/new.csv"), true),
            Err(ZoneError::Link)
        ));
        assert!(!d.path().join("new.csv").exists());
        // Deleting a link through the API is "not found"; the target stays.
        assert!(matches!(
            zone.delete(&name("DLZ/link.csv")),
            Err(ZoneError::NotFound)
        ));
        assert!(secret.exists());
        // A FIFO does not block the reader.
        let fifo = container.join("DLZ/fifo.csv");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            read(&zone, "DLZ/fifo.csv"),
            Err(ZoneError::NotAFile { folder: false })
        ));
    }

    #[test]
    fn blocks_assemble_in_the_order_given() {
        use std::io::Write;
        let (_d, zone) = zone();
        let blob = name("big.csv");
        for (id, data) in [("01", "one,"), ("02", "two,"), ("03", "three")] {
            let mut up = zone.begin_upload().unwrap();
            up.file.write_all(data.as_bytes()).unwrap();
            zone.stage_block(up, &blob, id).unwrap();
        }
        assert_eq!(zone.blocks(&blob).unwrap().len(), 3);
        let order = ["03".to_owned(), "01".to_owned()];
        let up = zone.assemble(&blob, &order).unwrap();
        zone.commit(up, &blob, true).unwrap();
        zone.drop_blocks(&blob).unwrap();
        assert_eq!(read(&zone, "big.csv").unwrap(), "threeone,");
        assert!(zone.blocks(&blob).unwrap().is_empty());
        assert!(matches!(
            zone.assemble(&blob, &["09".to_owned()]),
            Err(ZoneError::NotFound)
        ));
        assert_eq!(zone.usage().unwrap().files, 1);
    }

    #[test]
    fn expiry_removes_old_files_and_staging() {
        let (d, zone) = zone();
        put(&zone, "DLZ/a/old.csv", b"x");
        let up = zone.begin_upload().unwrap();
        std::mem::forget(up); // an upload whose process died
        let week = Duration::from_secs(7 * 24 * 3600);
        let now = SystemTime::now();
        assert_eq!(
            expire_files(d.path(), now, week).unwrap(),
            Expired::default()
        );
        assert_eq!(zone.usage().unwrap().files, 2);
        let later = now + week + Duration::from_secs(60);
        let got = expire_files(d.path(), later, week).unwrap();
        assert_eq!(
            got,
            Expired {
                files: 1,
                staged: 1
            }
        );
        assert_eq!(zone.usage().unwrap(), Usage::default());
        assert!(!zone.container_path().join("DLZ").exists());
        assert!(zone.container_path().exists(), "the container stays");
        // Folders that are not zones are left alone.
        std::fs::create_dir_all(d.path().join("DLZ")).unwrap();
        std::fs::write(d.path().join("DLZ/legacy.csv"), "x").unwrap();
        expire_files(d.path(), later, week).unwrap();
        assert!(d.path().join("DLZ/legacy.csv").exists());
    }
}
