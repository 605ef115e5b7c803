//! Moving a tenant to another pool (typically shared → dedicated): at once, or in weighted steps with
//! a pause and an error-rate gate between them, rolling back by itself when the gate trips.
//!
//! Each step is an ordinary change through the control plane: written to the config file (as the
//! tenant's `canary`, then its new `pool` and `previous_pool`), audited, swapped in. A restart in the
//! middle comes back at the last step applied, with no runner: the state shows as `paused`, and the
//! operator promotes again or rolls back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

use super::audit::Actor;
use super::edit::TenantEdit;
use super::{ControlPlane, Outcome, Refusal};
use crate::config::model::CanaryConfig;
use crate::tenant::TenantStatus;
use crate::upstream::health::probe_now;

pub const DEFAULT_PAUSE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
pub const DEFAULT_MIN_REQUESTS: u64 = 1;

/// What an operator asked for.
#[derive(Debug, Clone)]
pub struct PromotionRequest {
    pub pool: String,
    /// Percent of the tenant's traffic on the new pool at each step; empty means at once.
    pub steps: Vec<u8>,
    pub pause: Duration,
    /// The gate trips when more than this share of the canary requests during a pause fail (5xx).
    pub max_error_rate: f64,
    /// Fewer canary requests than this during a pause are no evidence either way: the gate passes.
    pub min_requests: u64,
}

/// Steps must rise strictly from 1 to 100 and end at 100: a promotion ends on the new pool.
pub fn check_steps(steps: &[u8]) -> Result<(), String> {
    if steps.is_empty() {
        return Ok(());
    }
    if steps.iter().any(|&s| s == 0 || s > 100) {
        return Err("steps are percentages from 1 to 100".into());
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("steps must rise: for example [10, 50, 100]".into());
    }
    if steps.last() != Some(&100) {
        return Err(
            "the last step must be 100: a promotion ends with all traffic on the new pool".into(),
        );
    }
    Ok(())
}

/// The verdict on one pause of canary traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    Pass,
    Trip { requests: u64, failures: u64 },
}

pub fn gate(requests: u64, failures: u64, max_error_rate: f64, min_requests: u64) -> Gate {
    if requests < min_requests.max(1) {
        return Gate::Pass;
    }
    // Precision loss is irrelevant at these magnitudes.
    if failures as f64 / requests as f64 > max_error_rate {
        Gate::Trip { requests, failures }
    } else {
        Gate::Pass
    }
}

/// Where a promotion is.
#[derive(Debug, Clone, PartialEq)]
pub enum PromotionState {
    Running { step: usize, percent: u8 },
    Completed,
    RolledBack { reason: String },
    Stopped { reason: String },
}

/// One promotion of one tenant: its plan, where it is, and whether it has been told to stop.
#[derive(Debug)]
pub struct PromotionRun {
    pub from: String,
    pub to: String,
    pub steps: Vec<u8>,
    cancelled: AtomicBool,
    state: Mutex<PromotionState>,
}

impl PromotionRun {
    fn new(from: String, to: String, steps: Vec<u8>) -> Self {
        PromotionRun {
            from,
            to,
            steps,
            cancelled: AtomicBool::new(false),
            state: Mutex::new(PromotionState::Running {
                step: 0,
                percent: 0,
            }),
        }
    }

    pub fn state(&self) -> PromotionState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Moves the run on, unless it has already ended (a rollback's verdict is final).
    fn advance(&self, state: PromotionState) {
        let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*current, PromotionState::Running { .. }) {
            *current = state;
        }
    }

    fn end(&self, state: PromotionState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state(), PromotionState::Running { .. })
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub fn to_json(&self) -> Value {
        let base = json!({ "from": self.from, "to": self.to, "steps": self.steps });
        let state = match self.state() {
            PromotionState::Running { step, percent } => {
                json!({ "state": "running", "step": step, "of": self.steps.len(), "percent": percent })
            }
            PromotionState::Completed => json!({ "state": "completed" }),
            PromotionState::RolledBack { reason } => {
                json!({ "state": "rolled_back", "reason": reason })
            }
            PromotionState::Stopped { reason } => json!({ "state": "stopped", "reason": reason }),
        };
        merge(base, state)
    }
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// A change refused only for a moment (an operator's save not loaded yet): worth trying again.
fn transient(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::Diverged | Refusal::Read { .. } | Refusal::Persist(_)
    )
}

/// How often, and how far apart, a promotion's own change is retried after a transient refusal.
const RETRIES: u32 = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(250);

impl ControlPlane {
    /// Promotes a tenant to `request.pool`: checks first (tenant exists and is active, the pool
    /// exists, is not the current one, and every upstream of it passes a health check now), then
    /// cuts over at once, or applies the first step and leaves the rest to a runner.
    pub async fn promote(
        self: &Arc<Self>,
        actor: Actor,
        id: &str,
        request: PromotionRequest,
    ) -> Result<Outcome, Refusal> {
        let refused = |refusal: Refusal| {
            self.record_refusal(&actor, "tenant.promote", Some(id), &refusal);
            Err(refusal)
        };
        if let Err(why) = check_steps(&request.steps) {
            return refused(Refusal::BadRequest(why));
        }
        if !(0.0..=1.0).contains(&request.max_error_rate) {
            return refused(Refusal::BadRequest(
                "max_error_rate is a fraction from 0 to 1".into(),
            ));
        }
        let applied = self.applied();
        let Some(tenant) = applied.config.routing.tenant(id) else {
            return refused(Refusal::UnknownTenant(id.to_owned()));
        };
        if let Err(refusal) = promotable(tenant.status, &tenant.pool, &request.pool, id) {
            return refused(refusal);
        }
        let run = Arc::new(PromotionRun::new(
            tenant.pool.clone(),
            request.pool.clone(),
            request.steps.clone(),
        ));
        // Registered before anything is changed, and only if no other promotion of the tenant runs:
        // a rollback can always find (and stop) what it has to undo.
        if !self.start_promotion(id, Arc::clone(&run)) {
            return refused(Refusal::Conflict(format!(
                "tenant {id:?} is already being promoted"
            )));
        }
        if let Err(refusal) = self.pool_passes_now(&request.pool).await {
            run.end(PromotionState::Stopped {
                reason: refusal.to_string(),
            });
            return refused(refusal);
        }
        let first = request.steps.first().copied().unwrap_or(100);
        let outcome = match self.step(&actor, id, &run, first, None).await {
            Ok(outcome) => outcome,
            Err(refusal) => {
                run.advance(PromotionState::Stopped {
                    reason: refusal.to_string(),
                });
                return Err(refusal);
            }
        };
        run.advance(match first {
            100 => PromotionState::Completed,
            percent => PromotionState::Running { step: 1, percent },
        });
        if first < 100 && run.is_running() {
            tokio::spawn(Arc::clone(self).run_steps(id.to_owned(), run, request));
        }
        Ok(outcome)
    }

    /// Moves a tenant back: ends a promotion in progress (the canary traffic returns to the old
    /// pool), or moves a promoted tenant back to its `previous_pool`.
    pub async fn rollback(self: &Arc<Self>, actor: Actor, id: &str) -> Result<Outcome, Refusal> {
        let reason = format!("rolled back by {actor}");
        let run = self.promotion(id);
        let outcome = self
            .edit_tenant(&actor, "tenant.rollback", id, |t, _| {
                // Under the writer lock: a step of the promotion cannot slip in between.
                if let Some(run) = run.as_ref().filter(|r| r.is_running()) {
                    run.cancel();
                }
                if t.canary.is_some() {
                    Ok(vec![TenantEdit::Canary(None)])
                } else if let Some(previous) = &t.previous_pool {
                    Ok(vec![TenantEdit::Pool(previous.clone()), TenantEdit::PreviousPool(None)])
                } else if run.as_ref().is_some_and(|r| r.is_cancelled()) {
                    // A promotion stopped before its first step changed anything.
                    Ok(Vec::new())
                } else {
                    Err(Refusal::Conflict(format!(
                        "tenant {id:?} has nothing to roll back (no promotion in progress, no previous_pool)"
                    )))
                }
            })
            .await;
        if let (Some(run), Ok(_)) = (&run, &outcome) {
            run.end(PromotionState::RolledBack { reason });
        }
        outcome
    }

    /// Suspends or re-activates a tenant; asking for the state it is in changes nothing.
    pub async fn set_status(
        &self,
        actor: Actor,
        id: &str,
        status: TenantStatus,
    ) -> Result<Outcome, Refusal> {
        let action = match status {
            TenantStatus::Active => "tenant.activate",
            TenantStatus::Suspended => "tenant.suspend",
        };
        self.edit_tenant(&actor, action, id, |t, _| {
            Ok(if t.status == status {
                Vec::new()
            } else {
                vec![TenantEdit::Status(status)]
            })
        })
        .await
    }

    /// Every upstream of the pool must pass a health check now: a promotion moves a tenant's traffic
    /// onto it, so "it was healthy a while ago" is not enough.
    async fn pool_passes_now(&self, name: &str) -> Result<(), Refusal> {
        let table = self.table().load();
        let pool = table
            .pool_by_name(name)
            .ok_or_else(|| Refusal::UnknownPool(name.to_owned()))?;
        let mut failures = Vec::new();
        for upstream in pool.upstreams() {
            if let Err(e) = probe_now(pool, upstream).await {
                failures.push(format!("{}: {e}", upstream.label));
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Refusal::Unhealthy {
                pool: name.to_owned(),
                failures: failures.join("; "),
            }),
        }
    }

    /// Applies one step: a canary share, or (at 100) the move itself. `after` is the canary the
    /// previous step set; if the tenant's canary is no longer that (an operator changed it), the
    /// promotion stops rather than overwrite them.
    async fn step(
        &self,
        actor: &Actor,
        id: &str,
        run: &PromotionRun,
        percent: u8,
        after: Option<u8>,
    ) -> Result<Outcome, Refusal> {
        let edits = match percent {
            100 => vec![
                TenantEdit::Pool(run.to.clone()),
                TenantEdit::PreviousPool(Some(run.from.clone())),
                TenantEdit::Canary(None),
            ],
            percent => vec![TenantEdit::Canary(Some(CanaryConfig {
                pool: run.to.clone(),
                percent,
            }))],
        };
        self.edit_tenant(actor, "tenant.promote", id, |t, _| {
            // Checked under the writer lock, so a rollback and a step never interleave.
            if run.is_cancelled() {
                return Err(Refusal::Conflict("the promotion was rolled back".into()));
            }
            promotable(t.status, &t.pool, &run.to, id)?;
            if t.pool != run.from {
                return Err(Refusal::Conflict(format!(
                    "tenant moved to {:?} during the promotion",
                    t.pool
                )));
            }
            let expected = after.map(|percent| CanaryConfig {
                pool: run.to.clone(),
                percent,
            });
            let resumes = after.is_none() && t.canary.as_ref().is_some_and(|c| c.pool == run.to);
            if t.canary != expected && !resumes {
                return Err(Refusal::Conflict(
                    "the tenant's canary was changed outside the promotion".into(),
                ));
            }
            Ok(edits)
        })
        .await
    }

    /// Retries a promotion's own change while it is refused for a moment only.
    async fn with_retries<F, Fut>(&self, mut change: F) -> Result<Outcome, Refusal>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, Refusal>>,
    {
        let mut tries = 0;
        loop {
            match change().await {
                Err(refusal) if transient(&refusal) && tries < RETRIES => {
                    tries += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    // An operator's save not loaded yet: load it (it may be the reason).
                    let _ = self.reload(Actor::Promotion).await;
                }
                done => return done,
            }
        }
    }

    /// The steps after the first: pause, judge the canary traffic, go on or roll back.
    async fn run_steps(
        self: Arc<Self>,
        id: String,
        run: Arc<PromotionRun>,
        request: PromotionRequest,
    ) {
        let mut previous = request.steps.first().copied();
        for (index, &percent) in request.steps.iter().enumerate().skip(1) {
            let before = self.canary_snapshot(&id);
            if !pause(&run, request.pause).await {
                return;
            }
            let (requests, failures) = delta(before, self.canary_snapshot(&id));
            if let Gate::Trip { requests, failures } = gate(
                requests,
                failures,
                request.max_error_rate,
                request.min_requests,
            ) {
                let reason = format!(
                    "error-rate gate tripped: {failures} of {requests} canary requests failed, over {:.1}%",
                    request.max_error_rate * 100.0
                );
                self.auto_rollback(&id, &run, reason).await;
                return;
            }
            let stepped = self
                .with_retries(|| self.step(&Actor::Promotion, &id, &run, percent, previous))
                .await;
            if let Err(e) = stepped {
                if !run.is_cancelled() {
                    tracing::error!(tenant = %id, error = %e, "promotion stopped");
                    run.advance(PromotionState::Stopped {
                        reason: e.to_string(),
                    });
                }
                return;
            }
            previous = Some(percent);
            run.advance(match percent {
                100 => PromotionState::Completed,
                percent => PromotionState::Running {
                    step: index + 1,
                    percent,
                },
            });
        }
        self.record_event(
            &Actor::Promotion,
            "tenant.promotion_completed",
            &id,
            json!(run.to),
            None,
        );
    }

    async fn auto_rollback(&self, id: &str, run: &PromotionRun, reason: String) {
        let undone = self
            .with_retries(|| {
                self.edit_tenant(&Actor::Promotion, "tenant.rollback", id, |t, _| {
                    if run.is_cancelled() {
                        return Err(Refusal::Conflict("the promotion was rolled back".into()));
                    }
                    Ok(if t.canary.is_some() {
                        vec![TenantEdit::Canary(None)]
                    } else {
                        Vec::new()
                    })
                })
            })
            .await;
        match undone {
            Ok(_) => {
                self.record_event(
                    &Actor::Promotion,
                    "tenant.promotion_rolled_back",
                    id,
                    json!(run.from),
                    Some(reason.clone()),
                );
                run.advance(PromotionState::RolledBack { reason });
            }
            Err(e) if !run.is_cancelled() => {
                // The canary still takes its share: say so loudly, and where.
                tracing::error!(tenant = %id, error = %e, %reason, "automatic rollback failed; the canary is still in place");
                run.advance(PromotionState::Stopped {
                    reason: format!(
                        "{reason}; the automatic rollback failed ({e}): roll back by hand"
                    ),
                });
            }
            Err(_) => {}
        }
    }

    fn canary_snapshot(&self, id: &str) -> (u64, u64) {
        let table = self.table().load();
        table
            .tenant_by_id(id)
            .and_then(|t| t.canary.as_ref())
            .map_or((0, 0), |c| c.stats.snapshot())
    }
}

fn promotable(status: TenantStatus, current: &str, target: &str, id: &str) -> Result<(), Refusal> {
    if status != TenantStatus::Active {
        return Err(Refusal::Conflict(format!(
            "tenant {id:?} is suspended; activate it first"
        )));
    }
    if current == target {
        return Err(Refusal::Conflict(format!(
            "tenant {id:?} is already on pool {target:?}"
        )));
    }
    Ok(())
}

fn delta(before: (u64, u64), after: (u64, u64)) -> (u64, u64) {
    (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    )
}

/// Waits `duration`, or less if the promotion is cancelled; true when it was not.
async fn pause(run: &PromotionRun, duration: Duration) -> bool {
    let slice = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < duration {
        if run.is_cancelled() {
            return false;
        }
        let step = slice.min(duration - waited);
        tokio::time::sleep(step).await;
        waited += step;
    }
    !run.is_cancelled()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_rise_to_100() {
        assert!(check_steps(&[]).is_ok());
        assert!(check_steps(&[100]).is_ok());
        assert!(check_steps(&[10, 50, 100]).is_ok());
        assert!(check_steps(&[10, 50])
            .unwrap_err()
            .contains("last step must be 100"));
        assert!(check_steps(&[50, 10, 100])
            .unwrap_err()
            .contains("must rise"));
        assert!(check_steps(&[10, 10, 100])
            .unwrap_err()
            .contains("must rise"));
        assert!(check_steps(&[0, 100]).unwrap_err().contains("1 to 100"));
        assert!(check_steps(&[101]).unwrap_err().contains("1 to 100"));
    }

    #[test]
    fn the_gate_trips_only_on_enough_failing_traffic() {
        assert_eq!(gate(0, 0, 0.05, 1), Gate::Pass);
        assert_eq!(gate(100, 5, 0.05, 1), Gate::Pass);
        assert_eq!(
            gate(100, 6, 0.05, 1),
            Gate::Trip {
                requests: 100,
                failures: 6
            }
        );
        assert_eq!(gate(3, 3, 0.05, 10), Gate::Pass);
        assert_eq!(
            gate(10, 3, 0.05, 10),
            Gate::Trip {
                requests: 10,
                failures: 3
            }
        );
        assert_eq!(gate(10, 0, 0.0, 1), Gate::Pass);
    }

    #[test]
    fn runs_report_where_they_are() {
        let run = PromotionRun::new("shared".into(), "dedicated".into(), vec![10, 100]);
        run.advance(PromotionState::Running {
            step: 1,
            percent: 10,
        });
        let v = run.to_json();
        assert_eq!(v["state"], "running");
        assert_eq!(v["of"], 2);
        assert_eq!(v["to"], "dedicated");
        run.cancel();
        assert!(run.is_cancelled());
        // A rollback's verdict is final: a late step cannot make the run look alive again.
        run.end(PromotionState::RolledBack {
            reason: "by hand".into(),
        });
        run.advance(PromotionState::Running {
            step: 2,
            percent: 50,
        });
        assert_eq!(
            run.state(),
            PromotionState::RolledBack {
                reason: "by hand".into()
            }
        );
    }
}
