//! The live policy set: an immutable snapshot behind an atomic swap,
//! reloaded when its directories change, with a history of versions to roll
//! back to and a record of every activation, refusal and rollback.
//!
//! A reload reads every file, builds a complete snapshot and runs the set's
//! own tests; only then is it swapped in. A broken change is refused with
//! its error and the running version keeps serving: no decision ever sees a
//! half-loaded set. The directories are watched, not the files, so that
//! editors' rename-into-place and Kubernetes ConfigMaps' `..data` symlink
//! swaps are seen; events are debounced, and a change that leaves the
//! content hash as it was (a swap file, a touch) is not a new version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::error::Error;
use crate::snapshot::{PolicySnapshot, Sources};

/// What happened to the live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEvent {
    Activated { version: String, previous: Option<String> },
    Unchanged { version: String },
    Refused { error: String, serving: String },
    RolledBack { version: String, previous: String },
}

/// A version that was live once, with the files to rebuild it.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub version: String,
    pub activated_at: SystemTime,
    sources: Arc<Sources>,
}

/// The live policy set of a node.
pub struct PolicyStore {
    current: ArcSwap<PolicySnapshot>,
    history: Mutex<Vec<VersionRecord>>,
    events: Mutex<Vec<(SystemTime, PolicyEvent)>>,
    policies: PathBuf,
    rules: PathBuf,
    /// Serializes reloads and rollbacks (decisions never wait for it).
    writer: Mutex<()>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").field("version", &self.current().version).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (each critical section is a push or a read): keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PolicyStore {
    /// Loads the set in `policies`/`rules`; it must be valid and pass its tests.
    pub fn open(policies: &Path, rules: &Path) -> Result<Self, Error> {
        let sources = Sources::from_dirs(policies, rules)?;
        let snap = PolicySnapshot::build(sources.clone())?;
        let version = snap.version.clone();
        tracing::info!(event = "policy_activated", %version, "policy set active");
        Ok(PolicyStore {
            history: Mutex::new(vec![VersionRecord {
                version: version.clone(),
                activated_at: SystemTime::now(),
                sources: Arc::new(sources),
            }]),
            events: Mutex::new(vec![(SystemTime::now(), PolicyEvent::Activated { version, previous: None })]),
            current: ArcSwap::from_pointee(snap),
            policies: policies.to_owned(),
            rules: rules.to_owned(),
            writer: Mutex::new(()),
        })
    }

    /// The snapshot to decide with; it stays valid however the store changes.
    pub fn current(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    fn record(&self, event: PolicyEvent) -> PolicyEvent {
        match &event {
            PolicyEvent::Activated { version, previous } => {
                tracing::info!(event = "policy_activated", %version, previous = previous.as_deref().unwrap_or("-"), "policy set active")
            }
            PolicyEvent::Refused { error, serving } => {
                tracing::warn!(event = "policy_refused", %serving, %error, "policy change refused; the running set keeps serving")
            }
            PolicyEvent::RolledBack { version, previous } => {
                tracing::info!(event = "policy_rolled_back", %version, %previous, "policy set rolled back")
            }
            PolicyEvent::Unchanged { .. } => {}
        }
        lock(&self.events).push((SystemTime::now(), event.clone()));
        event
    }

    /// Reads the directories again and activates what is there if it is a
    /// new, valid version.
    pub fn reload(&self) -> PolicyEvent {
        let _w = lock(&self.writer);
        let serving = self.current().version.clone();
        let built = Sources::from_dirs(&self.policies, &self.rules).and_then(|s| {
            if s.version() == serving {
                return Ok(None);
            }
            let snap = PolicySnapshot::build(s.clone())?;
            Ok(Some((snap, s)))
        });
        match built {
            Ok(None) => self.record(PolicyEvent::Unchanged { version: serving }),
            Ok(Some((snap, sources))) => {
                let version = snap.version.clone();
                self.current.store(Arc::new(snap));
                lock(&self.history).push(VersionRecord {
                    version: version.clone(),
                    activated_at: SystemTime::now(),
                    sources: Arc::new(sources),
                });
                self.record(PolicyEvent::Activated { version, previous: Some(serving) })
            }
            Err(e) => self.record(PolicyEvent::Refused { error: e.to_string(), serving }),
        }
    }

    /// Makes an earlier version live again (it is rebuilt and re-validated).
    pub fn rollback(&self, version: &str) -> Result<PolicyEvent, Error> {
        let _w = lock(&self.writer);
        let record = lock(&self.history).iter().rev().find(|r| r.version == version).cloned();
        let Some(record) = record else {
            return Err(Error::Invalid(format!("no version `{version}` in this store's history")));
        };
        let snap = PolicySnapshot::build((*record.sources).clone())?;
        let previous = self.current().version.clone();
        self.current.store(Arc::new(snap));
        lock(&self.history).push(VersionRecord { activated_at: SystemTime::now(), ..record });
        Ok(self.record(PolicyEvent::RolledBack { version: version.to_owned(), previous }))
    }

    /// Versions in the order they went live (a rollback appears again).
    pub fn versions(&self) -> Vec<(String, SystemTime)> {
        lock(&self.history).iter().map(|r| (r.version.clone(), r.activated_at)).collect()
    }

    /// Every activation, refusal and rollback so far.
    pub fn events(&self) -> Vec<(SystemTime, PolicyEvent)> {
        lock(&self.events).clone()
    }
}

/// Watches a store's directories and reloads on change, until dropped.
pub struct PolicyWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyWatcher")
    }
}

/// Starts watching; `on_event` sees every outcome of a reload.
pub fn watch(
    store: Arc<PolicyStore>,
    debounce: Duration,
    on_event: impl Fn(&PolicyEvent) + Send + 'static,
) -> Result<PolicyWatcher, Error> {
    let dirs = [store.policies.clone(), store.rules.clone()];
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) if !events.is_empty() => on_event(&store.reload()),
        Ok(_) => {}
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "policy watch error");
            }
        }
    };
    let mut debouncer =
        new_debouncer(debounce, None, handler).map_err(|e| Error::Invalid(format!("cannot watch policies: {e}")))?;
    for dir in &dirs {
        debouncer
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|e| Error::Invalid(format!("cannot watch {}: {e}", dir.display())))?;
    }
    Ok(PolicyWatcher { _debouncer: debouncer })
}
