//! Reading and writing cgroupfs files, with errors that name the file.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use warden_core::Pressure;

use super::{Error, Result};

pub fn write(path: &Path, value: &str) -> Result<()> {
    // cgroupfs wants the value in one write(2); truncating is harmless there
    // and lets the same code write a plain temporary directory in tests.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| Error::Write { path: path.to_owned(), value: value.to_owned(), source })
}

pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// Reads a file if it exists; `None` when the kernel does not have it.
pub fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path: path.to_owned(), source }),
    }
}

pub fn read_u64(path: &Path) -> Result<u64> {
    let s = read(path)?;
    parse_u64(path, s.trim())
}

pub fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    s.parse().map_err(|_| Error::Read {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("`{s}` is not a number")),
    })
}

/// The value of `key` in a flat-keyed file such as `cpu.stat` (0 if absent).
pub fn kv(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

pub fn read_pids(path: &Path) -> Result<Vec<u32>> {
    let s = read(path)?;
    Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Parses a PSI file (`some avg10=… total=…` / `full …`).
pub fn parse_pressure(text: &str) -> Pressure {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let kind = parts.next();
        let mut avg10 = 0.0;
        let mut total = 0;
        for part in parts {
            match part.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse().unwrap_or(0.0),
                Some(("total", v)) => total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => (p.some_avg10, p.some_total_us) = (avg10, total),
            Some("full") => (p.full_avg10, p.full_total_us) = (avg10, total),
            _ => {}
        }
    }
    p
}

pub fn read_pressure(path: &Path) -> Result<Option<Pressure>> {
    Ok(read_opt(path)?.map(|t| parse_pressure(&t)))
}

pub fn mkdir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Create { path: path.to_owned(), source }),
    }
}

/// Creates a fresh cgroup directory; it must not exist already (two tasks
/// must never share one).
pub fn mkdir_new(path: &Path) -> Result<()> {
    std::fs::create_dir(path).map_err(|source| Error::Create { path: path.to_owned(), source })
}

/// rmdir, retrying while exiting tasks still hold the cgroup (EBUSY).
/// A directory that is already gone is fine.
pub fn rmdir_retry(path: &Path) -> Result<()> {
    let mut delay = Duration::from_micros(200);
    for _ in 0..12 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                // Plain directories (tests) hold files; cgroupfs never does.
                return std::fs::remove_dir_all(path).map_err(|source| Error::Remove { path: path.to_owned(), source });
            }
            Err(source) => {
                return Err(Error::Remove { path: path.to_owned(), source });
            }
        }
    }
    std::fs::remove_dir(path).map_err(|source| Error::Remove { path: path.to_owned(), source })
}

/// Polls `check` until it is true or `limit` passes.
pub fn wait_until(path: &Path, state: &'static str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let limit = Duration::from_secs(5);
    let start = std::time::Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        if check()? {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout { path: path.to_owned(), state, waited: limit });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}
