//! NumPy's `.npy` format (version 1.0) for a 2-D little-endian f32 array, C order: what `embed`
//! writes so that `numpy.load` reads it, and what the classifier reads back.

use std::io::Read;
use std::path::Path;

use crate::atomic_file::AtomicFile;
use crate::error::{DataError, Result};

const MAGIC: &[u8] = b"\x93NUMPY\x01\x00";

/// Writes `rows × cols` values (row after row) to `path`, atomically.
pub fn write_f32_matrix(path: &Path, rows: usize, cols: usize, values: &[f32]) -> Result<()> {
    if values.len() != rows * cols {
        return Err(DataError::Invalid(format!(
            "{}: {} values for a {rows}×{cols} array",
            path.display(),
            values.len()
        )));
    }
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // The header, with its length field and newline, pads the data to a 64-byte boundary.
    let unpadded = MAGIC.len() + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut file = AtomicFile::create(path)?;
    file.write_all(MAGIC)?;
    file.write_all(&(header.len() as u16).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    file.write_all(&bytes)?;
    file.commit()?;
    Ok(())
}

/// Reads a 2-D `<f4` C-order array: `(rows, cols, values)`.
pub fn read_f32_matrix(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bad = |message: String| DataError::corpus(path, message);
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = [0u8; 10];
    file.read_exact(&mut head)
        .map_err(|_| bad("too short for a .npy file".into()))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a version 1.0 .npy file".into()));
    }
    let header_len = u16::from_le_bytes([head[8], head[9]]) as usize;
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header)
        .map_err(|_| bad("the header is cut short".into()))?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad(format!(
            "not a C-order little-endian f32 array: {header}"
        )));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape in the header".into()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("shape ({shape})"))))
        .collect::<Result<_>>()?;
    let [rows, cols] = dims[..] else {
        return Err(bad(format!(
            "a {}-D array where 2-D is expected",
            dims.len()
        )));
    };
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad(format!("shape ({rows}, {cols}) is absurd")))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| DataError::io(path, e))?;
    if data.len() != expected {
        return Err(bad(format!(
            "{} data bytes for shape ({rows}, {cols}), expected {expected}",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((rows, cols, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_the_header_is_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        write_f32_matrix(&path, 2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 24) % 64, 0);
        assert_eq!(
            read_f32_matrix(&path).unwrap(),
            (2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5])
        );
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(
            read_f32_matrix(&path)
                .unwrap_err()
                .to_string()
                .contains("expected 24")
        );
    }
}
