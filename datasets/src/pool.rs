//! A bounded pool of worker threads between a streaming producer and one recorder: jobs are
//! produced as the corpus is read (at most twice the pool's size wait in memory), `work` runs on
//! `concurrency` threads (requests to an endpoint, which block), and every result is handed in
//! completion order to `record` on a single thread (which owns the output). The first error of
//! the producer or the recorder stops the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use crate::error::{DataError, Result};

/// Runs the pool; see the module's comment. `produce` is given the function that queues a job.
pub fn run_pool<J: Send, R: Send>(
    concurrency: usize,
    produce: impl FnOnce(&mut dyn FnMut(J) -> Result<()>) -> Result<()>,
    work: impl Fn(&J) -> R + Sync,
    mut record: impl FnMut(J, R) -> Result<()> + Send,
) -> Result<()> {
    let concurrency = concurrency.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<J>(2 * concurrency);
    let job_rx = Mutex::new(job_rx);
    let (result_tx, result_rx) = mpsc::channel::<(J, R)>();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let recorder = scope.spawn(|| {
            for (job, result) in result_rx {
                if let Err(e) = record(job, result) {
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            Ok(())
        });
        for _ in 0..concurrency {
            let result_tx = result_tx.clone();
            let (job_rx, work, stop) = (&job_rx, &work, &stop);
            scope.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // After a stop, jobs still queued are drained unworked.
                    if stop.load(Ordering::SeqCst) {
                        continue;
                    }
                    let result = work(&job);
                    if result_tx.send((job, result)).is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
        drop(result_tx);
        let produced = produce(&mut |job| {
            if stop.load(Ordering::SeqCst) {
                return Err(DataError::Invalid("stopped".into()));
            }
            job_tx
                .send(job)
                .map_err(|_| DataError::Invalid("the workers are gone".into()))
        });
        drop(job_tx);
        let recorded = recorder
            .join()
            .unwrap_or_else(|_| Err(DataError::Invalid("the recorder panicked".into())));
        recorded.and(produced)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_is_recorded_once_and_errors_stop_the_rest() {
        let mut seen = Vec::new();
        run_pool(
            4,
            |queue| (0..100).try_for_each(&mut *queue),
            |j: &u32| j * 2,
            |j, r| {
                assert_eq!(r, j * 2);
                seen.push(j);
                Ok(())
            },
        )
        .unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());

        let mut recorded = 0;
        let error = run_pool(
            3,
            |queue| (0..10_000).try_for_each(&mut *queue),
            |j: &u32| *j,
            |j, _| {
                recorded += 1;
                if j == 5 {
                    Err(DataError::Invalid("document 5: bad reply".into()))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("document 5"), "{error}");
        assert!(recorded < 10_000);
    }
}
