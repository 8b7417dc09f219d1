//! Synthesis against phi-zoo's own server on a tiny model: every planned prompt generated once
//! and recorded with its provenance, short outputs dropped, a rerun generating nothing, and the
//! same samples through dropped connections and 503s as without.

use std::path::Path;

use phi_zoo::datasets::synthesize::{
    self, Style, SynthesisTemplates, SynthesizeOptions, parse_topics,
};
use serde_json::Value;

use crate::annotate::{endpoint, server};
use crate::llm_proxy::{Fault, FaultProxy};

fn samples(path: &Path) -> Vec<Value> {
    let mut records: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    records
}

#[test]
fn planned_prompts_are_generated_once_with_their_provenance() {
    let addr = server();
    let dir = tempfile::tempdir().unwrap();
    let mut templates = SynthesisTemplates::default_templates();
    templates.subunits.truncate(1);
    let topics = parse_topics("# comment\nrecursion\n");
    let extracts = vec!["A web page about stacks of plates.".to_string()];
    let plan = synthesize::plan(
        &templates,
        &topics,
        &[Style::Textbook, Style::Exercises],
        &extracts,
    );
    assert_eq!(plan.len(), 8);
    let mut options = SynthesizeOptions::new(&templates.version);
    options.sampling.max_tokens = 16;
    options.min_tokens = 16;
    options.concurrency = 4;
    let url = format!("http://{addr}");
    let out = dir.path().join("clean");
    let report = synthesize::synthesize(&plan, &endpoint(&url), &out, &options).unwrap();
    assert_eq!(
        (report.prompts, report.requested, report.skipped),
        (8, 8, 0)
    );
    assert_eq!(report.kept + report.dropped_short, 8);
    let records = samples(&report.samples_path);
    for r in &records {
        assert_eq!(r["template_version"], "textbook-v1");
        assert_eq!(r["model"], "tiny-annotator");
        assert_eq!(r["settings"]["max_tokens"], 16);
        assert_eq!(r["kept"], r["completion_tokens"].as_u64().unwrap() >= 16);
        assert!(r["topic"] == "recursion" && r["prompt_hash"] == r["key"]);
    }
    let kept = std::fs::read_to_string(&report.kept_path).unwrap();
    assert_eq!(kept.lines().count() as u64, report.kept);

    let again = synthesize::synthesize(&plan, &endpoint(&url), &out, &options).unwrap();
    assert_eq!((again.requested, again.skipped), (0, 8));

    // Shards split the plan; through faults, the samples are the same.
    let proxy = FaultProxy::start(addr, |n| match n {
        0 | 2 => Fault::Drop,
        1 | 3 => Fault::Unavailable,
        _ => Fault::Pass,
    });
    let faulty = dir.path().join("faulty");
    let mut total = 0;
    for i in 0..2 {
        options.shard = phi_zoo::datasets::Shard::new(i, 2).unwrap();
        let part =
            synthesize::synthesize(&plan, &endpoint(&proxy.url()), &faulty, &options).unwrap();
        assert_eq!(part.prompts, 4);
        total += part.requested;
    }
    assert_eq!(total, 8);
    let mut sharded: Vec<Value> = ["shard-00000-of-00002", "shard-00001-of-00002"]
        .iter()
        .flat_map(|s| samples(&faulty.join(format!("samples-{s}.jsonl"))))
        .collect();
    sharded.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    let texts = |r: &[Value]| r.iter().map(|v| v["text"].clone()).collect::<Vec<_>>();
    assert_eq!(texts(&sharded), texts(&records));
    assert!(proxy.count(Fault::Drop) == 2 && proxy.count(Fault::Unavailable) == 2);
}
