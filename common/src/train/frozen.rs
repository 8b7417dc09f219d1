//! `Frozen<M>`: a module that takes part in the forward pass and moves with its owner between
//! devices, but that optimizers, gradient clipping, weight decay and records never see.
//!
//! A LoRA run trains adapters on a fixed base model. With the base as a plain field, burn-train
//! would write all of its weights into every checkpoint and every visitor would walk them; behind
//! `Frozen` the run's module is, to the optimizer and the recorder, just its adapters. The base
//! comes from its own checkpoint when a run starts or resumes.

use burn::module::{
    AutodiffModule, Content, Devices, EmptyRecord, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor,
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

#[derive(Debug, Clone)]
/// A module whose parameters are left out of training (see the module docs).
pub struct Frozen<M>(pub M);

impl<B: Backend, M: Module<B>> Module<B> for Frozen<M> {
    type Record = EmptyRecord;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.0.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        Frozen(self.0.fork(device))
    }

    fn to_device(self, device: &B::Device) -> Self {
        Frozen(self.0.to_device(device))
    }

    fn visit<V: ModuleVisitor<B>>(&self, _: &mut V) {}

    fn map<Mp: ModuleMapper<B>>(self, _: &mut Mp) -> Self {
        self
    }

    fn load_record(self, _: EmptyRecord) -> Self {
        self
    }

    fn into_record(self) -> EmptyRecord {
        EmptyRecord
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> AutodiffModule<B> for Frozen<M> {
    type InnerModule = Frozen<M::InnerModule>;

    fn valid(&self) -> Self::InnerModule {
        Frozen(self.0.valid())
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        Frozen(M::from_inner(module.0))
    }
}

impl<M> ModuleDisplayDefault for Frozen<M> {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&"frozen").optional()
    }

    fn num_params(&self) -> usize {
        0
    }
}

impl<M> ModuleDisplay for Frozen<M> {}
