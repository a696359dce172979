//! The dynamic batcher: one queue for every connection. A dedicated thread takes the oldest request,
//! gathers more until the batch holds `max_batch` customers or the oldest has waited
//! `max_queue_delay`, whichever comes first, scores them in one engine call and hands each request its
//! own rows back. Scoring never runs on the async runtime, so I/O keeps flowing while a batch runs.
//!
//! The queue is bounded in customers accepted and not yet scored: [`Batcher::submit`] refuses at once
//! when a request does not fit (the server answers 503), so memory stays bounded under any overload. A request whose client went
//! away before its batch ran is dropped unscored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::reload::Loaded;
use crate::engine::{Batch, Scores};

/// What a request gets back: its scores, or why the engine failed.
pub type Outcome = Result<Scores, String>;

struct Job {
    model: Arc<Loaded>,
    batch: Batch,
    queued: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// The queue is full: the request was not taken.
pub struct Full;

pub struct Batcher {
    queue: Sender<Job>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the scoring thread; it ends when the `Batcher` is dropped and the queue is empty.
    pub fn start(
        max_batch: usize,
        max_delay: Duration,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Batcher, JoinHandle<()>)> {
        let (queue, jobs) = channel();
        let worker = Worker { jobs, max_batch, max_delay, metrics: metrics.clone(), carried: None };
        let thread = std::thread::Builder::new().name("ltvx-batcher".into()).spawn(move || worker.run())?;
        Ok((Batcher { queue, capacity, metrics }, thread))
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether not even one more customer fits now.
    pub fn is_full(&self) -> bool {
        self.metrics.queue_depth.load(Ordering::Acquire) >= self.capacity
    }

    /// Queues a request's customers for `model`; the receiver yields its scores in request order.
    pub fn submit(&self, model: Arc<Loaded>, batch: Batch) -> Result<oneshot::Receiver<Outcome>, Full> {
        let n = batch.len();
        // Reserve room first: depth never exceeds capacity, whatever the number of connections.
        self.metrics
            .queue_depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                (depth + n <= self.capacity).then_some(depth + n)
            })
            .map_err(|_| Full)?;
        let (reply, receiver) = oneshot::channel();
        let job = Job { model, batch, queued: Instant::now(), reply };
        if self.queue.send(job).is_err() {
            // The scoring thread is gone (it panicked): refuse rather than wait forever.
            self.metrics.queue_depth.fetch_sub(n, Ordering::AcqRel);
            return Err(Full);
        }
        Ok(receiver)
    }
}

struct Worker {
    jobs: Receiver<Job>,
    max_batch: usize,
    max_delay: Duration,
    metrics: Arc<Metrics>,
    /// A request that arrived while gathering and did not fit: it opens the next batch.
    carried: Option<Job>,
}

impl Worker {
    fn run(mut self) {
        while let Some(jobs) = self.gather() {
            // Requests started on different models (a reload happened meanwhile) are scored apart.
            let mut rest = jobs;
            while !rest.is_empty() {
                let model = rest[0].model.clone();
                let (same, other): (Vec<Job>, Vec<Job>) = rest.into_iter().partition(|j| Arc::ptr_eq(&j.model, &model));
                self.score(&model, same);
                rest = other;
            }
        }
    }

    /// The next batch's requests; `None` once the queue is closed and drained.
    fn gather(&mut self) -> Option<Vec<Job>> {
        let first = match self.carried.take() {
            Some(job) => job,
            None => self.jobs.recv().ok()?,
        };
        let deadline = first.queued + self.max_delay;
        let mut rows = first.batch.len();
        let mut jobs = vec![first];
        while rows < self.max_batch {
            let wait = deadline.saturating_duration_since(Instant::now());
            let job = match self.jobs.recv_timeout(wait) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            };
            if rows + job.batch.len() > self.max_batch {
                self.carried = Some(job);
                break;
            }
            rows += job.batch.len();
            jobs.push(job);
        }
        Some(jobs)
    }

    /// Gives a request's room in the queue back: only once it is scored (or abandoned), so that the
    /// bound covers the batch being scored too, and before its answer goes out, so that a client that
    /// has its answer finds the room free.
    fn release(&self, job: &Job) {
        self.metrics.queue_depth.fetch_sub(job.batch.len(), Ordering::AcqRel);
    }

    /// Scores the requests still waiting for an answer together, in engine calls of at most
    /// `max_batch` customers (a request larger than that alone spans several).
    fn score(&self, model: &Loaded, jobs: Vec<Job>) {
        let (gone, jobs): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.reply.is_closed());
        gone.iter().for_each(|j| self.release(j));
        let total: usize = jobs.iter().map(|j| j.batch.len()).sum();
        if total == 0 {
            return;
        }
        let started = Instant::now();
        let sizes = model.engine.input_sizes();
        let mut all = Batch::with_capacity(sizes, total);
        for job in &jobs {
            all.append(&job.batch);
        }
        let mut scores = Scores { segments: model.engine.segments(), ..Default::default() };
        let mut failure = None;
        for start in (0..total).step_by(self.max_batch) {
            let end = (start + self.max_batch).min(total);
            let chunk = if start == 0 && end == total { None } else { Some(all.slice(start..end)) };
            match model.engine.score(chunk.as_ref().unwrap_or(&all)) {
                Ok(s) => {
                    scores.append(&s);
                    let delays = jobs.iter().flat_map(|j| std::iter::repeat_n(started - j.queued, j.batch.len()));
                    let delays = delays.skip(start).take(end - start);
                    self.metrics.batch(&model.labels, end - start, delays);
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let mut offset = 0;
        for job in jobs {
            let n = job.batch.len();
            let outcome = match &failure {
                Some(e) => Err(e.clone()),
                None => Ok(scores.rows(offset..offset + n)),
            };
            offset += n;
            self.release(&job);
            // A client that went away meanwhile just misses its answer.
            let _ = job.reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendChoice;
    use crate::model::init::random_model;
    use crate::model::{Precision, Preset};
    use crate::rng::Rng;

    fn batch(sizes: crate::model::InputSizes, rows: usize, rng: &mut Rng) -> Batch {
        let seq = (0..rows * sizes.seq_channels * sizes.seq_len).map(|_| rng.uniform() as f32).collect();
        let stat = (0..rows * sizes.static_features).map(|_| rng.normal() as f32).collect();
        Batch::from_vecs(sizes, seq, stat).unwrap()
    }

    #[test]
    fn requests_merged_into_batches_get_their_own_rows_back() {
        let graph = Preset::Tiny.graph(Preset::Tiny.default_inputs());
        let model = random_model(graph, Precision::Fp32, 3, 0.0).unwrap().into_model().unwrap();
        let loaded =
            Arc::new(Loaded::build(model, std::path::Path::new("test.ltvx"), BackendChoice::Auto, 1, 8).unwrap());
        let metrics = Arc::new(Metrics::default());
        let (batcher, thread) = Batcher::start(8, Duration::from_millis(50), 32, metrics.clone()).unwrap();
        let mut rng = Rng::new(1);
        // 3 + 2 share a batch, 5 does not fit beside them, 11 spans two engine calls of at most 8.
        let requests: Vec<Batch> =
            [3, 2, 5, 11].iter().map(|&n| batch(loaded.engine.input_sizes(), n, &mut rng)).collect();
        let replies: Vec<_> =
            requests.iter().map(|b| batcher.submit(loaded.clone(), b.clone()).ok().expect("room")).collect();
        // More than the whole queue holds can never be taken (how full it is now depends on timing).
        let too_many = batch(loaded.engine.input_sizes(), 33, &mut rng);
        assert!(batcher.submit(loaded.clone(), too_many).is_err());
        for (request, reply) in requests.iter().zip(replies) {
            let scores = reply.blocking_recv().unwrap().unwrap();
            assert_eq!(scores, loaded.engine.score(request).unwrap());
        }
        assert_eq!(metrics.queue_depth.load(Ordering::Acquire), 0);
        drop(batcher);
        thread.join().unwrap();
    }
}
