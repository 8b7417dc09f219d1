//! Streaming readers: a corpus (JSONL with a text field, plain text files, Parquet with a text
//! column; a file or a folder of them) as a sequence of documents, one at a time, so memory does not
//! grow with the corpus.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::error::{DataError, Result};

/// How the documents of a corpus are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusFormat {
    /// One JSON object per line; the document is the string in `field`.
    Jsonl {
        /// The JSON key holding the text.
        field: String,
    },
    /// Each file is one document (UTF-8).
    Text,
    /// A Parquet table; each row's string in `column` is a document.
    Parquet {
        /// The string column holding the text.
        column: String,
    },
}

/// A corpus: a file, or a folder searched recursively (in sorted path order) for the format's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// A file or a folder of files.
    pub path: PathBuf,
    /// How to read it.
    pub format: CorpusFormat,
}

/// What to do with a record that cannot be read as a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMalformed {
    /// Stop with an error naming the file and line.
    #[default]
    Fail,
    /// Skip it, count it, and keep the first error's description.
    Skip,
}

/// What a read saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Documents read.
    pub documents: u64,
    /// Bytes of text read.
    pub bytes: u64,
    /// Records skipped as malformed.
    pub skipped: u64,
    /// The first skipped record's error, so a user can look at one example.
    pub first_skipped: Option<String>,
}

impl Corpus {
    /// JSONL files with the text in `field`.
    pub fn jsonl(path: impl Into<PathBuf>, field: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            format: CorpusFormat::Jsonl {
                field: field.into(),
            },
        }
    }

    /// Plain-text files, one document each.
    pub fn text(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            format: CorpusFormat::Text,
        }
    }

    /// Parquet files with the text in `column`.
    pub fn parquet(path: impl Into<PathBuf>, column: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            format: CorpusFormat::Parquet {
                column: column.into(),
            },
        }
    }

    /// A corpus whose format follows from the path: `.jsonl` (documents in `field`), `.parquet`
    /// (documents in column `field`), anything else plain text; a folder takes its format from
    /// the first file found in it.
    pub fn detect(path: impl Into<PathBuf>, field: &str) -> Result<Self> {
        let path = path.into();
        let probe = if path.is_dir() {
            let mut files = Vec::new();
            collect_files(&path, &|_| true, &mut files)?;
            files.sort();
            files
                .into_iter()
                .next()
                .ok_or_else(|| DataError::corpus(&path, "the folder holds no files"))?
        } else {
            path.clone()
        };
        Ok(match probe.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Self::jsonl(path, field),
            Some("parquet") => Self::parquet(path, field),
            _ => Self::text(path),
        })
    }

    /// The files this corpus reads, in the order it reads them.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let meta = std::fs::metadata(&self.path).map_err(|e| DataError::io(&self.path, e))?;
        if meta.is_file() {
            return Ok(vec![self.path.clone()]);
        }
        let wanted: &dyn Fn(&Path) -> bool = match &self.format {
            CorpusFormat::Jsonl { .. } => &|p| has_extension(p, "jsonl"),
            CorpusFormat::Parquet { .. } => &|p| has_extension(p, "parquet"),
            CorpusFormat::Text => &|_| true,
        };
        let mut files = Vec::new();
        collect_files(&self.path, wanted, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(DataError::corpus(
                &self.path,
                format!("no {} files in this folder", self.format.describe()),
            ));
        }
        Ok(files)
    }

    /// Calls `sink` with each document in order. Malformed records stop the read or are skipped and
    /// counted, as `on_malformed` says; either way `report` tells what was read.
    pub fn read(
        &self,
        on_malformed: OnMalformed,
        report: &mut ReadReport,
        sink: &mut dyn FnMut(String) -> Result<()>,
    ) -> Result<()> {
        for file in self.files()? {
            report.files.push(file.clone());
            let mut reader = DocumentSink {
                on_malformed,
                report,
                sink,
            };
            match &self.format {
                CorpusFormat::Jsonl { field } => read_jsonl(&file, field, &mut reader)?,
                CorpusFormat::Text => read_text(&file, &mut reader)?,
                CorpusFormat::Parquet { column } => read_parquet(&file, column, &mut reader)?,
            }
        }
        Ok(())
    }
}

impl CorpusFormat {
    fn describe(&self) -> &'static str {
        match self {
            Self::Jsonl { .. } => ".jsonl",
            Self::Text => "text",
            Self::Parquet { .. } => ".parquet",
        }
    }
}

/// Applies the malformed-record policy between a reader and the caller's sink.
struct DocumentSink<'a> {
    on_malformed: OnMalformed,
    report: &'a mut ReadReport,
    sink: &'a mut dyn FnMut(String) -> Result<()>,
}

impl DocumentSink<'_> {
    fn document(&mut self, text: String) -> Result<()> {
        self.report.documents += 1;
        self.report.bytes += text.len() as u64;
        (self.sink)(text)
    }

    fn malformed(&mut self, error: DataError) -> Result<()> {
        match self.on_malformed {
            OnMalformed::Fail => Err(error),
            OnMalformed::Skip => {
                self.report.skipped += 1;
                if self.report.first_skipped.is_none() {
                    self.report.first_skipped = Some(error.to_string());
                }
                Ok(())
            }
        }
    }
}

fn read_jsonl(file: &Path, field: &str, out: &mut DocumentSink) -> Result<()> {
    let handle = File::open(file).map_err(|e| DataError::io(file, e))?;
    let mut lines = BufReader::with_capacity(1 << 20, handle);
    let mut raw = Vec::new();
    let mut number = 0;
    loop {
        raw.clear();
        let read = lines
            .read_until(b'\n', &mut raw)
            .map_err(|e| DataError::io(file, e))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match jsonl_document(line, field) {
            Ok(text) => out.document(text)?,
            Err(message) => out.malformed(DataError::malformed(file, number, message))?,
        }
    }
}

fn jsonl_document(line: &[u8], field: &str) -> std::result::Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_string())?;
    match object.get(field) {
        Some(serde_json::Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(format!(
            "field `{field}` is not a string (found {})",
            json_kind(other)
        )),
        None => Err(format!("no field `{field}`")),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_text(file: &Path, out: &mut DocumentSink) -> Result<()> {
    let mut bytes = Vec::new();
    File::open(file)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| DataError::io(file, e))?;
    match String::from_utf8(bytes) {
        Ok(text) => out.document(text),
        Err(e) => out.malformed(DataError::malformed(
            file,
            0,
            format!("not UTF-8 text ({})", e.utf8_error()),
        )),
    }
}

/// Rows read from Parquet per call, bounding memory whatever the row-group size.
const PARQUET_BATCH_ROWS: usize = 1024;

fn read_parquet(file: &Path, column: &str, out: &mut DocumentSink) -> Result<()> {
    let parquet_error = |e: parquet::errors::ParquetError| DataError::corpus(file, e.to_string());
    let handle = File::open(file).map_err(|e| DataError::io(file, e))?;
    let reader = SerializedFileReader::new(handle).map_err(parquet_error)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let index = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().string() == column)
        .ok_or_else(|| {
            let names: Vec<String> = (0..schema.num_columns())
                .map(|i| schema.column(i).path().string())
                .collect();
            DataError::corpus(
                file,
                format!("no column `{column}` (columns: {})", names.join(", ")),
            )
        })?;
    let descriptor = schema.column(index);
    if descriptor.max_rep_level() > 0 {
        return Err(DataError::corpus(
            file,
            format!("column `{column}` is a list, not one string per row"),
        ));
    }
    let max_def_level = descriptor.max_def_level();
    let nullable = max_def_level > 0;
    let mut row = 0;
    for group in 0..reader.num_row_groups() {
        let group_reader = reader.get_row_group(group).map_err(parquet_error)?;
        let ColumnReader::ByteArrayColumnReader(mut values_reader) = group_reader
            .get_column_reader(index)
            .map_err(parquet_error)?
        else {
            return Err(DataError::corpus(
                file,
                format!("column `{column}` does not hold strings"),
            ));
        };
        let mut levels: Vec<i16> = Vec::new();
        let mut values: Vec<ByteArray> = Vec::new();
        loop {
            levels.clear();
            values.clear();
            let (records, _, _) = values_reader
                .read_records(PARQUET_BATCH_ROWS, Some(&mut levels), None, &mut values)
                .map_err(parquet_error)?;
            if records == 0 {
                break;
            }
            let mut next_value = values.drain(..);
            // With no definition levels (a required column) no row is null.
            let nulls = (0..records).map(|r| nullable && levels[r] < max_def_level);
            for is_null in nulls {
                row += 1;
                if is_null {
                    out.malformed(DataError::malformed(
                        file,
                        row,
                        format!("`{column}` is null"),
                    ))?;
                    continue;
                }
                let value = next_value.next().expect("one value per non-null row");
                match String::from_utf8(value.data().to_vec()) {
                    Ok(text) => out.document(text)?,
                    Err(_) => out.malformed(DataError::malformed(
                        file,
                        row,
                        format!("`{column}` is not UTF-8"),
                    ))?,
                }
            }
        }
    }
    Ok(())
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(extension)
}

/// Regular files under `dir` (hidden ones left out) that `wanted` accepts.
fn collect_files(dir: &Path, wanted: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if kind.is_dir() {
            collect_files(&path, wanted, out)?;
        } else if kind.is_file() && wanted(&path) {
            out.push(path);
        }
    }
    Ok(())
}
