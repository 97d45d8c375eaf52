//! The scheduler: one task per queue in each worker process. It sleeps until the earliest
//! due time it knows of (a delayed job or a lease deadline, both read from Redis after each
//! step), wakes early when a producer publishes an earlier due time, and then promotes
//! exactly the due jobs and reaps expired leases in one idempotent script. Any number of
//! workers may run it for the same queue. It runs until its task is aborted.

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound of one sleep: a safety net for a wake-up lost with a broken subscription.
const MAX_SLEEP: Duration = Duration::from_secs(5);
const BATCH: usize = 1000;
/// Waits up to this long are slept precisely (see below). Tokio's timer was seen waking up
/// to ~2 ms after its deadline, so longer waits end this far early and re-check.
const FINE: Duration = Duration::from_millis(4);

pub async fn run<S: Store>(store: Arc<S>, q: Arc<S::Queue>, on_error: impl Fn(&crate::error::Error)) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Listen before reading the head, so a wake-up between the two is not lost (a
        // notification sent meanwhile is kept as a permit).
        let signal = match store.schedule_signal(&q).await {
            Ok(n) => Some(n),
            Err(e) => {
                on_error(&e);
                None
            }
        };
        let sleep = match store.tick(&q, BATCH).await {
            Ok(t) => {
                backoff = Duration::from_millis(50);
                if t.promoted as usize >= BATCH || t.reaped as usize >= BATCH {
                    continue;
                }
                let next = [t.next_due_us, t.next_lease_deadline_ms.map(|ms| ms * 1000)].into_iter().flatten().min();
                let wait = match next {
                    Some(at) => Duration::from_micros((at - t.now_us).max(0) as u64).min(MAX_SLEEP),
                    None => MAX_SLEEP,
                };
                if wait <= FINE {
                    // Tokio's timer ticks in whole milliseconds (and rounds up): the last
                    // stretch is slept by a blocking thread, so a due job is promoted within
                    // ~0.1 ms of its time instead of up to 2 ms after it.
                    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
                    continue;
                }
                // Wake early; the fine sleep above takes over from there.
                wait - FINE
            }
            Err(e) => {
                on_error(&e);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                backoff
            }
        };
        let sleep = if signal.is_some() { sleep } else { sleep.min(backoff) };
        match signal {
            Some(n) => tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = n.notified() => {}
            },
            None => tokio::time::sleep(sleep).await,
        }
    }
}
