//! The training loop: shuffled mini-batches of the training customers, data-parallel gradients,
//! AdamW steps, and early stopping on the validation customers.

use std::time::Instant;

use super::data::{TrainData, shuffle, split_indices};
use super::graph_exec::{Network, Workspace};
use super::loss::Losses;
use super::optim::AdamW;
use super::options::TrainOptions;
use super::parallel::shards;
use super::params::{Grads, Params, add_into};
use crate::engine::{Batch, HeadOutputs, HeadValues};
use crate::error::{Error, Result};
use crate::model::graph::Graph;
use crate::model::tensor::Weights;
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean weighted loss over the epoch's mini-batches (taken while the weights were moving).
    pub train_loss: f64,
    /// Mean losses over the validation customers after the epoch: `total` is the weighted sum that
    /// early stopping watches, `ltv`, `churn` and `segment` the per-head losses.
    pub validation: Losses,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The weights after the best epoch (lowest validation loss; the first of ties).
    pub weights: Weights,
    pub history: Vec<EpochReport>,
    /// 1-based, an index into `history` plus one.
    pub best_epoch: usize,
    /// Validation losses of the initial weights, the baseline the history improves on.
    pub initial_validation: Losses,
}

/// Trains `init` (the graph's f32 layer tensors) on `data`, calling `progress` after every epoch.
/// Bad data, weights or options are `Error::Input` (`Error::Graph` for a bad graph), reported before
/// any work starts; a run whose very first epoch ends with a non-finite validation loss is
/// `Error::Input` too (the learning rate is too high for the data).
pub fn train(
    graph: &Graph,
    init: &Weights,
    data: &TrainData,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<TrainOutcome> {
    let (mut run, mut params) = Run::new(graph, init, data, opts)?;
    let mut stepper = Stepper::new(&mut params, opts)?;
    let (mut order, validation_rows) = split_indices(data.len(), opts.validation_fraction, opts.seed)?;
    let initial_validation = run.losses(&params, &validation_rows);
    let (mut history, mut best_epoch, mut best_loss, mut best) = (Vec::new(), 0, f64::INFINITY, params.clone());
    for epoch in 1..=opts.epochs {
        let started = Instant::now();
        let train_loss = stepper.epoch(&mut run, &mut params, &mut order);
        let kept = stepper.kept(&params);
        let validation = run.losses(kept, &validation_rows);
        let report = EpochReport { epoch, train_loss, validation, seconds: started.elapsed().as_secs_f64() };
        progress(&report);
        history.push(report);
        if validation.total < best_loss {
            (best_epoch, best_loss) = (epoch, validation.total);
            best.clone_from(kept);
        } else if !validation.total.is_finite() || epoch - best_epoch >= opts.patience {
            // A non-finite loss never recovers: no point waiting out the patience.
            break;
        }
    }
    if best_epoch == 0 {
        return Err(Error::Input(format!(
            "training diverged in the first epoch (validation loss {}); lower the learning rate",
            history[0].validation.total
        )));
    }
    Ok(TrainOutcome { weights: best.to_weights(), history, best_epoch, initial_validation })
}

/// Trains `init` on every customer of `data` for exactly `epochs` epochs (no validation slice): the
/// second pass of a fit whose epoch count early stopping chose, so that the last tenth of the data is
/// not wasted on validation. `progress` gets each epoch's mean training loss.
pub fn refit(
    graph: &Graph,
    init: &Weights,
    data: &TrainData,
    opts: &TrainOptions,
    epochs: usize,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Weights> {
    let (mut run, mut params) = Run::new(graph, init, data, opts)?;
    let mut stepper = Stepper::new(&mut params, opts)?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    for epoch in 1..=epochs {
        let loss = stepper.epoch(&mut run, &mut params, &mut order);
        if !loss.is_finite() {
            return Err(Error::Input(format!("training diverged in epoch {epoch} (loss {loss})")));
        }
        progress(epoch, loss);
    }
    Ok(stepper.kept(&params).to_weights())
}

/// The optimizer and what it carries from step to step: moments, the running weight average, the
/// shuffling stream.
struct Stepper<'a> {
    opts: &'a TrainOptions,
    optimizer: AdamW,
    grads: Grads,
    rng: Rng,
    /// When averaging: the decayed sum of the weights, their average, and the sum's total weight.
    /// The sum starts at zero and is divided by its total weight (as Adam corrects its moments), so
    /// that the average holds no share of the random initial weights however few steps a small log
    /// allows.
    average: Option<(Params, Params, f64)>,
}

impl<'a> Stepper<'a> {
    fn new(params: &mut Params, opts: &'a TrainOptions) -> Result<Self> {
        Ok(Stepper {
            opts,
            optimizer: AdamW::new(params, opts.learning_rate, opts.weight_decay, &opts.masks)?,
            grads: params.zeros(),
            rng: Rng::derive(opts.seed, "epoch-order"),
            average: (opts.weight_averaging > 0.0).then(|| (params.zeros_like(), params.clone(), 0.0)),
        })
    }

    /// One pass over `order` (shuffled first) in mini-batches; the mean training loss.
    fn epoch(&mut self, run: &mut Run, params: &mut Params, order: &mut [usize]) -> f64 {
        shuffle(order, &mut self.rng);
        let decay = self.opts.weight_averaging;
        let mut sum = Losses::default();
        for batch in order.chunks(self.opts.batch_size) {
            sum.add(&run.gradient(params, batch, &mut self.grads));
            self.optimizer.step(params, &self.grads);
            if let Some((total, _, weight)) = &mut self.average {
                total.blend(params, decay as f32);
                *weight = decay * *weight + (1.0 - decay);
            }
        }
        if let Some((total, avg, weight)) = &mut self.average {
            avg.scaled_from(total, (1.0 / *weight) as f32);
        }
        sum.mean(order.len()).total
    }

    /// The weights to validate and keep: the running average, or the last step's.
    fn kept<'p>(&'p self, params: &'p Params) -> &'p Params {
        self.average.as_ref().map_or(params, |(_, avg, _)| avg)
    }
}

/// Mean losses of `weights` over all of `data`, computed as `train` computes validation losses
/// (mini-batches of `opts.batch_size` over `opts.threads` workers, weighted by `opts.loss_weights`).
pub fn evaluate(graph: &Graph, weights: &Weights, data: &TrainData, opts: &TrainOptions) -> Result<Losses> {
    let (mut run, params) = Run::new(graph, weights, data, opts)?;
    Ok(run.losses(&params, &(0..data.len()).collect::<Vec<_>>()))
}

/// The float head logits of `weights` for every customer of `inputs`, computed by the training
/// forward pass (mini-batches on one thread): quick in-sample predictions for the trainer's own use,
/// such as calibrating the LTV scale. Scoring proper goes through the engine.
pub fn predict(graph: &Graph, weights: &Weights, inputs: &Batch) -> Result<HeadOutputs> {
    let shapes = graph.check()?;
    let params = Params::from_weights(graph, &shapes, weights)?;
    let net = Network::new(graph, &shapes);
    let mut ws = net.workspace(&params);
    let mut heads: [Vec<f32>; 3] = Default::default();
    let rows: Vec<usize> = (0..inputs.len()).collect();
    for chunk in rows.chunks(256) {
        for (all, part) in heads.iter_mut().zip(net.predict(&params, &mut ws, inputs, chunk)) {
            all.extend(part);
        }
    }
    let [ltv, churn, segment] = heads.map(HeadValues::Logits);
    Ok(HeadOutputs { ltv, churn, segment })
}

/// A checked graph, data and options, with one workspace per worker.
struct Run<'a> {
    net: Network,
    data: &'a TrainData,
    opts: &'a TrainOptions,
    workspaces: Vec<Workspace>,
}

impl<'a> Run<'a> {
    fn new(graph: &Graph, weights: &Weights, data: &'a TrainData, opts: &'a TrainOptions) -> Result<(Self, Params)> {
        let shapes = graph.check()?;
        opts.check()?;
        data.check(graph.inputs, graph.segments(&shapes))?;
        let params = Params::from_weights(graph, &shapes, weights)?;
        let net = Network::new(graph, &shapes);
        let workspaces = (0..opts.threads).map(|_| net.workspace(&params)).collect();
        Ok((Run { net, data, opts, workspaces }, params))
    }

    /// Summed losses of the mini-batch `rows`; `grads` receives the gradient of their mean, reduced
    /// over the shards in shard order.
    fn gradient(&mut self, params: &Params, rows: &[usize], grads: &mut Grads) -> Losses {
        let (net, data, weights, scale) = (&self.net, self.data, &self.opts.loss_weights, 1.0 / rows.len() as f64);
        let losses =
            shards(&mut self.workspaces, rows, |ws, part| net.gradient(params, ws, data, part, weights, scale));
        let used = &self.workspaces[..losses.len()];
        for (g, first) in grads.iter_mut().zip(&used[0].param_grads) {
            g.copy_from_slice(first);
        }
        for ws in &used[1..] {
            add_into(grads, &ws.param_grads);
        }
        sum(&losses)
    }

    /// Mean losses over `rows`, in mini-batches.
    fn losses(&mut self, params: &Params, rows: &[usize]) -> Losses {
        let (net, data, weights) = (&self.net, self.data, &self.opts.loss_weights);
        let mut total = Losses::default();
        for chunk in rows.chunks(self.opts.batch_size) {
            total.add(&sum(&shards(&mut self.workspaces, chunk, |ws, part| net.loss(params, ws, data, part, weights))));
        }
        total.mean(rows.len())
    }
}

fn sum(parts: &[Losses]) -> Losses {
    parts.iter().fold(Losses::default(), |mut acc, l| {
        acc.add(l);
        acc
    })
}
