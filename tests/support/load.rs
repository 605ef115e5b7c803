//! Steady loopback load for tests that change things under traffic: a few workers send requests in
//! a loop, cycling through hosts, until stopped. Bounded in count and in time, always.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{Gateway, Reply, WAIT};

/// At most this many requests per load, and this long, whatever the test does.
const MAX_REQUESTS: usize = 100_000;
const MAX_TIME: Duration = Duration::from_secs(90);

/// One request's fate. `status` 0: it failed at the transport level (`error` says how).
#[derive(Debug, Clone)]
pub struct Sample {
    pub host: String,
    pub status: u16,
    pub upstream: String,
    pub error: Option<String>,
    /// When the answer came.
    pub at: Instant,
    /// From sending the request to its whole answer.
    pub latency: Duration,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` clients, each cycling through `hosts`, on the gateway's HTTP listener.
    pub fn start(gw: &Gateway, hosts: &[&str], workers: usize) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let url = format!("http://{}/", gw.http);
        let workers = (0..workers)
            .map(|w| {
                let (samples, stop, url) = (Arc::clone(&samples), Arc::clone(&stop), url.clone());
                let client = gw.client.clone();
                let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
                tokio::spawn(async move {
                    let mut k = w;
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_TIME {
                        let host = hosts[k % hosts.len()].clone();
                        k += 1;
                        let sent_at = Instant::now();
                        let sent = client
                            .get(&url)
                            .header(reqwest::header::HOST, &host)
                            .send()
                            .await;
                        let sample = match sent {
                            Ok(resp) => {
                                let r = Reply::from(resp).await;
                                let upstream =
                                    r.body["upstream"].as_str().unwrap_or("-").to_owned();
                                Sample {
                                    host,
                                    status: r.status,
                                    upstream,
                                    error: None,
                                    at: Instant::now(),
                                    latency: sent_at.elapsed(),
                                }
                            }
                            Err(e) => Sample {
                                host,
                                status: 0,
                                upstream: "-".into(),
                                error: Some(format!("{e:?}")),
                                at: Instant::now(),
                                latency: sent_at.elapsed(),
                            },
                        };
                        let mut all = samples.lock().unwrap_or_else(PoisonError::into_inner);
                        all.push(sample);
                        if all.len() >= MAX_REQUESTS {
                            break;
                        }
                    }
                })
            })
            .collect();
        Load {
            samples,
            stop,
            workers,
        }
    }

    pub fn count(&self) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until at least `n` requests have completed (bounded by `WAIT`).
    pub async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "load stalled at {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Requests completed from now on: waits for `n` more.
    pub async fn wait_for_more(&self, n: usize) {
        let target = self.count() + n;
        self.wait_for(target).await;
    }

    /// Stops the workers and returns every sample, in completion order.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            let _ = w.await;
        }
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.clone()
    }
}

/// The samples that were not a 200, for an assertion message.
pub fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| !s.ok()).collect()
}
