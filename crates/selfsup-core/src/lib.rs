//! # selfsup-core
//!
//! The pieces every selfsup method plugs into: the [`Encoder`], [`Augmentation`] /
//! [`ViewGenerator`] and [`Objective`] traits, and the shared engine: the [`Trainer`] loop,
//! optimizers (SGD, AdamW, LARS), schedules, global-norm clipping, the [`Ema`] teacher,
//! checkpoints, device choice, errors and config.

pub mod atomic;
pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod distributed;
pub mod ema;
pub mod encoder;
pub mod error;
pub mod grads;
pub mod iter_source;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod parallel;
pub mod prefetch;
pub mod schedule;
pub mod seed;
pub mod tensorboard;
pub mod trainer;

pub use augment::{Augmentation, Image, Image8, ViewGenerator};
pub use config::{
    ClipMode, OptimizerConfig, OptimizerKind, Precision, ScheduleConfig, TrainConfig,
};
pub use device::DeviceSpec;
pub use distributed::{Collective, Distributed, LocalGroup};
pub use ema::Ema;
pub use encoder::Encoder;
pub use error::{Error, Result};
pub use iter_source::IterSource;
pub use objective::{LossOutput, Objective, StepInfo};
pub use optim::ParamSettings;
pub use parallel::{DataParallel, Shardable};
pub use prefetch::Prefetch;
pub use trainer::{
    BatchSource, EpochHook, FitOptions, StepResult, StepTimes, Stepper, TrainOutcome, Trainer,
};

/// burn, re-exported so method crates and users build against the same version.
pub use burn;
