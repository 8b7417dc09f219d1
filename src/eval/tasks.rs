//! Readers for the published raw formats of the phi-1.5 report's multiple-choice benchmarks, each
//! turned into questions formatted as lm-evaluation-harness' task of that name formats them. The
//! data is the user's download; the template of each task is given at its reader.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use super::choice::{ChoiceItem, Request};

/// A multiple-choice benchmark format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceTask {
    /// phi-zoo's plain JSONL: `{"context", "choices", "gold", "id"?}`, choices after one space.
    Jsonl,
    /// HellaSwag (`ctx_a`, `ctx_b`, `activity_label`, `endings`, `label`).
    Hellaswag,
    /// PIQA (`goal`, `sol1`, `sol2`; `label`, or a sibling `<name>-labels.lst`).
    Piqa,
    /// ARC Easy or Challenge (AI2's or the hub's JSONL).
    Arc,
    /// WinoGrande (`sentence` with `_`, `option1`, `option2`, `answer`), partial scoring.
    Winogrande,
    /// BoolQ (`passage`, `question`, `answer` or `label`).
    Boolq,
    /// OpenBookQA (AI2's or the hub's JSONL).
    Openbookqa,
    /// Social IQa (`context`, `question`, `answerA..C`; `label`, or a sibling labels file).
    Siqa,
    /// MMLU: Hendrycks' CSV files (`<subject>_test.csv`), k-shot from the subject's dev file.
    Mmlu,
}

impl ChoiceTask {
    /// Every format, by its name.
    pub const ALL: [ChoiceTask; 9] = [
        ChoiceTask::Jsonl,
        ChoiceTask::Hellaswag,
        ChoiceTask::Piqa,
        ChoiceTask::Arc,
        ChoiceTask::Winogrande,
        ChoiceTask::Boolq,
        ChoiceTask::Openbookqa,
        ChoiceTask::Siqa,
        ChoiceTask::Mmlu,
    ];

    /// The name it is selected by (lm-eval's task name where there is one).
    pub fn name(self) -> &'static str {
        match self {
            ChoiceTask::Jsonl => "jsonl",
            ChoiceTask::Hellaswag => "hellaswag",
            ChoiceTask::Piqa => "piqa",
            ChoiceTask::Arc => "arc",
            ChoiceTask::Winogrande => "winogrande",
            ChoiceTask::Boolq => "boolq",
            ChoiceTask::Openbookqa => "openbookqa",
            ChoiceTask::Siqa => "siqa",
            ChoiceTask::Mmlu => "mmlu",
        }
    }

    /// Reads `path` into questions; `shots` examples precede each MMLU question.
    pub fn read(self, path: &Path, shots: usize) -> Result<Vec<ChoiceItem>, String> {
        if self == ChoiceTask::Mmlu {
            return read_mmlu(path, shots);
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.questions(&text, &path.display().to_string(), sibling_labels(path)?)
    }

    /// Questions in phi-zoo's plain JSONL format from text; `origin` names it in errors.
    pub fn parse_jsonl(text: &str, origin: &str) -> Result<Vec<ChoiceItem>, String> {
        ChoiceTask::Jsonl.questions(text, origin, None)
    }

    /// The questions of JSONL `text` in this format; `labels` (a labels file's lines) give the
    /// answers of formats that keep them apart. Errors name `origin` and the line.
    fn questions(
        self,
        text: &str,
        origin: &str,
        labels: Option<Vec<String>>,
    ) -> Result<Vec<ChoiceItem>, String> {
        parse_lines(text, origin)?
            .iter()
            .enumerate()
            .map(|(i, (line, row))| {
                let label = labels.as_ref().and_then(|l| l.get(i).cloned());
                self.question(row, i, label)
                    .map_err(|e| format!("{origin}:{line}: {e}"))
            })
            .collect()
    }

    fn question(
        self,
        row: &Value,
        index: usize,
        label: Option<String>,
    ) -> Result<ChoiceItem, String> {
        let id = row
            .get("id")
            .or_else(|| row.get("ind"))
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_else(|| index.to_string());
        let shared = |context: String, choices: Vec<String>, gold: usize| {
            if gold >= choices.len() {
                return Err(format!("gold {gold} but {} choices", choices.len()));
            }
            Ok(ChoiceItem::shared(id.clone(), context, &choices, gold, " "))
        };
        match self {
            ChoiceTask::Jsonl => {
                let choices = strings(field(row, "choices")?, "choices")?;
                shared(text(row, "context")?, choices, index_field(row, "gold")?)
            }
            // lm-eval `hellaswag`: query = preprocess(activity_label + ": " + ctx_a + " " +
            // capitalize(ctx_b)); choices = preprocess(each ending); gold = label.
            ChoiceTask::Hellaswag => {
                let context = format!(
                    "{}: {} {}",
                    text(row, "activity_label")?,
                    text(row, "ctx_a")?,
                    capitalize(&text(row, "ctx_b")?)
                );
                let endings = strings(field(row, "endings")?, "endings")?;
                shared(
                    hellaswag_clean(&context),
                    endings.iter().map(|e| hellaswag_clean(e)).collect(),
                    index_field(row, "label")?,
                )
            }
            // lm-eval `piqa`: "Question: {goal}\nAnswer:", choices sol1, sol2.
            ChoiceTask::Piqa => shared(
                format!("Question: {}\nAnswer:", text(row, "goal")?),
                vec![text(row, "sol1")?, text(row, "sol2")?],
                label_or(row, "label", label)?,
            ),
            // lm-eval `arc_easy` / `arc_challenge`: "Question: {question}\nAnswer:", choices
            // the texts, gold the position of answerKey among the labels.
            ChoiceTask::Arc => {
                let (stem, texts, labels) = ai2_question(row)?;
                let gold = key_index(&labels, row)?;
                shared(format!("Question: {stem}\nAnswer:"), texts, gold)
            }
            // lm-eval `openbookqa`: the question stem alone, choices the texts.
            ChoiceTask::Openbookqa => {
                let (stem, texts, labels) = ai2_question(row)?;
                let gold = key_index(&labels, row)?;
                shared(stem, texts, gold)
            }
            // lm-eval `boolq`: "{passage}\nQuestion: {question}?\nAnswer:", choices no, yes.
            ChoiceTask::Boolq => {
                let answer = row
                    .get("answer")
                    .or_else(|| row.get("label"))
                    .ok_or("no `answer` or `label`")?;
                let yes = match answer {
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_u64() == Some(1),
                    Value::String(s) => matches!(s.as_str(), "true" | "True" | "1"),
                    _ => return Err("`answer` is not a boolean".into()),
                };
                shared(
                    format!(
                        "{}\nQuestion: {}?\nAnswer:",
                        text(row, "passage")?,
                        text(row, "question")?
                    ),
                    vec!["no".into(), "yes".into()],
                    usize::from(yes),
                )
            }
            // lm-eval `siqa`: "Q: {context} {question}\nA:", choices answerA..C, label 1-based.
            ChoiceTask::Siqa => {
                let gold = label_or(row, "label", label)?;
                if gold == 0 {
                    return Err("labels are 1-based".into());
                }
                shared(
                    format!(
                        "Q: {} {}\nA:",
                        text(row, "context")?,
                        text(row, "question")?
                    ),
                    vec![
                        text(row, "answerA")?,
                        text(row, "answerB")?,
                        text(row, "answerC")?,
                    ],
                    gold - 1,
                )
            }
            // lm-eval `winogrande` (partial scoring): each option replaces `_` and what precedes
            // it is the context; the shared rest of the sentence is the scored continuation.
            ChoiceTask::Winogrande => {
                let sentence = text(row, "sentence")?;
                let blank = sentence.find('_').ok_or("the sentence has no `_`")?;
                let suffix = sentence[blank + 1..].trim().to_string();
                let options = [text(row, "option1")?, text(row, "option2")?];
                let gold = match text(row, "answer")?.as_str() {
                    "1" => 0,
                    "2" => 1,
                    other => return Err(format!("answer {other:?}: 1 or 2")),
                };
                Ok(ChoiceItem {
                    id,
                    requests: options
                        .iter()
                        .map(|option| Request {
                            context: format!("{}{option}", &sentence[..blank]),
                            continuation: format!(" {suffix}"),
                            norm_chars: suffix.chars().count(),
                        })
                        .collect(),
                    gold,
                })
            }
            ChoiceTask::Mmlu => unreachable!("MMLU is read from CSV"),
        }
    }
}

impl FromStr for ChoiceTask {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let name = match name {
            "arc_easy" | "arc_challenge" | "arc-easy" | "arc-challenge" => "arc",
            "mc" => "jsonl",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown multiple-choice format {name:?}: {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for ChoiceTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// lm-eval's HellaSwag `preprocess`: strip, " [title]" → ". ", drop `[...]`, collapse double spaces.
fn hellaswag_clean(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        match rest[open..].find(']') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper-case, the rest lower-case.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// MMLU (lm-eval `mmlu_<subject>`): "The following are multiple choice questions (with answers)
/// about {subject}.\n\n", then `shots` solved examples from the subject's dev file, each
/// "{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {letter}", joined by blank lines, then
/// the question the same way up to "Answer:"; choices " A" .. " D".
fn read_mmlu(path: &Path, shots: usize) -> Result<Vec<ChoiceItem>, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let subject = name
        .strip_suffix("_test.csv")
        .or_else(|| name.strip_suffix("_val.csv"))
        .or_else(|| name.strip_suffix("_dev.csv"))
        .ok_or_else(|| {
            format!(
                "{}: MMLU files are named <subject>_test.csv",
                path.display()
            )
        })?;
    let letters = ["A", "B", "C", "D"];
    let format = |row: &[String]| {
        format!(
            "{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
            row[0].trim(),
            row[1],
            row[2],
            row[3],
            row[4]
        )
    };
    let mut prompt = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    );
    if shots > 0 {
        let dev = mmlu_dev_file(path, subject)?;
        let examples = read_csv(&dev)?;
        if examples.len() < shots {
            return Err(format!(
                "{}: {shots} shots asked, {} examples",
                dev.display(),
                examples.len()
            ));
        }
        for example in &examples[..shots] {
            check_mmlu_row(example, &dev)?;
            prompt += &format!("{} {}\n\n", format(example), example[5].trim());
        }
    }
    read_csv(path)?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            check_mmlu_row(row, path)?;
            let gold = letters
                .iter()
                .position(|l| *l == row[5].trim())
                .ok_or_else(|| format!("{}:{}: answer {:?}", path.display(), i + 1, row[5]))?;
            let letters: Vec<String> = letters.iter().map(|l| l.to_string()).collect();
            Ok(ChoiceItem::shared(
                format!("{subject}/{i}"),
                format!("{prompt}{}", format(row)),
                &letters,
                gold,
                " ",
            ))
        })
        .collect()
}

fn check_mmlu_row(row: &[String], path: &Path) -> Result<(), String> {
    if row.len() != 6 {
        return Err(format!(
            "{}: a row of {} fields (question, A, B, C, D, answer)",
            path.display(),
            row.len()
        ));
    }
    Ok(())
}

/// The subject's dev file: beside the test file, or in `../dev/` as the published archive lays it.
fn mmlu_dev_file(test: &Path, subject: &str) -> Result<PathBuf, String> {
    let dir = test.parent().unwrap_or(Path::new("."));
    let name = format!("{subject}_dev.csv");
    [dir.join(&name), dir.join("../dev").join(&name)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no {name} beside {} or in ../dev for the shots",
                test.display()
            )
        })
}

/// A CSV file as rows of fields (RFC 4180: quoted fields, doubled quotes, newlines in quotes).
fn read_csv(path: &Path) -> Result<Vec<Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut rows, mut row, mut field) = (vec![], vec![], String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "{}: a quoted field is never closed",
            path.display()
        ));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// The labels of `data.jsonl` in `data-labels.lst`, one per line, where that file exists.
fn sibling_labels(path: &Path) -> Result<Option<Vec<String>>, String> {
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
        return Ok(None);
    };
    let labels = path.with_file_name(format!("{stem}-labels.lst"));
    if !labels.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&labels).map_err(|e| format!("{}: {e}", labels.display()))?;
    Ok(Some(text.lines().map(|l| l.trim().to_string()).collect()))
}

/// Every non-empty line of JSONL text, parsed, with its 1-based line number; `origin` names the
/// text in errors.
fn parse_lines(text: &str, origin: &str) -> Result<Vec<(usize, Value)>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let row = serde_json::from_str(l).map_err(|e| format!("{origin}:{}: {e}", i + 1))?;
            Ok((i + 1, row))
        })
        .collect()
}

fn field<'a>(row: &'a Value, name: &str) -> Result<&'a Value, String> {
    row.get(name).ok_or_else(|| format!("no `{name}` field"))
}

fn text(row: &Value, name: &str) -> Result<String, String> {
    field(row, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`{name}` is not a string"))
}

fn strings(value: &Value, name: &str) -> Result<Vec<String>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("`{name}` is not a list"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{name}` holds a non-string"))
        })
        .collect()
}

/// A numeric index, given as a number or a string of digits.
fn index_field(row: &Value, name: &str) -> Result<usize, String> {
    parse_index(field(row, name)?).ok_or_else(|| format!("`{name}` is not an index"))
}

fn parse_index(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The row's `name` field, else the label from a labels file.
fn label_or(row: &Value, name: &str, label: Option<String>) -> Result<usize, String> {
    match (row.get(name), label) {
        (Some(value), _) => parse_index(value).ok_or_else(|| format!("`{name}` is not an index")),
        (None, Some(label)) => label
            .parse()
            .map_err(|_| format!("label {label:?} is not an index")),
        (None, None) => Err(format!("no `{name}` and no labels file")),
    }
}

/// (stem, choice texts, choice labels) of an AI2 question, in AI2's own layout
/// (`question: {stem, choices: [{text, label}]}`) or the hub's (`question` or `question_stem`,
/// `choices: {text: [], label: []}`).
fn ai2_question(row: &Value) -> Result<(String, Vec<String>, Vec<String>), String> {
    let question = field(row, "question").or_else(|_| field(row, "question_stem"))?;
    if let Some(stem) = question.get("stem") {
        let stem = stem
            .as_str()
            .ok_or("`question.stem` is not a string")?
            .to_string();
        let choices = question
            .get("choices")
            .and_then(Value::as_array)
            .ok_or("no `question.choices` list")?;
        let mut texts = vec![];
        let mut labels = vec![];
        for choice in choices {
            texts.push(text(choice, "text")?);
            labels.push(text(choice, "label")?);
        }
        return Ok((stem, texts, labels));
    }
    let stem = question
        .as_str()
        .ok_or("`question` is not a string")?
        .to_string();
    let choices = field(row, "choices")?;
    Ok((
        stem,
        strings(field(choices, "text")?, "choices.text")?,
        strings(field(choices, "label")?, "choices.label")?,
    ))
}

/// The position of `answerKey` among the choice labels.
fn key_index(labels: &[String], row: &Value) -> Result<usize, String> {
    let key = text(row, "answerKey")?;
    labels
        .iter()
        .position(|l| *l == key.trim())
        .ok_or_else(|| format!("answerKey {key:?} is not among the labels {labels:?}"))
}
