//! Template files (annotation prompts, synthesis prompts): JSON read from a file or from the text
//! shipped in the crate, then checked; every error names the file.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{DataError, Result};

/// A JSON template with checks of its own.
pub(crate) trait TemplateFile: DeserializeOwned {
    /// The template if it makes sense, else an error naming `origin` and the fault.
    fn checked(self, origin: &str) -> Result<Self>;

    /// Parses and checks `text`, which came from `origin`.
    fn parse_json(text: &str, origin: &str) -> Result<Self> {
        let template: Self =
            serde_json::from_str(text).map_err(|e| DataError::Invalid(format!("{origin}: {e}")))?;
        template.checked(origin)
    }

    /// Reads, parses and checks the file at `path`.
    fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse_json(&text, &path.display().to_string())
    }
}
