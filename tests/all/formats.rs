//! Weights formats told apart by content, whatever a file's first byte happens to be.
//!
//! A safetensors file begins with its header's length, so its first byte is any value: 0x80 (a
//! pickle's PROTO opcode) for one file in 256, as in a transformers-written phi-1.5 in f16. Every
//! form of PyTorch file torch.save has written (tests/fixtures/formats, from
//! tools/make_format_fixtures.py) loads too, under its own name or another.

use std::path::Path;

use phi_zoo::{Checkpoint, PhiError};

use crate::fixtures::{Reference, TOLERANCE, layout_dir, max_abs_diff, root, to_vec};

/// Logits of the model in `dir` on the fixture's inputs.
fn logits(dir: &Path, reference: &Reference) -> Vec<f32> {
    let device = Default::default();
    let model = Checkpoint::open(dir)
        .and_then(|c| c.load::<phi_zoo::backend::Cpu>(&device))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    to_vec(model.forward_ids(&reference.ids, &device).unwrap())
}

/// `bytes` (a safetensors file) with its header JSON padded with spaces to `length` bytes.
fn with_header_length(bytes: &[u8], length: usize) -> Vec<u8> {
    let old = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[8..8 + old]).unwrap().trim_end();
    assert!(length >= json.len());
    let mut out = (length as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.resize(8 + length, b' ');
    out.extend_from_slice(&bytes[8 + old..]);
    out
}

#[test]
fn safetensors_load_whatever_their_header_length_begins_with() {
    let source = layout_dir("tiny_p05", "v3");
    let reference = Reference::load("tiny_p05");
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let json_len = {
        let old = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        std::str::from_utf8(&bytes[8..8 + old])
            .unwrap()
            .trim_end()
            .len()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    // Every low byte; and heads that mimic the other formats: 0x80 then a pickle protocol
    // (0x1_0280, 0x1_0480), and "PK" (0x4b50).
    let mut lengths: Vec<usize> = (0..256)
        .map(|low| (json_len..json_len + 256).find(|l| l % 256 == low).unwrap())
        .collect();
    lengths.extend([0x1_0280, 0x1_0480, 0x4b50]);
    let mut first_bytes = std::collections::BTreeSet::new();
    for (n, &length) in lengths.iter().enumerate() {
        let padded = with_header_length(&bytes, length);
        first_bytes.insert(padded[0]);
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, &padded).unwrap();
        // The weights, exactly; the logits for a sample of them (a forward is the slow part).
        let checkpoint = Checkpoint::open(dir.path())
            .unwrap_or_else(|e| panic!("header length {length:#x}: {e}"));
        assert_eq!(checkpoint.files(), [path.as_path()]);
        if n % 32 == 0 || n >= 256 {
            let d = max_abs_diff(&logits(dir.path(), &reference), &reference.logits);
            assert!(
                d <= TOLERANCE,
                "header length {length:#x}: logits differ by {d}"
            );
        }
    }
    assert_eq!(first_bytes.len(), 256, "every first byte was tried");
}

#[test]
fn every_pytorch_form_loads_and_matches_transformers() {
    let reference = Reference::load("tiny_p04");
    for form in ["zip_p2", "zip_p4", "legacy_p2", "legacy_p4"] {
        let dir = root().join("formats").join(form);
        let d = max_abs_diff(&logits(&dir, &reference), &reference.logits);
        assert!(d <= TOLERANCE, "{form}: logits differ by {d}");
    }
}

#[test]
fn misnamed_weights_files_load_by_their_content() {
    let reference = Reference::load("tiny_p04");
    let cases = [
        (
            layout_dir("tiny_p04", "v3").join("model.safetensors"),
            "pytorch_model.bin",
        ),
        (
            root().join("formats/zip_p2/pytorch_model.bin"),
            "model.safetensors",
        ),
        (
            root().join("formats/legacy_p2/pytorch_model.bin"),
            "model.safetensors",
        ),
        (root().join("formats/zip_p2/pytorch_model.bin"), "weights"),
    ];
    for (source, name) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            layout_dir("tiny_p04", "v3").join("config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        std::fs::copy(&source, dir.path().join(name)).unwrap();
        // A folder finds files by name; a file path is taken as it is.
        let path = dir.path().join(name);
        let d = max_abs_diff(&logits(&path, &reference), &reference.logits);
        assert!(d <= TOLERANCE, "{} as {name}: {d}", source.display());
    }
}

#[test]
fn a_file_no_format_reads_names_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        layout_dir("tiny_p05", "v3").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    // Begins like a pickle (0x80, protocol 2) and like a safetensors file (a length that fits,
    // then `{`), and is neither.
    let mut bytes = 0x0280u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{not json");
    bytes.resize(8 + 0x0280 + 16, b'!');
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    match Checkpoint::open(dir.path()) {
        Err(PhiError::Weights { file, message, .. }) => {
            assert_eq!(file, path);
            assert!(
                message.contains("as safetensors: header is not valid JSON")
                    && message.contains("as a PyTorch file"),
                "{message}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a file that is neither format"),
    }
}
