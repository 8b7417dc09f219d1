//! Summing a step's gradients across the nodes of a data-parallel run, before the optimizer step.
//!
//! burn 0.21's data-parallel strategy keeps to one process (one thread per device, its CPU
//! backend not included), and its multi-node collective hung on the second all-reduce between
//! two processes (docs/ARCHITECTURE.md §7). Here a run's nodes sum their gradients through a
//! `GradientSync` (the project's TCP one is `training::NodeGroup`), as one flat f32 buffer in
//! the module's parameter order, which every node shares.

use std::fmt::Debug;
use std::sync::Arc;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

/// Sums a buffer element by element across all the nodes of a run; every node gets the sum.
pub trait GradientSync: Debug + Send + Sync {
    /// Nodes taking part (this one included).
    fn nodes(&self) -> usize;
    /// This node's place among them, from 0.
    fn rank(&self) -> usize;
    /// Replaces `values` by their sum over the nodes, in the same order on every node.
    fn sum(&self, values: &mut [f32]) -> std::io::Result<()>;
}

/// A shared `GradientSync`, as a trainee holds it.
pub type SharedSync = Arc<dyn GradientSync>;

/// Replaces every gradient in `grads` of a parameter of `module` by its sum over the nodes.
pub fn sum_gradients<AB, M>(
    module: &M,
    grads: &mut GradientsParams,
    sync: &dyn GradientSync,
) -> std::io::Result<()>
where
    AB: AutodiffBackend,
    M: AutodiffModule<AB>,
{
    let mut gather = Gather {
        grads,
        values: vec![],
        parts: vec![],
    };
    module.visit(&mut gather);
    let Gather {
        grads,
        mut values,
        parts,
    } = gather;
    sync.sum(&mut values)?;
    let mut offset = 0;
    for part in parts {
        let len = part.shape.iter().product::<usize>();
        let data = TensorData::new(values[offset..offset + len].to_vec(), part.shape.clone())
            .convert_dtype(part.dtype);
        offset += len;
        (part.restore)(grads, data);
    }
    Ok(())
}

/// Puts a parameter's summed gradient back into the gradients.
type Restore = Box<dyn FnOnce(&mut GradientsParams, TensorData)>;

/// One parameter's gradient taken out of `grads`: its shape and type, and where it goes back.
struct Part {
    shape: Vec<usize>,
    dtype: DType,
    restore: Restore,
}

/// Takes the gradients out of `grads`, in visiting order, as f32 values.
struct Gather<'a> {
    grads: &'a mut GradientsParams,
    values: Vec<f32>,
    parts: Vec<Part>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let id: ParamId = param.id;
        let Some(grad) = self.grads.remove::<AB::InnerBackend, D>(id) else {
            return;
        };
        let device = grad.device();
        let dtype = grad.dtype();
        let shape = grad.dims().to_vec();
        self.values
            .extend(grad.into_data().convert::<f32>().iter::<f32>());
        self.parts.push(Part {
            shape,
            dtype,
            restore: Box::new(move |grads, data| {
                grads.register::<AB::InnerBackend, D>(id, Tensor::from_data(data, &device));
            }),
        });
    }
}
