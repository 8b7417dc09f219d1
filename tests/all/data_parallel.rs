//! Data-parallel training across processes: two nodes joined over loopback TCP (each its own
//! process, each reading its share of every micro-batch) end with the same weights as each other,
//! as one process with the doubled micro-batch, and as one process with two devices through
//! burn-train's multi-device strategy.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use burn::backend::flex::FlexDevice;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::AdamWConfig;
use burn::prelude::*;
use phi_zoo::backend::Cpu;
use phi_zoo::common::train::{LmTrainee, Trainee};
use phi_zoo::training::{NodeGroup, RunPlan, run};

use crate::fixtures::{Train, constant_schedule, small_mixture, tiny_trainee};

/// `rank,nodes,address,data_dir,out_file` for `node`, set by the test that starts it.
const NODE: &str = "PHI_ZOO_DATA_PARALLEL_NODE";

/// Three optimizer steps of the tiny trainee on a small store, micro-batches of `batch` per
/// device, one step per epoch (so burn's multi-device split of an epoch is one micro-batch per
/// device, as the nodes split it); the trained weights, flattened.
fn train(trainee: Trainee<Train>, batch: usize, devices: &[FlexDevice], data: &Path) -> Vec<f32> {
    let (train, valid) = small_mixture(data);
    let schedule = constant_schedule(3);
    let out = tempfile::tempdir().unwrap();
    let trained = run(
        trainee,
        AdamWConfig::new()
            .with_weight_decay(0.0)
            .init::<Train, Trainee<Train>>(),
        schedule.scheduler(1),
        Arc::new(train),
        Arc::new(valid),
        &RunPlan {
            dir: out.path().to_path_buf(),
            batch,
            grad_accum: 1,
            steps_per_epoch: 1,
            epochs: 3,
            keep: 1,
            valid_batches: 1,
            resume_epoch: None,
            peak_flops: None,
        },
        devices,
    );
    weights(&trained.phi)
}

/// Every float parameter's values, in the module's order.
fn weights<M: Module<Cpu>>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor<Cpu> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Cpu, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut collect = Collect(vec![]);
    module.visit(&mut collect);
    collect.0
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn two_nodes_train_as_one_node_with_the_doubled_batch() {
    let device = FlexDevice;
    let data = tempfile::tempdir().unwrap();
    // A free loopback port for node 0.
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let nodes: Vec<_> = (0..2)
        .map(|rank| {
            let out = data.path().join(format!("node-{rank}.f32"));
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "data_parallel::node", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(
                    NODE,
                    format!(
                        "{rank},2,{address},{},{}",
                        data.path().display(),
                        out.display()
                    ),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let node_weights: Vec<Vec<f32>> = nodes
        .into_iter()
        .map(|(child, out)| {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success() && out.exists(),
                "a node failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            std::fs::read(&out)
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect();
    // The nodes took the same steps, bit for bit.
    assert_eq!(node_weights[0], node_weights[1]);

    let start = weights(&tiny_trainee(&device).phi.valid());
    let dir = |name: &str| {
        let dir = data.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let doubled = train(tiny_trainee(&device), 4, &[device], &dir("doubled"));
    let two_devices = train(
        tiny_trainee(&device),
        2,
        &[device, device],
        &dir("two-devices"),
    );
    assert!(max_difference(&start, &doubled) > 1e-3, "the weights moved");
    let d = max_difference(&node_weights[0], &doubled);
    eprintln!(
        "nodes vs doubled batch: {d}, vs two devices: {}, moved {}",
        max_difference(&node_weights[0], &two_devices),
        max_difference(&start, &doubled)
    );
    assert!(
        d <= 1e-5,
        "two nodes against one with the doubled batch: {d}"
    );
    let d = max_difference(&node_weights[0], &two_devices);
    assert!(
        d <= 1e-5,
        "two nodes against one process with two devices: {d}"
    );
}

/// One node of `two_nodes_train_as_one_node_with_the_doubled_batch`, in its own process: joins
/// the run, trains, writes its weights. Does nothing unless started by that test.
#[test]
#[ignore = "started by two_nodes_train_as_one_node_with_the_doubled_batch, in a child process"]
fn node() {
    let Ok(spec) = std::env::var(NODE) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (rank, nodes): (usize, usize) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
    let group = NodeGroup::join(rank, nodes, parts[2], Duration::from_secs(60)).unwrap();
    let device = FlexDevice;
    let mut trainee = tiny_trainee(&device);
    trainee.set_gradient_sync(Some(Arc::new(group)));
    // Each node's own copy of the store (the same bytes).
    let data = Path::new(parts[3]).join(format!("node-{rank}-data"));
    std::fs::create_dir_all(&data).unwrap();
    let values = train(trainee, 2, &[device], &data);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(parts[4], bytes).unwrap();
}
