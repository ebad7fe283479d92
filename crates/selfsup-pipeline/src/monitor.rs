//! The online kNN monitor: every `eval.monitor_every` epochs, kNN top-1 of the current
//! encoder on (a part of) the labelled test split, logged with the losses.

use crate::config::RunConfig;
use crate::evaluate::eval_transform;
use selfsup_core::Result;
use selfsup_data::ImageSet;
use selfsup_encoders::Backbone;

/// Training images and labels, test images and labels, classes.
type MonitorData = (ImageSet, Vec<usize>, ImageSet, Vec<usize>, usize);

/// The monitor of a run (see [`crate::TrainRun::monitor`]).
pub struct Monitor {
    every: usize,
    data: Option<MonitorData>,
    tf: selfsup_eval::EvalTransform,
    knn: selfsup_eval::KnnConfig,
    device: burn::tensor::Device,
}

impl Monitor {
    /// The monitor of `cfg` over `train` and `test`; one that does nothing when the data has
    /// no labelled test split or `eval.monitor_every` is 0.
    pub fn new(cfg: &RunConfig, train: &ImageSet, test: Option<&ImageSet>) -> Result<Self> {
        let take = |s: &ImageSet, n: usize| if n == 0 { s.clone() } else { s.take(n) };
        let data = match (cfg.eval.monitor_every, test, &train.labels) {
            (0, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(test), Some(_)) if test.labels.is_some() => {
                // A class-balanced part of the training set votes, so a sorted dataset
                // still has every class.
                let n = train.len();
                let frac = if cfg.eval.monitor_train == 0 || cfg.eval.monitor_train >= n {
                    1.0
                } else {
                    cfg.eval.monitor_train as f64 / n as f64
                };
                let tr = train.label_fraction(frac, cfg.train.seed)?;
                let te = take(test, cfg.eval.monitor_test);
                let (trl, tel) = (
                    tr.labels.clone().unwrap_or_default(),
                    te.labels.clone().unwrap_or_default(),
                );
                let classes = tr.num_classes().max(te.num_classes());
                Some((tr, trl, te, tel, classes))
            }
            _ => None,
        };
        Ok(Self {
            every: cfg.eval.monitor_every,
            data,
            tf: eval_transform(cfg, train),
            knn: cfg.knn.clone(),
            device: cfg.device.device()?,
        })
    }

    /// The values to log at the end of `epoch` (none in epochs it skips).
    pub fn run(&mut self, epoch: usize, encoder: &Backbone) -> Result<Vec<(String, f64)>> {
        let Some((tr, trl, te, tel, classes)) = &self.data else {
            return Ok(Vec::new());
        };
        if !(epoch + 1).is_multiple_of(self.every) {
            return Ok(Vec::new());
        }
        let a = selfsup_eval::extract(encoder, tr, &self.tf, 512, &self.device)?;
        let b = selfsup_eval::extract(encoder, te, &self.tf, 512, &self.device)?;
        let acc = selfsup_eval::knn_accuracy(a, trl, b, tel, *classes, &self.knn)?;
        Ok(vec![("knn_top1".to_string(), acc)])
    }
}
