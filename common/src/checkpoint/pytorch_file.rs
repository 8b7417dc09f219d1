//! A PyTorch `.bin` (zip or legacy pickle) weights file, read lazily through burn-store's reader.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn_store::TensorSnapshot;
use burn_store::pytorch::PytorchReader;

use crate::error::{PhiError, Result};

pub struct PytorchFile {
    path: PathBuf,
    tensors: BTreeMap<String, TensorSnapshot>,
}

impl PytorchFile {
    pub fn open(path: &Path) -> Result<Self> {
        let reader = PytorchReader::new(path).map_err(|e| {
            PhiError::weights(path, None, format!("cannot read as a PyTorch file: {e}"))
        })?;
        Ok(Self {
            path: path.to_owned(),
            tensors: reader.into_tensors().into_iter().collect(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.shape.as_slice()))
    }

    pub fn read_f32(&self, key: &str, rows: Option<Range<usize>>) -> Result<Vec<f32>> {
        let fail = |m: String| PhiError::weights(&self.path, Some(key), m);
        let snapshot = self
            .tensors
            .get(key)
            .ok_or_else(|| fail("not in this file".into()))?;
        if !matches!(
            snapshot.dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            return Err(fail(format!(
                "dtype {:?} is not supported (a float type expected)",
                snapshot.dtype
            )));
        }
        let data = snapshot
            .to_data()
            .map_err(|e| fail(format!("cannot read the data: {e}")))?;
        let values: Vec<f32> = data.iter::<f32>().collect();
        let expected: usize = snapshot.shape.iter().product();
        if values.len() != expected {
            return Err(fail(format!(
                "holds {} values but its shape {:?} needs {expected}",
                values.len(),
                snapshot.shape.as_slice()
            )));
        }
        Ok(match rows {
            None => values,
            Some(r) => {
                let row: usize = snapshot.shape.iter().skip(1).product();
                values[r.start * row..r.end * row].to_vec()
            }
        })
    }
}
