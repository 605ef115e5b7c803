//! Moving a tenant to another pool (typically shared → dedicated): at once, or in weighted steps with
//! a pause and an error-rate gate between them, rolling back by itself when the gate trips.
//!
//! Each step is an ordinary change through the control plane: written to the config file (as the
//! tenant's `canary`, then its new `pool` and `previous_pool`), audited, swapped in. A restart in the
//! middle comes back at the last step applied, with no runner: the state shows as `paused`, and the
//! operator promotes again or rolls back.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

use super::audit::Actor;
use super::edit::TenantEdit;
use super::source::Beside;
use super::{ControlPlane, Outcome, Refusal};
use crate::config::model::CanaryConfig;
use crate::store::keys;
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
    /// With a store: the revision of the promotion's record this run last wrote (its next step is
    /// written only if nobody else wrote the record since: a rollback, another instance).
    record_revision: AtomicI64,
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
            record_revision: AtomicI64::new(0),
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
        Refusal::Diverged
            | Refusal::Read { .. }
            | Refusal::Persist(_)
            | Refusal::StoreUnavailable(_)
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
        if let Some(record) = self.fleet_record(id) {
            if record.state == RUNNING {
                return refused(Refusal::Conflict(format!(
                    "tenant {id:?} is already being promoted to {:?} (run by instance {})",
                    record.to, record.instance
                )));
            }
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
        let outcome = match self.step(&actor, id, &run, &request, 0, None).await {
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
            tokio::spawn(Arc::clone(self).run_steps(id.to_owned(), run, request, 1));
        }
        Ok(outcome)
    }

    /// Moves a tenant back: ends a promotion in progress (the canary traffic returns to the old
    /// pool), or moves a promoted tenant back to its `previous_pool`.
    pub async fn rollback(self: &Arc<Self>, actor: Actor, id: &str) -> Result<Outcome, Refusal> {
        let reason = format!("rolled back by {actor}");
        let run = self.promotion(id);
        let beside = self.fleet_end(id, ROLLED_BACK, &reason, false);
        let outcome = self
            .edit_tenant_with(&actor, "tenant.rollback", id, &beside, |t, _| {
                // Under the writer lock: a step of the promotion cannot slip in between.
                if let Some(run) = run.as_ref().filter(|r| r.is_running()) {
                    run.cancel();
                }
                if t.canary.is_some() {
                    Ok(vec![TenantEdit::Canary(None)])
                } else if let Some(previous) = &t.previous_pool {
                    Ok(vec![TenantEdit::Pool(previous.clone()), TenantEdit::PreviousPool(None)])
                } else if run.as_ref().is_some_and(|r| r.is_cancelled())
                    || !beside.puts.is_empty()
                {
                    // A promotion stopped before its first step changed anything (here, or on
                    // another instance of the fleet).
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
            TenantStatus::Maintenance => "tenant.maintenance",
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
        request: &PromotionRequest,
        index: usize,
        after: Option<u8>,
    ) -> Result<Outcome, Refusal> {
        let percent = request.steps.get(index).copied().unwrap_or(100);
        let beside = self.fleet_step(id, run, request, index);
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
        let outcome = self
            .edit_tenant_with(actor, "tenant.promote", id, &beside, |t, _| {
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
                let resumes =
                    after.is_none() && t.canary.as_ref().is_some_and(|c| c.pool == run.to);
                if t.canary != expected && !resumes {
                    return Err(Refusal::Conflict(
                        "the tenant's canary was changed outside the promotion".into(),
                    ));
                }
                Ok(edits)
            })
            .await;
        if let Ok(Outcome::Applied { generation, .. }) = &outcome {
            run.record_revision
                .store(i64::try_from(*generation).unwrap_or(0), Ordering::Relaxed);
        }
        outcome
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
        from: usize,
    ) {
        let mut previous = from
            .checked_sub(1)
            .and_then(|i| request.steps.get(i).copied());
        for (index, &percent) in request.steps.iter().enumerate().skip(from) {
            let before = self.canary_counts(&id, &run.to).await;
            if !pause(&run, request.pause).await {
                return;
            }
            let (requests, failures) = delta(&before, &self.canary_counts(&id, &run.to).await);
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
                .with_retries(|| self.step(&Actor::Promotion, &id, &run, &request, index, previous))
                .await;
            if let Err(e) = stepped {
                if !run.is_cancelled() {
                    tracing::error!(tenant = %id, error = %e, "promotion stopped");
                    run.advance(PromotionState::Stopped {
                        reason: e.to_string(),
                    });
                    self.fleet_stopped(&id, &run, &e.to_string()).await;
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
        let beside = self.fleet_end(id, ROLLED_BACK, &reason, true);
        let undone = self
            .with_retries(|| {
                self.edit_tenant_with(&Actor::Promotion, "tenant.rollback", id, &beside, |t, _| {
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
                let why =
                    format!("{reason}; the automatic rollback failed ({e}): roll back by hand");
                run.advance(PromotionState::Stopped {
                    reason: why.clone(),
                });
                self.fleet_stopped(id, run, &why).await;
            }
            Err(_) => {}
        }
    }

    /// The canary's `(requests, failures)` so far: this instance's own counters, or with a store
    /// every instance's, as each publishes them, by instance.
    async fn canary_counts(&self, id: &str, pool: &str) -> Counts {
        let own = || {
            let table = self.table().load();
            let counts = table
                .tenant_by_id(id)
                .and_then(|t| t.canary.as_ref())
                .map_or((0, 0), |c| c.stats.snapshot());
            Counts::from([(String::new(), counts)])
        };
        let Some(store) = self.store() else {
            return own();
        };
        match store
            .store
            .snapshot(&format!("{}{id}/", keys::CANARY), None)
            .await
        {
            Ok(snapshot) => snapshot
                .kvs
                .iter()
                .filter_map(|kv| {
                    let count: CanaryCount = serde_json::from_str(&kv.value).ok()?;
                    let instance = kv.key.rsplit('/').next()?.to_owned();
                    (count.pool == pool).then_some((instance, (count.requests, count.failures)))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(tenant = id, error = %e, "cannot read the fleet's canary counts; judging this instance's alone");
                let mut counts = own();
                if let Some(mine) = counts.remove("") {
                    counts.insert(store.instance().to_owned(), mine);
                }
                counts
            }
        }
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

/// Canary `(requests, failures)` by instance (`""`: this one, without a store).
type Counts = std::collections::BTreeMap<String, (u64, u64)>;

/// What happened between two counts, per instance: an instance that appeared counts from zero, one
/// that restarted (its counters went down) from its restart.
fn delta(before: &Counts, after: &Counts) -> (u64, u64) {
    after.iter().fold((0, 0), |(r, f), (instance, now)| {
        let was = before.get(instance).copied().unwrap_or((0, 0));
        let (dr, df) = match now.0 < was.0 {
            true => *now,
            false => (now.0 - was.0, now.1.saturating_sub(was.1)),
        };
        (r + dr, f + df)
    })
}

/// One instance's canary counts for a tenant, as it publishes them in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CanaryCount {
    pub pool: String,
    pub requests: u64,
    pub failures: u64,
}

const RUNNING: &str = "running";
const COMPLETED: &str = "completed";
const ROLLED_BACK: &str = "rolled_back";
const STOPPED: &str = "stopped";

/// How long, and how often, a stopped promotion's record is written before giving up (etcd
/// may be what stopped it).
const STOP_TRIES: u32 = 60;
const STOP_PAUSE: Duration = Duration::from_millis(500);

/// A stepped promotion as the fleet's store keeps it (`promotions/<tenant>`): what it was asked
/// to do, the step it is at, and the instance running it. Another instance resumes it from here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetRecord {
    pub from: String,
    pub to: String,
    pub steps: Vec<u8>,
    pub pause_ms: u64,
    pub max_error_rate: f64,
    pub min_requests: u64,
    /// Steps applied so far, and the share the last one set.
    pub step: usize,
    pub percent: u8,
    /// `running`, `completed` or `rolled_back`.
    pub state: String,
    pub reason: Option<String>,
    pub instance: String,
    pub updated: String,
}

impl FleetRecord {
    fn request(&self) -> PromotionRequest {
        PromotionRequest {
            pool: self.to.clone(),
            steps: self.steps.clone(),
            pause: Duration::from_millis(self.pause_ms),
            max_error_rate: self.max_error_rate,
            min_requests: self.min_requests,
        }
    }

    /// The view `GET /tenants/{id}` gives of it; `locked_by` is the instance holding its lock.
    pub fn to_json(&self, locked_by: Option<&str>) -> Value {
        let state = match (self.state.as_str(), locked_by) {
            (RUNNING, None) => "paused",
            (state, _) => state,
        };
        let mut view = json!({
            "state": state,
            "from": self.from,
            "to": self.to,
            "steps": self.steps,
            "step": self.step,
            "of": self.steps.len(),
            "percent": self.percent,
            "instance": locked_by.unwrap_or(&self.instance),
            "updated": self.updated,
            "reason": self.reason,
        });
        if state == "paused" {
            view["reason"] = json!(format!(
                "instance {} that ran it stopped; another instance of the fleet takes it over when its lock expires",
                self.instance
            ));
        }
        view
    }
}

impl ControlPlane {
    /// The fleet's record of the tenant's promotion, when the table is in a store and it has one.
    pub fn fleet_record(&self, id: &str) -> Option<FleetRecord> {
        self.fleet_record_at(id).map(|(record, _)| record)
    }

    /// `fleet_record`, with the revision it was last written at.
    fn fleet_record_at(&self, id: &str) -> Option<(FleetRecord, i64)> {
        let entries = self.store()?.entries();
        let kv = entries.promotions.get(id)?;
        let record = serde_json::from_str(&kv.value).ok()?;
        Some((record, kv.mod_revision))
    }

    /// The instance that holds the lock of the tenant's promotion.
    pub fn fleet_lock(&self, id: &str) -> Option<String> {
        let store = self.store()?;
        store.entries().locks.get(id).map(|kv| kv.value.clone())
    }

    /// With a store, what a step writes beside the tenant: the record at its new step, and the
    /// lock (taken by the first step, held by the others, released by the last).
    fn fleet_step(
        &self,
        id: &str,
        run: &PromotionRun,
        request: &PromotionRequest,
        index: usize,
    ) -> Beside {
        let Some(store) = self.store() else {
            return Beside::default();
        };
        let percent = request.steps.get(index).copied().unwrap_or(100);
        let record = FleetRecord {
            from: run.from.clone(),
            to: run.to.clone(),
            steps: request.steps.clone(),
            pause_ms: u64::try_from(request.pause.as_millis()).unwrap_or(u64::MAX),
            max_error_rate: request.max_error_rate,
            min_requests: request.min_requests,
            step: index + 1,
            percent,
            state: if percent == 100 { COMPLETED } else { RUNNING }.to_owned(),
            reason: None,
            instance: store.instance().to_owned(),
            updated: super::now(),
        };
        let record_key = keys::promotion(id);
        let lock = keys::promotion_lock(id);
        let value = serde_json::to_string(&record).unwrap_or_default();
        let mut beside = Beside {
            puts: vec![(record_key.clone(), value, false)],
            ..Beside::default()
        };
        let ours = run.record_revision.load(Ordering::Relaxed);
        match (index, percent) {
            // A promotion at once holds no lock.
            (0, 100) => beside.absent.push(lock),
            (0, _) => {
                beside.absent.push(lock.clone());
                beside.puts.push((lock, store.instance().to_owned(), true));
            }
            (_, 100) => {
                beside.held.push(lock.clone());
                beside.unchanged.push((record_key, ours));
                beside.deletes.push(lock);
            }
            _ => {
                beside.held.push(lock);
                beside.unchanged.push((record_key, ours));
            }
        }
        beside
    }

    /// With a store, what ending a promotion writes beside the tenant: the record's end, and the
    /// lock removed. `ours`: it is this instance's run ending (it must still hold the lock).
    fn fleet_end(&self, id: &str, state: &str, reason: &str, ours: bool) -> Beside {
        let Some(store) = self.store() else {
            return Beside::default();
        };
        let Some((mut record, revision)) = self.fleet_record_at(id) else {
            return Beside::default();
        };
        if record.state != RUNNING {
            return Beside::default();
        }
        record.state = state.to_owned();
        record.reason = Some(reason.to_owned());
        record.instance = store.instance().to_owned();
        record.updated = super::now();
        let lock = keys::promotion_lock(id);
        Beside {
            puts: vec![(
                keys::promotion(id),
                serde_json::to_string(&record).unwrap_or_default(),
                false,
            )],
            deletes: vec![lock.clone()],
            held: if ours { vec![lock] } else { Vec::new() },
            unchanged: vec![(keys::promotion(id), revision)],
            absent: Vec::new(),
        }
    }

    /// After each revision: promotions of the fleet whose runner is gone are taken over by one
    /// instance (the first to take the lock), and runs of this instance that the store says are
    /// over (rolled back elsewhere) stop.
    pub(crate) async fn promotions_follow_store(self: &Arc<Self>) {
        let Some(store) = self.store().cloned() else {
            return;
        };
        let entries = store.entries();
        for (id, kv) in entries.promotions.iter() {
            let Ok(record) = serde_json::from_str::<FleetRecord>(&kv.value) else {
                continue;
            };
            let local = self.promotion(id);
            if record.state != RUNNING {
                if let Some(run) = local.filter(|r| r.is_running()) {
                    run.cancel();
                    run.end(match record.state.as_str() {
                        ROLLED_BACK => PromotionState::RolledBack {
                            reason: record.reason.clone().unwrap_or_default(),
                        },
                        _ => PromotionState::Completed,
                    });
                }
                continue;
            }
            let locked = entries.locks.contains_key(id);
            let ours = local.as_ref().is_some_and(|r| r.is_running());
            if !locked && !ours {
                let plane = Arc::clone(self);
                let id = id.clone();
                let revision = kv.mod_revision;
                tokio::spawn(async move { plane.take_over(id, record, revision).await });
            }
        }
    }

    /// Resumes a promotion whose instance stopped: takes its lock (only if nobody has, and the
    /// record is still the one seen), then runs the steps after the one the record says.
    async fn take_over(self: Arc<Self>, id: String, record: FleetRecord, revision: i64) {
        let Some(store) = self.store().cloned() else {
            return;
        };
        let lease = store.lease.load(Ordering::Relaxed);
        if lease == 0 {
            return;
        }
        let run = Arc::new(PromotionRun::new(
            record.from.clone(),
            record.to.clone(),
            record.steps.clone(),
        ));
        run.advance(PromotionState::Running {
            step: record.step,
            percent: record.percent,
        });
        if !self.start_promotion(&id, Arc::clone(&run)) {
            return;
        }
        let mut taken = record.clone();
        taken.instance = store.instance().to_owned();
        taken.updated = super::now();
        let (record_key, lock) = (keys::promotion(&id), keys::promotion_lock(&id));
        let txn = etcd_client::Txn::new()
            .when(vec![
                store.store.unchanged(&lock, 0),
                store.store.unchanged(&record_key, revision),
            ])
            .and_then(vec![
                store.store.put_leased(&lock, store.instance(), lease),
                store.store.put(
                    &record_key,
                    serde_json::to_string(&taken).unwrap_or_default(),
                ),
            ]);
        match store.store.commit(txn).await {
            Ok(Some(written)) => {
                run.record_revision.store(written, Ordering::Relaxed);
                tracing::info!(tenant = %id, step = record.step, of = record.steps.len(), from_instance = %record.instance, "took over a stepped promotion whose instance stopped");
                self.record_event(
                    &Actor::Promotion,
                    "tenant.promotion_resumed",
                    &id,
                    json!({ "step": record.step, "percent": record.percent, "from_instance": record.instance }),
                    None,
                );
                let request = record.request();
                Arc::clone(&self)
                    .run_steps(id, run, request, record.step)
                    .await;
            }
            Ok(None) => run.end(PromotionState::Stopped {
                reason: "another instance took the promotion over".into(),
            }),
            Err(e) => run.end(PromotionState::Stopped {
                reason: format!("could not take the promotion over: {e}"),
            }),
        }
    }

    /// With a store, a promotion this instance stopped on an error is recorded as stopped, with
    /// why, and its lock is let go: otherwise the record would say it runs while nothing does,
    /// and a new promotion of the tenant would be refused. Tried while etcd is away (it may be why
    /// the promotion stopped); only this instance's own lock is let go.
    async fn fleet_stopped(&self, id: &str, run: &PromotionRun, reason: &str) {
        let Some(store) = self.store().cloned() else {
            return;
        };
        let Some(mut record) = self.fleet_record(id).filter(|r| r.state == RUNNING) else {
            return;
        };
        record.state = STOPPED.to_owned();
        record.reason = Some(reason.to_owned());
        record.updated = super::now();
        let (record_key, lock) = (keys::promotion(id), keys::promotion_lock(id));
        let value = serde_json::to_string(&record).unwrap_or_default();
        for _ in 0..STOP_TRIES {
            let lease = store.lease.load(Ordering::Relaxed);
            let txn = etcd_client::Txn::new()
                .when(vec![
                    store.store.held_by(&lock, lease),
                    store
                        .store
                        .unchanged(&record_key, run.record_revision.load(Ordering::Relaxed)),
                ])
                .and_then(vec![
                    store.store.put(&record_key, value.clone()),
                    store.store.delete(&lock),
                ]);
            match store.store.commit(txn).await {
                Ok(Some(_)) => return,
                // Another instance has it, or an operator ended it: theirs to say.
                Ok(None) => return,
                Err(e) if e.is_unavailable() => tokio::time::sleep(STOP_PAUSE).await,
                Err(e) => {
                    tracing::error!(tenant = id, error = %e, "cannot record the stopped promotion in the store");
                    return;
                }
            }
        }
        tracing::error!(
            tenant = id,
            "the store did not come back in time to record the stopped promotion; it shows as running until this instance stops"
        );
    }

    /// This instance's lease expired (etcd was out of reach for longer than its term): its locks
    /// are gone, and another instance may have taken its promotions over.
    pub(crate) async fn lease_lost(&self) {
        let runs: Vec<Arc<PromotionRun>> = self
            .promotions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|r| r.is_running())
            .cloned()
            .collect();
        for run in runs {
            run.cancel();
            run.end(PromotionState::Stopped {
                reason: "this instance lost its lease on the store; the promotion is resumed by another instance".into(),
            });
        }
    }
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
