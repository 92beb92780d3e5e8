//! The foreground supervisor: runs one workload to its end, forwarding
//! signals, enforcing the timeout (SIGTERM, a grace period, then SIGKILL of
//! the whole tree), and turning what happened into a [`RunResult`].

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use warden_core::{Attempt, ExitReason, RunResult, Timestamp, Usage};

use crate::{Backend, BackendError, Exit, Gate, LaunchRequest, Workload};

/// Signals to forward to the task.
#[derive(Debug)]
pub struct Interrupts {
    rx: mpsc::UnboundedReceiver<i32>,
    // Keeps the channel open when no listener is installed.
    _tx: mpsc::UnboundedSender<i32>,
}

/// The signals `warden run` passes on to its task.
pub const FORWARDED: [i32; 6] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

impl Interrupts {
    /// Catches [`FORWARDED`] signals sent to this process.
    pub fn from_os() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        for sig in FORWARDED {
            let mut stream = signal(SignalKind::from_raw(sig))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Interrupts { rx, _tx: tx })
    }
}

/// Launches `req` on `backend` and supervises it to its end. Never fails:
/// every failure becomes a result with its reason and exit code.
pub async fn supervise<B: Backend>(
    backend: &B,
    req: &LaunchRequest,
    gate: impl Gate,
    interrupts: &mut Interrupts,
    grace: Duration,
) -> RunResult {
    let started_at = Timestamp::now();
    let mut result = RunResult {
        task_id: req.id.clone(),
        tenant: req.spec.tenant.clone(),
        exit_code: 0,
        reason: ExitReason::Error,
        tier: Some(backend.tier()),
        tier_history: Vec::new(),
        limits: Some(req.limits),
        usage: Usage::default(),
        started_at,
        finished_at: started_at,
        error: None,
    };
    let outcome = async {
        let mut workload = backend.launch(req, gate).await?;
        let limits = workload.limits();
        let timed_out = run(&mut workload, req.limits.timeout.map(|t| t.get()), grace, interrupts).await;
        let finished = workload.finish().await?;
        Ok::<_, BackendError>((finished, timed_out, limits))
    }
    .await;
    let reason = match outcome {
        Ok((finished, timed_out, limits)) => {
            result.usage = finished.usage;
            result.limits = Some(limits);
            match (timed_out, finished.exit) {
                (true, _) => ExitReason::Timeout,
                (false, Exit::Exited(code)) => ExitReason::Exited { code },
                (false, Exit::Signaled(signal)) => ExitReason::Signaled { signal },
                (false, Exit::OomKilled) => ExitReason::OomKilled,
                (false, Exit::Killed) => ExitReason::Signaled { signal: libc::SIGKILL },
            }
        }
        Err(e) => {
            let reason = match &e {
                BackendError::NotFound { .. } => ExitReason::NotFound,
                BackendError::NotExecutable { .. } => ExitReason::NotExecutable,
                _ => ExitReason::Error,
            };
            result.error = Some(e.to_string());
            reason
        }
    };
    result.finished_at = Timestamp::now();
    result.reason = reason;
    result.exit_code = reason.exit_code();
    result.tier_history.push(Attempt {
        tier: backend.tier(),
        runtime: Some(backend.runtime().to_owned()),
        started_at,
        ended_at: result.finished_at,
        outcome: reason.name().to_owned(),
    });
    result
}

/// Waits for the workload, forwarding signals and enforcing the timeout.
/// Returns whether the timeout fired.
async fn run<W: Workload>(w: &mut W, timeout: Option<Duration>, grace: Duration, interrupts: &mut Interrupts) -> bool {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep_until = |d: Option<tokio::time::Instant>| async move {
        match d {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    loop {
        tokio::select! {
            r = w.wait() => {
                if let Err(e) = r {
                    tracing::warn!(task = %w.id(), error = %e, "waiting failed; killing the task");
                    let _ = w.kill().await;
                }
                return false;
            }
            () = sleep_until(deadline) => {
                tracing::info!(task = %w.id(), "timeout: stopping the task");
                stop(w, grace).await;
                return true;
            }
            Some(sig) = interrupts.rx.recv() => {
                tracing::debug!(task = %w.id(), sig, "forwarding signal");
                let _ = w.signal(sig).await;
            }
        }
    }
}

/// SIGTERM, then SIGKILL of the whole tree after `grace`.
pub async fn stop<W: Workload>(w: &mut W, grace: Duration) {
    let _ = w.signal(libc::SIGTERM).await;
    if tokio::time::timeout(grace, w.wait()).await.is_err() {
        let _ = w.kill().await;
        let _ = w.wait().await;
    }
}
