//! How a chat conversation becomes a prompt. The Phi base models have no chat template; phi-2's
//! model card documents a QA format, `Instruct: <question>\nOutput:`, which is the default here.
//! Another format comes from a JSON file: a pattern per role with `{content}` where the message
//! goes, and the stop strings that end an answer.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::request::{ChatContent, ChatMessage};
use crate::{PhiError, Result};

/// A chat format: one pattern per role, each with a `{content}` placeholder.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatTemplate {
    /// A system message.
    pub system: String,
    /// A user message; the prompt ends with the last one.
    pub user: String,
    /// An earlier answer.
    pub assistant: String,
    /// Strings that end an answer (added to the request's own).
    #[serde(default)]
    pub stop: Vec<String>,
}

const PLACEHOLDER: &str = "{content}";

impl Default for ChatTemplate {
    /// phi-2's QA format.
    fn default() -> Self {
        Self {
            system: "{content}\n".into(),
            user: "Instruct: {content}\nOutput:".into(),
            assistant: " {content}\n".into(),
            stop: vec!["\nInstruct:".into()],
        }
    }
}

impl ChatTemplate {
    /// Reads a template file (JSON with `system`, `user`, `assistant`, optional `stop`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PhiError::Input(format!("chat template {}: {e}", path.display())))?;
        let template: Self = serde_json::from_str(&text)
            .map_err(|e| PhiError::Input(format!("chat template {}: {e}", path.display())))?;
        for (role, pattern) in [
            ("system", &template.system),
            ("user", &template.user),
            ("assistant", &template.assistant),
        ] {
            if !pattern.contains(PLACEHOLDER) {
                return Err(PhiError::Input(format!(
                    "chat template {}: `{role}` has no {PLACEHOLDER} placeholder",
                    path.display()
                )));
            }
        }
        Ok(template)
    }

    /// The prompt for `messages`.
    pub fn render(&self, messages: &[ChatMessage]) -> std::result::Result<String, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        let mut prompt = String::new();
        for (i, message) in messages.iter().enumerate() {
            let pattern = match message.role.as_str() {
                "system" | "developer" => &self.system,
                "user" => &self.user,
                "assistant" => &self.assistant,
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!("unknown role {other:?}: system, user or assistant"),
                    ));
                }
            };
            let content = match &message.content {
                ChatContent::Text(text) => text.clone(),
                ChatContent::Parts(parts) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content"),
                                    "only text content parts are supported",
                                ));
                            }
                        }
                    }
                    text
                }
            };
            prompt.push_str(&pattern.replace(PLACEHOLDER, &content));
        }
        Ok(prompt)
    }
}
